"""Background-threshold sweep of saved CAMs (``wsss sweep-bkg``).

A CAM seed is ``argmax([t; CAM x image labels])`` (``cam_to_label``, docs/methods/seco.md#cam2label). Its quality
depends on the background level t more than on most method choices (BENCHMARKS.md, SC-CAM), and the
papers of the multi-stage lineage (PSA, IRN, SC-CAM) pick t on the train split with the ground
truth before they make pseudo labels. This module scores the saved CAMs of a split at many levels in
one pass (each CAM file is read once) so that the seeds, and the raw-CAM number they are compared
with, can use the best level of the split rather than a fixed one. Every level is counted at once, in one
histogram per split on the run's device (:class:`LevelHistogram`, docs/speed.md#scoring).

The same pass can score two-level labels, the rule of the online pseudo labels and of SeCo's
decomposition (``cam_to_label(..., ignore_mid=True)``: a class above ``high``, background at or
below ``low``, undecided between): for each (high, low) pair, the mIoU where the label decides and
the share of pixels it decides. ToCo's 0.7 / 0.25 are levels for a pretrained ViT-B; a CAM of another
calibration (a backbone from scratch, another dataset) wants its own (``cam.high_thre`` / ``low_thre``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsss.core.config import load_run_config
from wsss.core.device import resolve_device
from wsss.core.errors import DataError, MissingFileError, UsageError
from wsss.evaluation.evaluator import SegDataset
from wsss.evaluation.metrics import scores_from_hist
from wsss.utils.io import read_in_order

# photos whose mask and CAM files threads read while one is counted: none, as on 2 busy cores it cost more than it
# saved (docs/speed.md#scoring); `bench/bench_scoring.py --ahead N` measures it on another machine
READ_AHEAD = 0
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

    ``cam``: (C-1,H,W) scores in [0,1], ``labels``: (C-1,) image labels. Returns (H,W) int64 maps. The definition
    that :class:`LevelHistogram` counts without making the maps (the tests compare the two).
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


class LevelHistogram:
    """The counts behind every threshold's and every pair's confusion matrix, in one histogram per split.

    A seed at level t is the CAM's class where its max is above t, background elsewhere; a two-level label decides
    the class above high, background at or below low. Both only ask, per pixel, which of the sorted levels lie below
    the max (a float32 comparison, as ``value <= t`` of ``cam_to_label``). So one count per photo of (how many
    levels lie below the max, ground-truth code, argmax class) holds them all, and each level's matrix is a sum of
    its slices (:meth:`threshold_hist`, :meth:`pair_hist`): one ``bincount`` of the photo's pixels instead of one
    seed map and one histogram per level, on the run's device (``device``), the counts moved to the host once.
    Ground-truth codes: ``0 .. C-1`` a class, ``C`` another value that is not ``ignore_index`` (left out of the
    matrices, counted in the decided share as before), ``C+1`` the ignore value (left out of everything).
    """

    def __init__(
        self, levels: Iterable[float], num_classes: int, device: torch.device | str = "cpu", ignore_index: int = 255
    ) -> None:
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.device = torch.device(device)
        # float32 levels: a CAM is float32 and torch compares it with a Python float in float32
        self.levels = torch.unique(torch.tensor([float(t) for t in levels], dtype=torch.float32))  # sorted
        self._levels_dev = self.levels.to(self.device)
        C, K = self.num_classes, self.num_classes - 1
        self._shape = (len(self.levels) + 1, C + 2, K)
        self._counts = torch.zeros(int(np.prod(self._shape)), dtype=torch.int64, device=self.device)
        self._host: np.ndarray | None = None
        self._table: torch.Tensor | None = None

    def add(self, cam: np.ndarray, labels: np.ndarray, gt: np.ndarray, classes: np.ndarray | None = None) -> None:
        """Count one photo: ``cam`` (C-1,H,W) float32, ``labels`` (C-1,) image labels, ``gt`` (H,W) class ids.
        With ``classes`` (0-based, ascending, as ``load_labelled_cam``), ``cam`` holds only their maps, the other
        classes' maps being zero: the same counts without a zero map per absent class."""
        dev, C, K = self.device, self.num_classes, self.num_classes - 1
        value, index = self._max(cam, labels, classes)
        below = torch.searchsorted(self._levels_dev, value.reshape(-1))  # levels strictly below the max
        code = self._code_of(torch.from_numpy(np.ascontiguousarray(gt)).to(dev).reshape(-1))
        self._counts += torch.bincount(below * ((C + 2) * K) + code + index.reshape(-1), minlength=self._counts.numel())
        self._host = None

    def _code_of(self, gt: torch.Tensor) -> torch.Tensor:
        """``code x (C-1)`` of each ground-truth value (the class-histogram stride of its row)."""
        C, K = self.num_classes, self.num_classes - 1
        if gt.dtype == torch.uint8:  # a mask PNG: one look-up in a table of the 256 values
            if self._table is None:
                v = torch.arange(256, device=self.device)
                code = torch.where(v == self.ignore_index, C + 1, torch.where(v < C, v, C))
                self._table = code * K
            return self._table[gt.long()]
        g = gt.long()
        return torch.where(g == self.ignore_index, C + 1, torch.where((g >= 0) & (g < C), g, C)) * K

    def _max(self, cam: np.ndarray, labels: np.ndarray, classes: np.ndarray | None) -> tuple[torch.Tensor, ...]:
        """The max over the classes of ``cam x labels`` and its 0-based class, the first of equal maxima (as
        ``_valid_max``), on the device. With ``classes``, the absent classes' zero maps stand in one zero map at the
        first absent class's place: the later ones never win a tie against it."""
        dev = self.device
        labels = torch.from_numpy(np.asarray(labels, dtype=np.float32))
        cam_t = torch.from_numpy(np.ascontiguousarray(cam, dtype=np.float32)).to(dev, non_blocking=True)
        if classes is None:
            return (cam_t * labels.to(dev).view(-1, 1, 1)).max(dim=0)
        classes = np.asarray(classes, dtype=np.int64)
        absent = np.setdiff1d(np.arange(self.num_classes - 1), classes)
        if not absent.size:
            value, at = (cam_t * labels[classes].to(dev).view(-1, 1, 1)).max(dim=0)
            return value, torch.from_numpy(classes).to(dev)[at]
        cut = int(np.searchsorted(classes, absent[0]))  # the classes before the first absent one
        rows = np.concatenate([classes[:cut], absent[:1], classes[cut:]])
        valid = torch.empty((len(rows), *cam.shape[1:]), device=dev)
        valid[cut].zero_()
        torch.mul(cam_t[:cut], labels[classes[:cut]].to(dev).view(-1, 1, 1), out=valid[:cut])
        torch.mul(cam_t[cut:], labels[classes[cut:]].to(dev).view(-1, 1, 1), out=valid[cut + 1 :])
        value, at = valid.max(dim=0)
        return value, torch.from_numpy(rows).to(dev)[at]

    def counts(self) -> np.ndarray:
        """(levels + 1, C + 2, C - 1) int64 on the host: [levels below the max, gt code, argmax class - 1]."""
        if self._host is None:
            self._host = self._counts.cpu().numpy().reshape(self._shape)
        return self._host

    def _index(self, level: float) -> int:
        return int(torch.searchsorted(self.levels, torch.tensor([float(level)], dtype=torch.float32))[0])

    def _split(self, level: float) -> tuple[np.ndarray, np.ndarray]:
        """(pixels whose max is above ``level``, per gt code and class; pixels at or below it, per gt code)."""
        h, i = self.counts(), self._index(level)
        return h[i + 1 :].sum(axis=0), h[: i + 1].sum(axis=(0, 2))

    def threshold_hist(self, level: float) -> np.ndarray:
        """The (C, C) confusion matrix of the seeds at background level ``level``."""
        above, at_or_below = self._split(level)
        C = self.num_classes
        return np.concatenate([at_or_below[:C, None], above[:C]], axis=1)

    def pair_hist(self, high: float, low: float) -> tuple[np.ndarray, int]:
        """The (C, C) confusion matrix of the two-level labels (high, low) over the pixels they decide, and the
        number of decided pixels whose ground truth is not the ignore value."""
        C = self.num_classes
        above, _ = self._split(high)
        _, at_or_below = self._split(low)
        hist = np.concatenate([at_or_below[:C, None], above[:C]], axis=1)
        return hist, int(above[: C + 1].sum() + at_or_below[: C + 1].sum())

    def counted(self) -> int:
        """The pixels whose ground truth is not the ignore value."""
        return int(self.counts()[:, : self.num_classes + 1].sum())


def sweep_bkg_threshold(
    load_cam: Any,
    dataset: SegDataset,
    ids: Iterable[str],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    *,
    pairs: Sequence[tuple[float, float]] = (),
    progress: Any = None,
    device: torch.device | str = "cpu",
    read_ahead: int = 0,
) -> dict[str, Any]:
    """mIoU of the CAM seeds of ``ids`` at each background level.

    ``load_cam(id)`` returns the (C-1,H,W) CAM of an image, or the maps of its classes only as a pair
    ``(classes, cam)`` (as ``load_labelled_cam``: ascending 0-based classes, (K,H,W), the others zero); ``dataset``
    gives its labels and its ground-truth mask. Returns ``{"thresholds", "miou" (in [0,1], one per threshold),
    "best_thre", "best_miou"}``; the best is the first of the highest. With ``pairs`` of (high, low) levels, also
    ``"pairs"``: one ``{"high", "low", "miou_decided", "decided"}`` each (mIoU over the pixels the
    two-level label decides, and their share of the pixels with a ground truth). The counting runs on
    ``device`` (:class:`LevelHistogram`); ``read_ahead`` > 0 reads that many photos' files ahead in threads.
    """
    if not thresholds:
        raise UsageError("sweep_bkg_threshold needs at least one threshold")
    thresholds = [float(t) for t in thresholds]
    for high, low in pairs:
        if low > high:
            raise UsageError(f"a two-level pair needs low <= high, got high {high}, low {low}")
    levels = [*thresholds, *(t for pair in pairs for t in pair)]
    hist: LevelHistogram | None = None
    ids = list(ids)

    def read(id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return dataset.load_mask(id), load_cam(id), dataset.labels(id)

    with contextlib.closing(read_in_order(read, ids, read_ahead)) as photos:
        for id in progress(ids) if progress is not None else ids:
            gt, cam, labels = next(photos)
            classes, cam = cam if isinstance(cam, tuple) else (None, cam)
            if cam.shape[-2:] != gt.shape:
                raise ValueError(f"{id}: CAM is {tuple(cam.shape[-2:])} but the ground-truth mask is {gt.shape}")
            num_fg = cam.shape[0] if classes is None else len(labels)
            if hist is None:
                hist = LevelHistogram(levels, num_fg + 1, device)
            elif num_fg != hist.num_classes - 1:
                raise ValueError(f"{id}: CAM has {num_fg} classes, the first had {hist.num_classes - 1}")
            hist.add(cam, labels, gt, classes)
    if hist is None:
        raise ValueError("sweep_bkg_threshold: no images")
    miou = [float(scores_from_hist(hist.threshold_hist(t))["miou"]) for t in thresholds]
    best = int(np.argmax(miou))
    out = {"thresholds": thresholds, "miou": miou, "best_thre": thresholds[best], "best_miou": miou[best]}
    if pairs:
        counted, rows = hist.counted(), []
        for h, lo in pairs:
            pair, decided = hist.pair_hist(h, lo)
            rows.append(
                {
                    "high": float(h),
                    "low": float(lo),
                    "miou_decided": float(scores_from_hist(pair)["miou"]),
                    "decided": float(decided / max(counted, 1)),
                }
            )
        out["pairs"] = rows
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
    read_ahead: int = READ_AHEAD,
) -> tuple[dict[str, Any], Path]:
    """``wsss sweep-bkg``: sweep the saved CAMs ``RUN/cams/<split>`` of a run (``wsss cam`` first) over
    background levels and (high, low) pairs (the run's own pair added), write the result as JSON
    (default ``RUN/bkg_sweep/<split>.json``); returns the result and the JSON path. ``overrides``: ``KEY=VALUE``
    words over the run's saved config (its own pair, ``cam.high_thre`` / ``cam.low_thre``, and ``cam.bkg_thre``).
    The counting runs on the run's ``run.device`` (an override ``run.device=cpu`` keeps it on the CPU), recorded as
    the result's ``device``."""
    from wsss.core.files import atomic_write
    from wsss.data.voc import run_dataset  # lazy: the data package imports image libraries
    from wsss.utils.io import load_labelled_cam_of, missing_cam_ids

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir, overrides=overrides)
    device = resolve_device(cfg.run.device)  # the run's, as every command that reads a run (`--device cpu`)
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
        lambda i: load_labelled_cam_of(cam_dir, i, num_fg),
        ds,
        ids,
        thresholds or DEFAULT_THRESHOLDS,
        pairs=pairs,
        progress=progress,
        device=device,
        read_ahead=read_ahead,
    )
    res.update(
        run=str(run_dir),
        split=split,
        config_bkg_thre=cfg.cam.bkg_thre,
        config_pair=list(own),
        n_images=len(ids),
        n_without_mask=len(ds.ids) - len(ids),
        device=str(device),
    )
    out = Path(json_path) if json_path else run_dir / "bkg_sweep" / f"{split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "w") as f:
        json.dump(res, f, indent=2)
    return res, out
