"""Background-threshold sweep of saved CAMs (``wsss sweep-bkg``).

A CAM seed is ``argmax([t; CAM x image labels])`` (``cam_to_label``, docs/methods/seco.md#cam2label). Its quality
depends on the background level t more than on most method choices (BENCHMARKS.md, SC-CAM), and the
papers of the multi-stage lineage (PSA, IRN, SC-CAM) pick t on the train split with the ground
truth before they make pseudo labels. This module scores the saved CAMs of a split at many levels in
one pass (each CAM file is read once) so that the seeds, and the raw-CAM number they are compared
with, can use the best level of the split rather than a fixed one.

The same pass can score two-level labels, the rule of the online pseudo labels and of SeCo's
decomposition (``cam_to_label(..., ignore_mid=True)``: a class above ``high``, background at or
below ``low``, undecided between): for each (high, low) pair, the mIoU where the label decides and
the share of pixels it decides. ToCo's 0.7 / 0.25 are levels for a pretrained ViT-B; a CAM of another
calibration (a backbone from scratch, another dataset) wants its own (``cam.high_thre`` / ``low_thre``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsss.core.config import load_run_config
from wsss.core.errors import DataError, MissingFileError, UsageError
from wsss.evaluation.evaluator import SegDataset
from wsss.evaluation.metrics import ConfusionMeter

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 15))  # 0.05 .. 0.70
# (high, low) pairs of the two-level scan: ToCo's (0.7, 0.25) and a grid below it
DEFAULT_PAIRS: tuple[tuple[float, float], ...] = tuple(
    (h, lo) for h in (0.7, 0.6, 0.5, 0.4, 0.35, 0.3) for lo in (0.25, 0.15, 0.1, 0.05) if lo < h
)


def _valid_max(cam: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The max over the image's classes of ``cam x labels`` and its class (1-based), as ``cam_to_label``."""
    valid = torch.from_numpy(np.asarray(cam, dtype=np.float32)) * torch.from_numpy(
        np.asarray(labels, dtype=np.float32)
    ).view(-1, 1, 1)
    value, index = valid.max(dim=0)
    return value, index + 1


def seeds_at_thresholds(cam: np.ndarray, labels: np.ndarray, thresholds: Sequence[float]) -> list[np.ndarray]:
    """The seed map of ``cam_to_label(cam, labels, bkg_thre=t)`` for every t, sharing one argmax.

    ``cam``: (C-1,H,W) scores in [0,1], ``labels``: (C-1,) image labels. Returns (H,W) int64 maps.
    """
    value, label = _valid_max(cam, labels)
    return [label.masked_fill(value <= t, 0).numpy() for t in thresholds]


def two_level_labels(
    cam: np.ndarray, labels: np.ndarray, pairs: Sequence[tuple[float, float]], ignore_index: int = 255
) -> list[np.ndarray]:
    """``cam_to_label(cam, labels, ignore_mid=True, high_thre=h, low_thre=l)`` for every (h, l), sharing
    one argmax: the class where the max is above h, 0 at or below l, ``ignore_index`` between."""
    value, label = _valid_max(cam, labels)
    out = []
    for high, low in pairs:
        if low > high:
            raise UsageError(f"a two-level pair needs low <= high, got high {high}, low {low}")
        out.append(label.masked_fill(value <= high, ignore_index).masked_fill(value <= low, 0).numpy())
    return out


def sweep_bkg_threshold(
    load_cam: Any,
    dataset: SegDataset,
    ids: Iterable[str],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    *,
    pairs: Sequence[tuple[float, float]] = (),
    progress: Any = None,
) -> dict[str, Any]:
    """mIoU of the CAM seeds of ``ids`` at each background level.

    ``load_cam(id)`` returns the (C-1,H,W) CAM of an image; ``dataset`` gives its labels and its
    ground-truth mask. Returns ``{"thresholds", "miou" (in [0,1], one per threshold), "best_thre",
    "best_miou"}``; the best is the first of the highest. With ``pairs`` of (high, low) levels, also
    ``"pairs"``: one ``{"high", "low", "miou_decided", "decided"}`` each (mIoU over the pixels the
    two-level label decides, and their share of the pixels with a ground truth).
    """
    if not thresholds:
        raise UsageError("sweep_bkg_threshold needs at least one threshold")
    thresholds = [float(t) for t in thresholds]
    meters: list[ConfusionMeter] | None = None
    ids = list(ids)
    for id in progress(ids) if progress is not None else ids:
        gt = dataset.load_mask(id)
        cam = load_cam(id)
        if cam.shape[-2:] != gt.shape:
            raise ValueError(f"{id}: CAM is {tuple(cam.shape[-2:])} but the ground-truth mask is {gt.shape}")
        labels = dataset.labels(id)
        seeds = seeds_at_thresholds(cam, labels, thresholds)
        if meters is None:
            meters = [ConfusionMeter(cam.shape[0] + 1) for _ in thresholds]
            pair_meters = [ConfusionMeter(cam.shape[0] + 1) for _ in pairs]
            decided, counted = np.zeros(len(pairs), np.int64), 0
        for meter, seed in zip(meters, seeds):
            meter.update(gt, seed)
        counted += int((gt != 255).sum())
        for k, (meter, lab) in enumerate(zip(pair_meters, two_level_labels(cam, labels, pairs))):
            where = (lab != 255) & (gt != 255)
            meter.update(np.where(where, gt, 255), lab)  # undecided pixels are left out of the score
            decided[k] += int(where.sum())
    if meters is None:
        raise ValueError("sweep_bkg_threshold: no images")
    miou = [float(m.scores()["miou"]) for m in meters]
    best = int(np.argmax(miou))
    out = {"thresholds": thresholds, "miou": miou, "best_thre": thresholds[best], "best_miou": miou[best]}
    if pairs:
        out["pairs"] = [
            {"high": float(h), "low": float(lo), "miou_decided": float(m.scores()["miou"]),
             "decided": float(d / max(counted, 1))}
            for (h, lo), m, d in zip(pairs, pair_meters, decided)
        ]  # fmt: skip
    return out


def sweep_run_bkg(
    run_dir: str | Path,
    split: str,
    *,
    data_root: str | None = None,
    thresholds: Sequence[float] | None = None,
    pairs: Sequence[tuple[float, float]] | None = None,
    json_path: str | Path | None = None,
    progress: Callable[[Sequence[str]], Iterable[str]] | None = None,
    overrides: Sequence[str] = (),
) -> tuple[dict[str, Any], Path]:
    """``wsss sweep-bkg``: sweep the saved CAMs ``RUN/cams/<split>`` of a run (``wsss cam`` first) over
    background levels and (high, low) pairs (the run's own pair added), write the result as JSON
    (default ``RUN/bkg_sweep/<split>.json``); returns the result and the JSON path. ``overrides``: ``KEY=VALUE``
    words over the run's saved config (its own pair, ``cam.high_thre`` / ``cam.low_thre``, and ``cam.bkg_thre``)."""
    from wsss.core.files import atomic_write
    from wsss.data.voc import run_dataset  # lazy: the data package imports image libraries
    from wsss.utils.io import load_cam_of, missing_cam_ids

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir, overrides=overrides)
    ds = run_dataset(data_root, cfg.data.root, split, run_dir)
    cam_dir = run_dir / "cams" / split
    # the images with a ground-truth mask (`wsss prepare folder --masks` keeps some photos without one in train)
    ids = [i for i in ds.ids if ds.has_mask(i)]
    if not ids:
        raise DataError(f"{ds.root}: no image of split {split!r} has a ground-truth mask to score the seeds with")
    missing = missing_cam_ids(cam_dir, ids)
    if missing:
        raise MissingFileError(
            f"{cam_dir}: no CAM for {len(missing)} of {len(ids)} images (first: {missing[0]}); "
            f"run `wsss cam {run_dir} --split {split}` first"
        )
    num_fg = ds.num_classes - 1
    own = (cfg.cam.high_thre, cfg.cam.low_thre)
    pairs = list(pairs or DEFAULT_PAIRS)
    pairs += [own] if own not in pairs else []
    res = sweep_bkg_threshold(
        lambda i: load_cam_of(cam_dir, i, num_fg), ds, ids, thresholds or DEFAULT_THRESHOLDS,
        pairs=pairs, progress=progress,
    )  # fmt: skip
    res.update(run=str(run_dir), split=split, config_bkg_thre=cfg.cam.bkg_thre, config_pair=list(own),
               n_images=len(ids), n_without_mask=len(ds.ids) - len(ids))  # fmt: skip
    out = Path(json_path) if json_path else run_dir / "bkg_sweep" / f"{split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "w") as f:
        json.dump(res, f, indent=2)
    return res, out
