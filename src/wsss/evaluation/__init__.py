"""Evaluation: confusion matrix and mIoU (official-compatible), pseudo-label scores under both
conventions, co-occurrence diagnostics, and the evaluator behind ``wsss eval``.
"""

from .cooccurrence import CooccurrenceMeter
from .evaluator import EvalResult, SegDataset, coverage_note, evaluate, evaluate_arrays
from .metrics import ConfusionMeter, confusion_matrix, pseudo_label_scores, scores_from_hist

__all__ = [
    "CooccurrenceMeter",
    "ConfusionMeter",
    "EvalResult",
    "SegDataset",
    "confusion_matrix",
    "coverage_note",
    "evaluate",
    "evaluate_arrays",
    "pseudo_label_scores",
    "scores_from_hist",
]
