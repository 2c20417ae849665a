"""What to do when the masks are bad, read from a run's own figures: the advice under a report's scores
(docs/own-photos.md#when-masks-are-bad says the same in words).

From the last output's confusion matrix: the pairs of classes where most of one class's pixels are taken for the
other (in the photos labelled with both), and the classes the masks show but the output never finds (0 IoU), each
with what it is taken for; from the route's fold figures (both DeepLab stages scored on held-out masked photos),
whether more masks would help.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from wsss.evaluation import EvalResult
from wsss.utils.io import plural

__all__ = ["ROUTE_SUMMARY", "advice", "route_folds"]

CONFUSED = 0.5  # a pair is named when most of a class's pixels, in the photos of both, are taken for the other
MAX_PAIRS = 3  # the pairs named (the most confused first)
ROUTE_SUMMARY = "summary.json"  # `wsss route`'s summary, beside the runs it made (OUT/cls, OUT/seg)


def route_folds(run: Path) -> dict[str, Any] | None:
    """The fold figures of the route that made ``run`` (``OUT/summary.json``'s ``scores.folds``: per stage its
    ``mean`` and ``folds``), or None where there are none (no route, ``--folds 0``, a summary not yet written)."""
    path = Path(run).parent / ROUTE_SUMMARY
    try:
        folds = json.loads(path.read_text())["scores"]["folds"]
        return {
            k: {"mean": float(folds[k]["mean"]), "folds": [float(v) for v in folds[k]["folds"]]}
            for k in ("mixed", "masks")
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None


def advice(result: EvalResult, folds: Mapping[str, Any] | None = None) -> list[str]:
    """Short sentences, each a finding of ``result`` (and ``folds``: :func:`route_folds`) with what to do."""
    lines = _confused_pairs(result) + _classes_at_zero(result)
    if not lines:
        lines.append(
            "No class is at 0 IoU and no two classes are confused on most of their pixels: the worst "
            "photos below show what the masks miss."
        )
    if folds:
        lines.append(_more_masks(folds))
    return lines


def _confused_pairs(result: EvalResult) -> list[str]:
    pairs = [p for p in result.cooccurrence["pairs"] if np.isfinite(p["share"]) and p["share"] >= CONFUSED]
    lines = []
    for p in pairs[:MAX_PAIRS]:
        lines.append(
            f"{p['gt']} is taken for {p['pred']}: {100 * p['share']:.2f} % of its pixels in the "
            f"{plural(p['images'], 'photo')} labelled with both. Draw masks for more photos that show both, or, if "
            f"telling them apart does not matter to you, merge them into one class (one name in the class list and "
            f"the labels)."
        )
    return lines


def _classes_at_zero(result: EvalResult) -> list[str]:
    hist = np.asarray(result.scores["hist"])
    named = []
    for row in result.per_class[1:]:
        c = row["id"]
        if row["gt_pixels"] > 0 and row["iou"] == 0:
            others = hist[c].copy()
            others[c] = 0
            taken = result.class_names[int(np.argmax(others))]
            named.append(f"{row['name']} ({plural(row['images'], 'photo')}; taken for {taken})")
    if not named:
        return []
    return [
        f"At 0 IoU, found in none of the photos whose mask shows them: {', '.join(named)}. A class of few photos "
        "is learnt from its masks: draw masks for more photos of it, or merge it into the class it is taken for."
    ]


def _more_masks(folds: Mapping[str, Any]) -> str:
    mixed, masks = folds["mixed"], folds["masks"]
    n = len(masks["folds"])
    spread = max(max(s["folds"]) - min(s["folds"]) for s in (mixed, masks))
    said = (
        f"your masks alone scored {masks['mean']:.2f} and the weak labels with your masks in their place "
        f"{mixed['mean']:.2f} (mIoU over {n} folds of the masked photos)"
    )
    if masks["mean"] >= mixed["mean"]:
        line = (
            f"More masks should help: {said}, so the stage learns from your masks more than from the weak "
            "labels, and each mask you add teaches it directly."
        )
    else:
        line = (
            f"More masks should help: {said}; your masks are still too few to train the stage alone, and "
            "the weak labels carry it."
        )
    if spread > abs(masks["mean"] - mixed["mean"]):
        line += (
            f" The folds differ by up to {spread:.2f} points, more than the two stages differ: more masks "
            "would also make these scores firmer."
        )
    return line
