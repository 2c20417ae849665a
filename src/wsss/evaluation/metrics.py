"""Confusion matrix, mIoU and pseudo-label scores.

One scoring function for every stage (docs/datasets.md#evaluation): a ``C x C`` confusion matrix ``hist``
(row = ground truth, column = prediction) summed over all images, from which every number is
derived. Pixels whose ground truth is outside ``[0, C)`` (the 255 boundary / ignore label) are not
counted. The formulas reproduce the official SeCo/ToCo ``utils/evaluate.py`` (``scores`` and
``pseudo_scores``) bit for bit, including where they give nan or inf:

- ``iou[c] = hist[c, c] / (row_sum[c] + col_sum[c] - hist[c, c])``
- ``miou`` = nanmean of ``iou`` over the classes present in the ground truth (``row_sum > 0``)
- ``miou_all`` = plain mean of all per-class IoUs: what the official printed tables show. It equals
  ``miou`` when every class occurs in the ground truth, and is nan when some class has no pixel in
  either the ground truth or the prediction.
- ``pAcc`` = trace / total, ``mAcc`` = nanmean of the per-class recall
- ``miou_background_only``: the ``miou`` that masks of background alone (class 0 everywhere) would score on the
  same ground truth, ``(row_sum[0] / total) / (classes present)``: the floor a model's masks must clear to say
  anything at all (ours, not the official code's)
- ``precision = TP / col_sum`` (nan for a class never predicted), ``recall = TP / row_sum`` (nan for
  a class absent from the ground truth), ``confusion = FP / TP`` (inf when TP = 0 < FP).

Confusion matrices of disjoint image sets simply add, so distributed evaluation sums the ``hist``
of every rank (``ConfusionMeter.merge`` or ``+``, or an all-reduce of ``meter.hist``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "ConfusionMeter",
    "confusion_matrix",
    "pseudo_label_scores",
    "scores_from_hist",
]


def _as_numpy(x: Any) -> np.ndarray:
    """An array from numpy input or a (possibly CUDA) torch tensor, without importing torch."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _as_index_array(x: Any, what: str) -> np.ndarray:
    arr = _as_numpy(x)
    if arr.dtype.kind in "iub":
        return arr
    if arr.dtype.kind == "f":
        if arr.size and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
            raise ValueError(f"{what} must hold integer class indices, got non-integral floats")
        return arr.astype(np.int64)
    raise ValueError(f"{what} must hold integer class indices, got dtype {arr.dtype}")


def _describe_values(values: np.ndarray, limit: int = 10) -> str:
    uniq = np.unique(values)
    shown = ", ".join(str(int(v)) for v in uniq[:limit])
    more = f", ... ({len(uniq)} distinct)" if len(uniq) > limit else ""
    return f"[{shown}{more}]"


def _hist(
    gt: Any,
    pred: Any,
    num_classes: int,
    ignore_index: int | None,
    pred_ignore_column: bool,
) -> np.ndarray:
    """The core histogram. With ``pred_ignore_column`` the result is ``(C, C+1)``: column C counts
    the counted pixels whose prediction equals ``ignore_index`` (a pseudo label's "undecided")."""
    C = int(num_classes)
    if C < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    gt = _as_index_array(gt, "ground truth")
    pred = _as_index_array(pred, "prediction")
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth shape {gt.shape} differs from prediction shape {pred.shape}")
    gt = gt.reshape(-1)
    pred = pred.reshape(-1)

    counted = (gt >= 0) & (gt < C)
    if ignore_index is not None and 0 <= ignore_index < C:
        counted &= gt != ignore_index
    if not counted.all():
        gt = gt[counted]
        pred = pred[counted]
    gt = gt.astype(np.intp, copy=False)
    pred = pred.astype(np.intp, copy=False)

    ncols = C + 1 if pred_ignore_column else C
    if pred.size:
        bad = (pred < 0) | (pred >= C)
        is_ignore = None
        if pred_ignore_column and ignore_index is not None:
            is_ignore = pred == ignore_index
            bad &= ~is_ignore
        if bad.any():
            raise ValueError(
                f"prediction values {_describe_values(pred[bad])} are outside the class range "
                f"0..{C - 1} ({int(bad.sum())} pixels)"
            )
        if is_ignore is not None and is_ignore.any():
            pred = np.where(is_ignore, C, pred)
    flat = np.bincount(ncols * gt + pred, minlength=C * ncols)
    return flat.reshape(C, ncols).astype(np.int64, copy=False)


def confusion_matrix(gt: Any, pred: Any, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """The ``(C, C)`` int64 confusion matrix of one label map or a batch (row = gt, col = pred).

    Pixels whose ground truth lies outside ``[0, C)`` or equals ``ignore_index`` are not counted.
    A counted pixel whose prediction lies outside ``[0, C)`` is an error (ValueError naming the
    values): it is never dropped silently. Score pseudo labels holding 255 with
    :func:`pseudo_label_scores`.
    """
    return _hist(gt, pred, num_classes, ignore_index, pred_ignore_column=False)


class ConfusionMeter:
    """Accumulates a confusion matrix over images; meters of disjoint image sets merge by summing."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self._hist = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    @classmethod
    def from_hist(cls, hist: Any, ignore_index: int = 255) -> ConfusionMeter:
        """A meter holding ``hist`` (e.g. after an all-reduce across ranks)."""
        hist = np.asarray(_as_numpy(hist))
        if hist.ndim != 2 or hist.shape[0] != hist.shape[1]:
            raise ValueError(f"hist must be a square matrix, got shape {hist.shape}")
        meter = cls(hist.shape[0], ignore_index)
        meter._hist += hist.astype(np.int64)
        return meter

    @property
    def hist(self) -> np.ndarray:
        """The accumulated ``(C, C)`` int64 matrix (row = gt, col = pred)."""
        return self._hist

    def update(self, gt: Any, pred: Any) -> ConfusionMeter:
        self._hist += confusion_matrix(gt, pred, self.num_classes, self.ignore_index)
        return self

    def reset(self) -> None:
        self._hist[...] = 0

    def _check_compatible(self, other: ConfusionMeter) -> None:
        if not isinstance(other, ConfusionMeter):
            raise TypeError(f"cannot merge ConfusionMeter with {type(other).__name__}")
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge meters of {self.num_classes} and {other.num_classes} classes")

    def merge(self, other: ConfusionMeter) -> ConfusionMeter:
        """Add ``other``'s counts into this meter (in place) and return it."""
        self._check_compatible(other)
        self._hist += other._hist
        return self

    def __add__(self, other: ConfusionMeter) -> ConfusionMeter:
        self._check_compatible(other)
        out = ConfusionMeter(self.num_classes, self.ignore_index)
        out._hist = self._hist + other._hist
        return out

    def __iadd__(self, other: ConfusionMeter) -> ConfusionMeter:
        return self.merge(other)

    def scores(self) -> dict[str, Any]:
        return scores_from_hist(self._hist)

    def __repr__(self) -> str:
        return f"ConfusionMeter(num_classes={self.num_classes}, pixels={int(self._hist.sum())})"


def _nanmean(x: np.ndarray) -> float:
    """np.nanmean without the empty-slice warning (nan when nothing is finite... or present)."""
    if x.size == 0 or np.isnan(x).all():
        return float("nan")
    return float(np.nanmean(x))


def scores_from_hist(hist: Any) -> dict[str, Any]:
    """Every score of a ``(C, C)`` confusion matrix, with the official key names.

    Keys: ``pAcc``, ``mAcc``, ``miou`` (nanmean over classes present in the GT), ``miou_all``
    (plain mean of all per-class IoUs), ``miou_background_only`` (the module docstring's floor), ``iou``,
    ``precision``, ``recall``, ``confusion`` (FP/TP),
    each (C,) float64; ``mprecision`` / ``mrecall`` (nanmean over the classes present in the GT);
    ``valid`` (C,) bool (class present in the GT); ``hist`` (C, C) int64.
    """
    hist_i = np.asarray(_as_numpy(hist))
    if hist_i.ndim != 2 or hist_i.shape[0] != hist_i.shape[1]:
        raise ValueError(f"hist must be a square matrix, got shape {hist_i.shape}")
    h = hist_i.astype(np.float64)
    tp = np.diag(h)
    gt_sum = h.sum(axis=1)
    pred_sum = h.sum(axis=0)
    valid = gt_sum > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        pacc = tp.sum() / h.sum()
        recall = tp / gt_sum
        iou = tp / (gt_sum + pred_sum - tp)
        precision = tp / pred_sum
        confusion = (pred_sum - tp) / tp
    return {
        "pAcc": float(pacc),
        "mAcc": _nanmean(recall),
        "miou": _nanmean(iou[valid]),
        "miou_all": float(np.mean(iou)) if iou.size else float("nan"),
        # background everywhere: the background's IoU is its share of the pixels, every other class present 0
        "miou_background_only": float(gt_sum[0] / gt_sum.sum() / valid.sum()) if valid.any() else float("nan"),
        "iou": iou,
        "precision": precision,
        "recall": recall,
        "confusion": confusion,
        "mprecision": _nanmean(precision[valid]),
        "mrecall": _nanmean(recall[valid]),
        "valid": valid,
        "hist": hist_i.astype(np.int64),
    }


HEADLINE_CONVENTION = "strict (pixels at 255 scored as background)"


def _pseudo_scores_from_ext_hist(ext: np.ndarray) -> dict[str, Any]:
    """Both pseudo-label conventions from a ``(C, C+1)`` histogram whose last column counts the
    pixels the pseudo label leaves undecided (255)."""
    C = ext.shape[0]
    covered = ext[:, :C].copy()
    strict = covered.copy()
    strict[:, 0] += ext[:, C]
    out = scores_from_hist(strict)
    cov = scores_from_hist(covered)
    total = ext.sum()
    ignored = ext[:, C]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["ignored_share"] = float(ignored.sum() / total) if total else float("nan")
        out["ignored_share_per_class"] = ignored / ext.sum(axis=1)
    out["convention"] = HEADLINE_CONVENTION
    for key in ("pAcc", "mAcc", "miou", "miou_all", "iou", "precision", "recall", "confusion"):
        out[f"pseudo_{key}"] = cov[key]
    out["pseudo_mprecision"] = cov["mprecision"]
    out["pseudo_mrecall"] = cov["mrecall"]
    out["pseudo_hist"] = cov["hist"]
    return out


def pseudo_label_scores(
    gts: Iterable[Any], preds: Iterable[Any], num_classes: int, ignore_index: int = 255
) -> dict[str, Any]:
    """Score pseudo labels that may hold ``ignore_index`` (undecided pixels), both conventions of
    docs/datasets.md#evaluation.

    - Headline keys (``pAcc``, ``miou``, ``iou``, ... exactly as :func:`scores_from_hist`), the
      **strict** convention: an undecided pixel is scored as a background prediction, so leaving a
      foreground pixel undecided costs as much as calling it background.
    - ``pseudo_*`` keys, the **covered** convention of the official ``pseudo_scores`` (EPS style):
      pixels the pseudo label leaves undecided are excluded, so the scores describe only the pixels
      it covers. ``pseudo_pAcc``, ``pseudo_mAcc``, ``pseudo_miou``, ``pseudo_iou`` match the
      official function; ``pseudo_precision`` / ``pseudo_recall`` (per class) and
      ``pseudo_mprecision`` / ``pseudo_mrecall`` are added, with ``pseudo_hist``.
    - ``ignored_share``: the share of counted (valid-GT) pixels left undecided, and
      ``ignored_share_per_class`` (C,) the same per GT class. ``convention`` names the headline.
    """
    C = int(num_classes)
    ext = np.zeros((C, C + 1), dtype=np.int64)
    for gt, pred in zip(gts, preds, strict=True):
        ext += _hist(gt, pred, C, ignore_index, pred_ignore_column=True)
    return _pseudo_scores_from_ext_hist(ext)
