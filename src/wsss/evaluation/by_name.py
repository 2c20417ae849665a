"""Score a folder of predictions against masks in any form ``--masks`` takes, photos matched by name.

``wsss eval PRED --masks M --classes C``: ``PRED`` holds class-index PNGs (``<stem>.png``), ``M`` is what
``wsss prepare folder --masks`` reads (:func:`wsss.data.prepare.annotations.open_masks`: a PNG folder, a COCO
file, a CVAT export, LabelMe files), ``C`` the class list (background first). A prediction is scored when a mask
of the same stem exists (``cat.png`` against ``cat.jpg``'s annotation); the rest are counted and named, not
refused. The scores are :func:`wsss.evaluation.evaluate`'s, through the same accumulator.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConfigWarning, DataError
from ..data.classes import read_class_list
from ..data.prepare import first
from ..data.prepare.annotations import IndexPngs, MaskSource, open_masks
from ..utils.io import plural
from .evaluator import EvalResult, evaluate

__all__ = ["MaskSourceDataset", "evaluate_by_name"]


class MaskSourceDataset:
    """The photos that have both a prediction and a mask, as the dataset :func:`evaluate` reads (its
    ``SegDataset``): masks by stem from a :class:`MaskSource`; image labels from the masks themselves."""

    def __init__(self, source: MaskSource, class_names: list[str], keys: dict[str, str]) -> None:
        self.source = source
        self.class_names = list(class_names)
        self.num_classes = len(class_names)
        self.keys = keys  # stem -> the source's key
        self.ids = list(keys)

    def load_mask(self, id: str) -> np.ndarray:
        return self.source.read(self.keys[id])

    def labels(self, id: str) -> None:
        return None  # the evaluator takes each photo's classes from its mask

    def mask_path(self, id: str) -> str:
        return self.source.where(self.keys[id])


def masks_by_stem(source: MaskSource) -> dict[str, str]:
    """{photo stem: the source's key}: PNG masks are keyed by stem already, annotation files by the photo's name."""
    out: dict[str, str] = {}
    for key in source.keys:
        stem = key if isinstance(source, IndexPngs) else Path(key).stem
        if stem in out:
            raise DataError(
                f"{source.path}: two photos of one name {stem!r} ({out[stem]} and {key}): cannot tell "
                "which mask a prediction is of"
            )
        out[stem] = key
    return out


def evaluate_by_name(
    pred_dir: str | os.PathLike, masks: str | os.PathLike, classes: str | os.PathLike, *, pseudo: bool = False
) -> EvalResult:
    """Score each ``<pred_dir>/<stem>.png`` that has a mask of that stem in ``masks`` (any form of
    ``open_masks``), the class list read from ``classes``. ``meta``: ``predictions`` (the PNGs in ``pred_dir``),
    ``unmasked`` (their names without a mask), ``masks`` and ``unpredicted`` (masks without a prediction). A
    DataError names the file when nothing matches, or a mask or prediction is unreadable or of another size."""
    pred_dir, masks, classes = Path(pred_dir), Path(masks), Path(classes)
    if not pred_dir.is_dir():
        raise DataError(f"{pred_dir}: prediction directory not found")
    class_names = read_class_list(classes)
    source = open_masks(masks, class_names)
    by_stem = masks_by_stem(source)
    preds = sorted(p.stem for p in pred_dir.glob("*.png") if not p.name.startswith("."))
    if not preds:
        raise DataError(f"{pred_dir}: no .png prediction in this folder")
    keys = {s: by_stem[s] for s in preds if s in by_stem}
    if not keys:
        raise DataError(
            f"{pred_dir}: none of its {plural(len(preds), 'prediction')} has a mask of its name in "
            f"{masks} ({source.kind}; e.g. {preds[0]}.png, masks such as {first(by_stem)})"
        )
    result = evaluate(pred_dir, None, None, dataset=MaskSourceDataset(source, class_names, keys), pseudo=pseudo)
    for note in source.warnings():
        warnings.warn(ConfigWarning(note), stacklevel=2)
    result.meta.update(
        masks=str(masks),
        classes=str(classes),
        predictions=len(preds),
        mask_count=len(by_stem),
        unmasked=[f"{s}.png" for s in preds if s not in keys],
        unpredicted=[by_stem[s] for s in by_stem if s not in keys],
    )
    return result


def scored_line(meta: dict[str, Any], scored: int) -> str:
    """``scored N of M predictions``, with the names of those without a mask and the masks without a prediction."""
    line = f"scored {scored} of {plural(meta['predictions'], 'prediction')} (matched by name to {meta['masks']})"
    if meta["unmasked"]:
        line += f"; {len(meta['unmasked'])} without a mask: {first(meta['unmasked'])}"
    if meta["unpredicted"]:
        line += f"; {len(meta['unpredicted'])} mask(s) without a prediction: {first(meta['unpredicted'])}"
    return line
