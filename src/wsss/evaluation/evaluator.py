"""Evaluate label maps against the ground truth: mIoU table plus co-occurrence diagnostics.

``evaluate(pred_dir, root, split)`` scores the ``<pred_dir>/<id>.png`` label maps of a split;
``evaluate_arrays(gts, preds, labels, class_names)`` does the same for in-memory arrays (the
trainer's validation). Both go through one accumulator, so they give identical numbers.

A prediction may hold 255 ("undecided", as pseudo labels do). With ``pseudo=True`` both
conventions of docs/datasets.md#evaluation are reported (:func:`~wsss.evaluation.metrics.pseudo_label_scores`);
the headline is the strict one (255 scored as background). Without it, 255 pixels are scored the
same strict way and their share is reported as ``ignored_share``.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..core.errors import DataError
from ..utils.io import plural, read_in_order, read_label_png
from .cooccurrence import CooccurrenceMeter
from .metrics import _as_index_array, _as_numpy, _describe_values, _hist, _pseudo_scores_from_ext_hist

__all__ = ["EvalResult", "SegDataset", "coverage_note", "evaluate", "evaluate_arrays"]

# photos whose prediction and mask PNGs threads decode while one is counted: none, as on 2 busy cores it cost more
# than it saved (docs/speed.md#scoring); `bench/bench_scoring.py --ahead N` measures it on another machine
READ_AHEAD = 0


class SegDataset(Protocol):
    """What ``evaluate`` needs from a dataset (``wsss.data.VOCDataset`` provides it)."""

    ids: list[str]
    class_names: list[str]
    num_classes: int

    def load_mask(self, id: str) -> np.ndarray: ...

    def labels(self, id: str) -> np.ndarray: ...


def _jsonable(x: Any) -> Any:
    """Plain-Python copy of ``x`` that json.dumps accepts strictly (nan / inf become None)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Path):
        return str(x)
    return x


def _pct(x: float | None, width: int = 7) -> str:
    if x is None or not np.isfinite(x):
        return "-".rjust(width)
    return f"{100.0 * x:{width}.2f}"


@dataclass
class EvalResult:
    """Scores of one evaluation.

    - ``scores``: the dict of :func:`~wsss.evaluation.metrics.scores_from_hist` (``miou``,
      ``pAcc``, ``iou``, ``hist``, ...), plus ``ignored_share``; with ``pseudo=True`` the dict of
      :func:`~wsss.evaluation.metrics.pseudo_label_scores` (the ``pseudo_*`` keys: covered convention).
    - ``per_class``: one dict per class id (``name``, ``iou``, ``precision``, ``recall``, ``far``,
      ``gt_pixels``, ``pred_pixels``, ``images``; with ``pseudo``: ``iou_covered``, ``ignored_share``).
    - ``cooccurrence``: :meth:`CooccurrenceMeter.result` (``far``, ``mean_far``, ``pairs``).
    """

    scores: dict[str, Any]
    per_class: list[dict[str, Any]]
    cooccurrence: dict[str, Any]
    n_images: int
    class_names: list[str]
    pseudo: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def miou(self) -> float:
        """The headline mIoU (nanmean over the classes present in the GT)."""
        return float(self.scores["miou"])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (numpy arrays as lists, nan and inf as null)."""
        scores = dict(self.scores)
        out: dict[str, Any] = {
            "n_images": self.n_images,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "pseudo": self.pseudo,
            "miou": self.scores["miou"],
            "miou_all": self.scores["miou_all"],
            "miou_background_only": self.scores["miou_background_only"],
            "pAcc": self.scores["pAcc"],
            "mAcc": self.scores["mAcc"],
            "mean_far": self.cooccurrence["mean_far"],
        }
        if self.pseudo:
            out["convention"] = self.scores["convention"]
            out["pseudo_miou"] = self.scores["pseudo_miou"]
            out["ignored_share"] = self.scores["ignored_share"]
        out["meta"] = self.meta
        out["scores"] = scores
        out["per_class"] = self.per_class
        out["cooccurrence"] = self.cooccurrence
        return _jsonable(out)

    def format_table(self, top_pairs: int = 5) -> str:
        """A fixed-width text table: per class IoU / precision / recall / FAR (all %), then the
        means and the largest co-occurrence confusions."""
        s = self.scores
        name_w = max(12, *(len(n) for n in self.class_names)) if self.class_names else 12
        cols = ["IoU%"] + (["IoU%cov"] if self.pseudo else []) + ["Prec%", "Rec%", "FAR%"]
        header = "class".ljust(name_w) + "".join(c.rjust(9) for c in cols)
        rule = "-" * len(header)
        listed = self.meta.get("listed")
        lines = [
            f"{self.n_images} image{'s' if self.n_images != 1 else ''}, {self.num_classes} classes"
            + (f"; pseudo labels, headline {s['convention']}" if self.pseudo else "")
            + (f"; {coverage_note(self.n_images, listed)}" if listed else ""),
            header,
            rule,
        ]
        for row in self.per_class:
            vals = [row["iou"]] + ([row["iou_covered"]] if self.pseudo else [])
            vals += [row["precision"], row["recall"], row["far"]]
            lines.append(row["name"].ljust(name_w) + "".join(_pct(v, 9) for v in vals))
        lines.append(rule)

        def summary(label: str, value: float, note: str = "") -> None:
            lines.append(label.ljust(name_w) + _pct(value, 9) + (f"   ({note})" if note else ""))

        n_valid = int(np.count_nonzero(s["valid"]))
        summary("mIoU", s["miou"], f"mean over the {n_valid} classes present in the GT")
        miou_all = s["miou_all"]
        if not (miou_all == s["miou"] or (np.isnan(miou_all) and np.isnan(s["miou"]))):
            summary("mIoU (all)", miou_all, "plain mean over all classes, as the official tables print")
        if self.pseudo:
            summary("mIoU cov", s["pseudo_miou"], "covered convention: pixels at 255 excluded")
        summary("bkg only", s["miou_background_only"], "the mIoU of masks of background alone: the floor")
        summary("pixel acc", s["pAcc"])
        summary("mean acc", s["mAcc"])
        summary("mean FAR", self.cooccurrence["mean_far"], "GT-background predicted as an image's class")
        share = s.get("ignored_share", 0.0)
        if self.pseudo or (np.isfinite(share) and share > 0):
            how = "" if self.pseudo else ", scored as background"
            summary("at 255", share, f"share of valid-GT pixels left at 255{how}")
        pairs = [p for p in self.cooccurrence["pairs"] if np.isfinite(p["share"]) and p["share"] > 0]
        lines.append("")
        lines.append("Top co-occurrence confusions (share of GT-a pixels predicted b, images labelled a+b):")
        if not pairs:
            lines.append("  (none)")
        pair_w = max([len(f"{p['gt']} -> {p['pred']}") for p in pairs[:top_pairs]] + [10])
        for p in pairs[:top_pairs]:
            lines.append(
                f"  {(p['gt'] + ' -> ' + p['pred']).ljust(pair_w)}{_pct(p['share'], 8)}%"
                f"   ({p['images']} image{'s' if p['images'] != 1 else ''})"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_table()


def coverage_note(scored: int, listed: int) -> str:
    """How many photos of a partly masked split were scored: `wsss eval` and the report say it the same way."""
    return f"scored on the {plural(scored, 'photo')} of the {listed} with a ground-truth mask"


class _Accumulator:
    """The one code path behind ``evaluate`` and ``evaluate_arrays``."""

    def __init__(self, class_names: Sequence[str], ignore_index: int = 255, pseudo: bool = False) -> None:
        self.class_names = [str(n) for n in class_names]
        self.num_classes = len(self.class_names)
        if self.num_classes < 2:
            raise ValueError(f"need at least 2 classes (background first), got {self.class_names}")
        self.ignore_index = ignore_index
        self.pseudo = pseudo
        self.ext = np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)
        self.cooc = CooccurrenceMeter(self.num_classes, ignore_index)
        self.n_images = 0

    def add(self, gt: Any, pred: Any, labels: Any, source: str, gt_source: str | None = None) -> None:
        C = self.num_classes
        gt = _as_numpy(gt)
        self._check_range(gt, "ground-truth", gt_source or f"{source} (its ground truth)")
        try:
            pred = _as_index_array(pred, "prediction")
        except ValueError as e:
            raise DataError(f"{source}: {e}") from e
        if pred.ndim == 3 and pred.shape[0] == 1:
            pred = pred[0]
        if gt.shape != pred.shape:
            raise DataError(f"{source}: prediction shape {pred.shape} differs from the ground truth {gt.shape}")
        if gt.dtype == pred.dtype == np.uint8 and self.ignore_index == 255 and C <= 255:
            self._add_uint8(gt, pred, labels, source)  # label PNGs: one count of their value pairs
            return
        self._check_range(pred, "prediction", source)
        if labels is None:  # derive the image labels from the GT
            g = gt.reshape(-1).astype(np.int64)
            counts = np.bincount(g[(g >= 0) & (g < C) & (g != self.ignore_index)], minlength=C)
            labels = counts[1:] > 0
        try:
            ext = _hist(gt, pred, C, self.ignore_index, pred_ignore_column=True)
            self.cooc.update_from_hist(ext, labels)
        except ValueError as e:
            raise DataError(f"{source}: {e}") from e
        self.ext += ext
        self.n_images += 1

    def _add_uint8(self, gt: np.ndarray, pred: np.ndarray, labels: Any, source: str) -> None:
        """:meth:`add` of two uint8 maps of one shape, ignore value 255, C <= 255 (what ``evaluate`` reads): one
        ``bincount`` of the (gt, pred) value pairs holds the prediction's range check, the image labels and the
        ``(C, C+1)`` histogram that the general path makes in a dozen passes over the pixels (docs/speed.md#scoring)."""
        C = self.num_classes
        pairs = np.bincount((gt.astype(np.uint16) << 8 | pred).reshape(-1), minlength=65536).reshape(256, 256)
        predicted = pairs.sum(axis=0)  # the ground truth's values were checked by add
        bad = np.flatnonzero(predicted[C:255]) + C  # neither a class nor 255
        if bad.size:
            self._range_error(bad, int(predicted[bad].sum()), "prediction", source)
        ext = np.concatenate([pairs[:C, :C], pairs[:C, 255:]], axis=1).astype(np.int64)
        if labels is None:  # derive the image labels from the GT
            labels = pairs[1:C].sum(axis=1) > 0
        try:
            self.cooc.update_from_hist(ext, labels)
        except ValueError as e:
            raise DataError(f"{source}: {e}") from e
        self.ext += ext
        self.n_images += 1

    def _check_range(self, values: np.ndarray, what: str, source: str) -> None:
        """DataError naming ``source`` when ``values`` (a prediction or a ground truth: both sides are
        checked alike) hold a value that is neither a class index nor the ignore value."""
        C = self.num_classes
        if values.size:
            bad = ((values < 0) | (values >= C)) & (values != self.ignore_index)
            if bad.any():
                self._range_error(values[bad], int(bad.sum()), what, source)

    def _range_error(self, bad: np.ndarray, pixels: int, what: str, source: str) -> None:
        raise DataError(
            f"{source}: {what} values {_describe_values(bad)} outside the class range 0..{self.num_classes - 1} "
            f"(and not the ignore value {self.ignore_index}); {pixels} pixels"
        )

    def result(self, meta: dict[str, Any] | None = None) -> EvalResult:
        scores = _pseudo_scores_from_ext_hist(self.ext)
        if not self.pseudo:  # keep the plain scores dict, plus the (normally zero) 255 share
            scores = {k: v for k, v in scores.items() if not k.startswith("pseudo_") and k != "convention"}
        cooc = self.cooc.result(self.class_names)
        hist = scores["hist"]
        gt_pixels = hist.sum(axis=1)
        pred_pixels = hist.sum(axis=0)
        per_class = []
        for c, name in enumerate(self.class_names):
            row: dict[str, Any] = {
                "id": c,
                "name": name,
                "iou": float(scores["iou"][c]),
                "precision": float(scores["precision"][c]),
                "recall": float(scores["recall"][c]),
                "far": None if c == 0 else float(cooc["far"][c]),
                "gt_pixels": int(gt_pixels[c]),
                "pred_pixels": int(pred_pixels[c]),
                "images": self.n_images if c == 0 else int(cooc["far_images"][c]),
            }
            if self.pseudo:
                row["iou_covered"] = float(scores["pseudo_iou"][c])
                row["ignored_share"] = float(scores["ignored_share_per_class"][c])
            per_class.append(row)
        return EvalResult(
            scores=scores,
            per_class=per_class,
            cooccurrence=cooc,
            n_images=self.n_images,
            class_names=list(self.class_names),
            pseudo=self.pseudo,
            meta=dict(meta or {}),
        )


def _resolve_names(class_names: Sequence[str] | None, num_classes: int | None) -> list[str]:
    if class_names is not None:
        names = [str(n) for n in class_names]
        if num_classes is not None and num_classes != len(names):
            raise ValueError(f"num_classes={num_classes} but {len(names)} class names were given")
        return names
    if num_classes is None:
        raise ValueError("give class_names (background first) or num_classes")
    return [str(i) for i in range(num_classes)]


def evaluate_arrays(
    gts: Iterable[Any],
    preds: Iterable[Any],
    labels: Iterable[Any] | None = None,
    class_names: Sequence[str] | None = None,
    *,
    num_classes: int | None = None,
    ids: Sequence[str] | None = None,
    pseudo: bool = False,
    ignore_index: int = 255,
) -> EvalResult:
    """Score in-memory label maps (numpy arrays or tensors, one (H, W) map per image).

    ``labels``: per image the (C-1,) foreground multi-hot used by the co-occurrence diagnostics;
    None derives it from the classes present in each GT. ``class_names`` (background first) or
    ``num_classes`` fixes C. ``ids`` only names the images in error messages. Errors raise
    DataError naming the image.
    """
    acc = _Accumulator(_resolve_names(class_names, num_classes), ignore_index, pseudo)
    gts, preds = list(gts), list(preds)
    if len(gts) != len(preds):
        raise ValueError(f"{len(gts)} ground-truth maps but {len(preds)} predictions")
    labels_list = [None] * len(gts) if labels is None else list(labels)
    if len(labels_list) != len(gts):
        raise ValueError(f"{len(gts)} ground-truth maps but {len(labels_list)} image labels")
    if ids is not None and len(ids) != len(gts):
        raise ValueError(f"{len(gts)} ground-truth maps but {len(ids)} ids")
    for i, (gt, pred, lab) in enumerate(zip(gts, preds, labels_list)):
        source = f"prediction {i}" + (f" (id {ids[i]})" if ids is not None else "")
        acc.add(gt, pred, lab, source)
    return acc.result()


def evaluate(
    pred_dir: str | os.PathLike,
    root: str | os.PathLike | None,
    split: str | None,
    *,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    dataset: SegDataset | None = None,
    pseudo: bool = False,
    ignore_index: int = 255,
    read_ahead: int = READ_AHEAD,
) -> EvalResult:
    """Score ``<pred_dir>/<id>.png`` for every id of ``split`` against the dataset's masks.

    The ground truth, ids, class names and image labels come from ``dataset`` or, by default,
    ``wsss.data.VOCDataset(root, split)``. ``num_classes`` / ``class_names`` override the
    dataset's. ``pseudo=True`` scores pseudo labels holding 255 under both conventions
    (docs/datasets.md#evaluation). Raises DataError naming the file for a missing or unreadable prediction, a
    prediction whose shape differs from the GT, or a value outside the classes (other than 255).
    An id the split lists more than once is scored once, with a ``ConfigWarning`` naming the split file and the
    ids (``meta["repeated_ids"]``). ``read_ahead`` > 0: that many photos' files are decoded ahead in threads
    (default none, docs/speed.md#scoring); the scores and the first error are the same. A split where only some
    photos have a mask is scored on those (``meta["listed"]``: the split's count; :func:`coverage_note`); one where
    none has is a DataError.
    """
    if dataset is None:
        if root is None or split is None:
            raise ValueError("give root and split, or a dataset")
        from ..data import VOCDataset  # lazy: the data package imports image libraries

        dataset = VOCDataset(root, split)
    if class_names is None:
        ds_names = list(dataset.class_names)
        if num_classes is None or num_classes == len(ds_names):
            class_names = ds_names
    names = _resolve_names(class_names, num_classes)

    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise DataError(f"{pred_dir}: prediction directory not found")
    where = f"split {split!r}" + (f" of {root}" if root is not None else "")
    dataset, listed = _masked(dataset, where)
    ids, repeated = _each_once(dataset.ids)
    if repeated:  # an image listed twice would weigh twice in every score (11 images of 8)
        from ..core.errors import ConfigWarning
        from ..data.voc import SPLIT_DIR

        source = Path(root) / SPLIT_DIR / f"{split}.txt" if root is not None and split is not None else where
        shown = ", ".join(repeated[:5]) + (f" (and {len(repeated) - 5} more)" if len(repeated) > 5 else "")
        warnings.warn(
            ConfigWarning(f"{source}: {len(repeated)} id(s) listed more than once, each scored once: {shown}"),
            stacklevel=2,
        )
    if not ids:
        raise DataError(f"{where}: no images to evaluate")
    paths = [pred_dir / f"{i}.png" for i in ids]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more of {len(ids)} ids of {where})" if len(missing) > 1 else ""
        raise DataError(f"{missing[0]}: prediction file not found{more}")

    acc = _Accumulator(names, ignore_index, pseudo)
    mask_path = getattr(dataset, "mask_path", lambda _: None)

    def read(k: int) -> tuple[np.ndarray, np.ndarray, Any]:
        return read_label_png(paths[k]), dataset.load_mask(ids[k]), dataset.labels(ids[k])

    with contextlib.closing(read_in_order(read, range(len(ids)), read_ahead)) as photos:
        for image_id, path, (pred, gt, labels) in zip(ids, paths, photos):
            gt_path = mask_path(image_id)
            acc.add(gt, pred, labels, str(path), gt_source=str(gt_path) if gt_path else None)
    meta: dict[str, Any] = {"pred_dir": str(pred_dir), "root": None if root is None else str(root), "split": split}
    if len(ids) < listed:
        meta["listed"] = listed
    if repeated:
        meta["repeated_ids"] = repeated
    return acc.result(meta)


def _masked(dataset: SegDataset, where: str) -> tuple[SegDataset, int]:
    """(the photos of ``dataset`` with a mask, as a dataset; how many photos it lists, each once)."""
    from ..data.voc import MASK_DIRS, masked_view  # lazy: the data package imports image libraries

    scored = masked_view(dataset)
    if scored is None:
        raise DataError(f"{where}: no photo has a ground-truth mask (looked in {', '.join(MASK_DIRS)})")
    return scored, len(_each_once(dataset.ids)[0])


def _each_once(ids: Iterable[str]) -> tuple[list[str], list[str]]:
    """(``ids`` in order with each id once, the ids listed more than once)."""
    seen: dict[str, int] = {}
    for i in ids:
        seen[i] = seen.get(i, 0) + 1
    return list(seen), [i for i, n in seen.items() if n > 1]
