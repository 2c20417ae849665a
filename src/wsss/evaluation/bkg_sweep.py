"""Background-threshold sweep of saved CAMs (``wsss sweep-bkg``).

A CAM seed is ``argmax([t; CAM x image labels])`` (``cam_to_label``, methods.md 2.6). Its quality
depends on the background level t more than on most method choices (BENCHMARKS.md, SC-CAM), and the
papers of the multi-stage lineage (PSA, IRN, SC-CAM) pick t on the train split with the ground
truth before they make pseudo labels. This module scores the saved CAMs of a split at many levels in
one pass (each CAM file is read once) so that the seeds, and the raw-CAM number they are compared
with, can use the best level of the split rather than a fixed one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from wsss.evaluation.evaluator import SegDataset
from wsss.evaluation.metrics import ConfusionMeter

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 15))  # 0.05 .. 0.70


def seeds_at_thresholds(cam: np.ndarray, labels: np.ndarray, thresholds: Sequence[float]) -> list[np.ndarray]:
    """The seed map of ``cam_to_label(cam, labels, bkg_thre=t)`` for every t, sharing one argmax.

    ``cam``: (C-1,H,W) scores in [0,1], ``labels``: (C-1,) image labels. Returns (H,W) int64 maps.
    """
    valid = torch.from_numpy(np.asarray(cam, dtype=np.float32)) * torch.from_numpy(
        np.asarray(labels, dtype=np.float32)
    ).view(-1, 1, 1)
    value, index = valid.max(dim=0)
    label = index + 1
    return [label.masked_fill(value <= t, 0).numpy() for t in thresholds]


def sweep_bkg_threshold(
    load_cam: Any,
    dataset: SegDataset,
    ids: Iterable[str],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    *,
    progress: Any = None,
) -> dict[str, Any]:
    """mIoU of the CAM seeds of ``ids`` at each background level.

    ``load_cam(id)`` returns the (C-1,H,W) CAM of an image; ``dataset`` gives its labels and its
    ground-truth mask. Returns ``{"thresholds", "miou" (in [0,1], one per threshold), "best_thre",
    "best_miou"}``; the best is the first of the highest.
    """
    if not thresholds:
        raise ValueError("sweep_bkg_threshold needs at least one threshold")
    thresholds = [float(t) for t in thresholds]
    meters: list[ConfusionMeter] | None = None
    ids = list(ids)
    for id in progress(ids) if progress is not None else ids:
        gt = dataset.load_mask(id)
        cam = load_cam(id)
        if cam.shape[-2:] != gt.shape:
            raise ValueError(f"{id}: CAM is {tuple(cam.shape[-2:])} but the ground-truth mask is {gt.shape}")
        seeds = seeds_at_thresholds(cam, dataset.labels(id), thresholds)
        if meters is None:
            meters = [ConfusionMeter(cam.shape[0] + 1) for _ in thresholds]
        for meter, seed in zip(meters, seeds):
            meter.update(gt, seed)
    if meters is None:
        raise ValueError("sweep_bkg_threshold: no images")
    miou = [float(m.scores()["miou"]) for m in meters]
    best = int(np.argmax(miou))
    return {"thresholds": thresholds, "miou": miou, "best_thre": thresholds[best], "best_miou": miou[best]}
