"""Inference over a trained run: CAMs, pseudo labels, segmentation masks.

Every command streams over the ids of a split, writes each output atomically, and skips ids whose
output already exists, so a killed job continues where it stopped. Nothing per-image is written in
float unless asked (``cams/`` holds float16 CAMs of the labelled classes only).

Layout (interface.md): ``cams/<split>/<id>.npz`` (arrays ``keys`` = 1-based class ids, ``cam`` =
(K, H, W) float16 in [0, 1]; utils/io.py), ``cam_labels/<split>/<id>.png`` (the CAM seed: argmax with
``bkg_thre``), ``pseudo/<split>/<id>.png`` (255 = ignore), ``predictions/<split>/<id>.png``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from wsss.cam import (
    PAR,
    CRFPool,
    cam_to_label,
    crf_label_psa,
    crf_label_two_levels,
    labelled_cam_to_label,
    refine_cams_with_bkg,
)
from wsss.cam.affinity import psa_seed_label
from wsss.cam.crf import psa_crf_scores
from wsss.core.errors import ConfigError, DataError, UsageError
from wsss.data import VOCDataset
from wsss.methods import REFINERS, JobStop, Refiner, register_refiner
from wsss.runs.run import Run, load_run, present_classes
from wsss.utils.io import (
    find_cam_file,
    load_cam_of,
    load_labelled_cam,
    missing_cam_ids,
    per_id_path,
    remove_stale_temps,
    save_cam,
    save_label_png,
    save_labelled_cam,
    save_npy,
)


def _todo(ids: list[str], out_dir: Path, suffix: str, overwrite: bool) -> list[str]:
    """The ids still to write into ``out_dir``; a killed earlier run's temporary files there are removed."""
    remove_stale_temps(out_dir)
    if overwrite:
        return list(ids)
    return [i for i in ids if not per_id_path(out_dir, i, suffix).is_file()]


def _dataset(run: Run, root: str | None, split: str) -> VOCDataset:
    ds = VOCDataset(root or run.cfg.data.root, split)
    if ds.num_classes != run.num_classes:
        raise DataError(
            f"{ds.root}: the dataset has {ds.num_classes} classes but the run was trained with {run.num_classes}"
        )
    return ds


def run_cam(
    run: Run, split: str, *, root: str | None = None, overwrite: bool = False, progress: bool = True,
    bkg_thre: float | None = None, all_classes: bool = False,
) -> Path:  # fmt: skip
    """Write ``cams/<split>/<id>.npz`` and the CAM seeds ``cam_labels/<split>/<id>.png``.

    Only the labelled classes' maps are computed (:meth:`Run.labelled_cam`); ``all_classes`` computes
    every class's map first (the same files, the cost of every class: for benchmarks).

    ``bkg_thre``: the seeds' background level (default ``cam.bkg_thre``; ``wsss sweep-bkg`` finds the
    best on a split). Given, every seed is rewritten at that level, from the saved CAM where there is
    one (no network pass; the saved CAMs are float16) and from a new CAM otherwise.
    """
    ds = _dataset(run, root, split)
    out, seeds = run.dir / "cams" / split, run.dir / "cam_labels" / split
    thre = run.cfg.cam.bkg_thre if bkg_thre is None else float(bkg_thre)
    todo = list(ds.ids) if bkg_thre is not None else _todo(ds.ids, seeds, ".png", overwrite)
    remove_stale_temps(out)  # the CAM files beside the seeds
    for id in tqdm(todo, desc=f"cam {split}", disable=not progress):
        labels = ds.labels(id)
        saved = find_cam_file(out, id) if bkg_thre is not None and not overwrite else None
        reuse = saved is not None
        if all_classes and not reuse:
            full = run.cam(ds.load_image(id), labels, all_classes=True)
            save_cam(out, id, full, labels)
            _, seed = cam_to_label(torch.from_numpy(full)[None], torch.from_numpy(labels)[None], bkg_thre=thre)
            save_label_png(per_id_path(seeds, id, ".png"), seed[0].numpy())
            continue
        if reuse:
            keys, cam = load_labelled_cam(saved)
        else:
            try:
                keys, cam = run.labelled_cam(ds.load_image(id), labels)
            except JobStop as e:  # the method ends the job here (CLIP-ES quirk_unlabelled_stops_worker)
                left = len(todo) - todo.index(id)
                msg = f"{id}: {e}; {left} ids of {split} get no CAM (quirk_unlabelled_stops_worker)"
                warnings.warn(msg, stacklevel=2)
                break
            save_labelled_cam(out, id, keys, cam)
        save_label_png(per_id_path(seeds, id, ".png"), labelled_seed(keys, cam, thre))
    return seeds


def labelled_seed(keys: np.ndarray, cam: np.ndarray, bkg_thre: float) -> np.ndarray:
    """The CAM seed (methods.md 2.6) of the labelled classes' maps (``keys`` 0-based, ascending;
    ``cam`` (k, H, W)): the label map of the full CAM, whose other channels are zero."""
    seed = labelled_cam_to_label(torch.from_numpy(cam)[None], torch.from_numpy(keys), bkg_thre=bkg_thre)
    return seed[0].numpy()


@dataclass
class PseudoJob:
    """The inputs of one ``wsss pseudo`` job: the run, the split's dataset and its saved CAMs."""

    run: Run
    ds: VOCDataset
    cams: Path  # RUN/cams/<split>

    def cam(self, id: str) -> np.ndarray:
        return load_cam_of(self.cams, id, self.ds.num_classes - 1)

    def load_run(self, run_dir: str | Path) -> Run:
        """Another run (an affinity network's), on this run's device."""
        return load_run(run_dir, device=str(self.run.device))

    def require_cams(self, ids: Sequence[str], have: Callable[[str], bool] | None = None, also: str = "") -> None:
        """Every id has a saved CAM, or ``have(id)`` (another source of its maps, named by ``also``)."""
        missing = [i for i in missing_cam_ids(self.cams, ids) if have is None or not have(i)]
        if missing:
            raise DataError(
                f"{self.cams}: no CAM for {len(missing)} ids (e.g. {missing[0]}){also}; "
                f"run `wsss cam {self.run.dir} --split {self.ds.split}`"
            )


@register_refiner("none")
def _refine_none(job: PseudoJob, ids: Sequence[str], **_: Any) -> Refiner:
    """High/low thresholds of the CAM, 255 between (methods.md 2.6)."""
    job.require_cams(ids)
    c = job.run.cfg.cam

    def refine(id: str, image: np.ndarray, labels: np.ndarray) -> np.ndarray:
        cam = job.cam(id)
        h, w = cam.shape[1:]
        _, label = cam_to_label(
            torch.from_numpy(cam)[None], torch.from_numpy(labels)[None], img_box=[[0, h, 0, w]], ignore_mid=True,
            bkg_thre=c.bkg_thre, high_thre=c.high_thre, low_thre=c.low_thre,
        )  # fmt: skip
        return label[0].cpu().numpy()

    return refine


@register_refiner("par")
def _refine_par(job: PseudoJob, ids: Sequence[str], **_: Any) -> Refiner:
    """PAR with two background levels on the full image (methods.md 2.8)."""
    job.require_cams(ids)
    c = job.run.cfg.cam
    par = PAR(dilations=c.par.dilations, num_iter=c.par.num_iter)

    def refine(id: str, image: np.ndarray, labels: np.ndarray) -> np.ndarray:
        image01 = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
        label = refine_cams_with_bkg(
            par, image01, torch.from_numpy(job.cam(id))[None], torch.from_numpy(labels)[None],
            high_thre=c.high_thre, low_thre=c.low_thre, down_scale=c.par_down_scale,
        )  # fmt: skip
        return label[0].cpu().numpy()

    return refine


@register_refiner("crf")
def _refine_crf(job: PseudoJob, ids: Sequence[str], **_: Any) -> Refiner:
    """ToCo's label CRF: two CRFs with background 0.7 / 0.25, combined as in methods.md 2.8."""
    job.require_cams(ids)
    c = job.run.cfg.cam
    method = job.run.method
    if method.own_crf:  # CLIP-ES: its own CRF of the saved labelled maps
        return lambda id, image, labels: method.crf_pseudo_label(image, *load_labelled_cam(find_cam_file(job.cams, id)))
    return lambda id, image, labels: crf_label_two_levels(image, job.cam(id), labels, c.high_thre, c.low_thre)


@register_refiner("psa")
def _refine_psa(job: PseudoJob, ids: Sequence[str], **_: Any) -> Refiner:
    """PSA's AffinityNet seeds: two CRFs with background (1 - max cam)^alpha, ``cam.psa_alphas`` (5.6-5.7).

    The CRF reads ``Method.crf_cam`` of the CAM (SC-CAM's ``quirk_binarised_crf_cam``: the {0, 255} heatmap).
    ``cam.psa_seed_stride`` > 1: the label of the la / ha scores average-pooled by that stride (PSA's
    loader), block-constant at the image size (``cam.affinity.psa_seed_label``).
    """
    job.require_cams(ids)
    c = job.run.cfg.cam
    alphas = tuple(c.psa_alphas)
    crf_cam = job.run.method.crf_cam

    def refine(id: str, image: np.ndarray, labels: np.ndarray) -> np.ndarray:
        cam = crf_cam(job.cam(id))
        if c.psa_seed_stride > 1 and np.any(labels > 0.5):
            ids_, (la, ha) = psa_crf_scores(image, cam, labels, alphas)
            seed = psa_seed_label(torch.from_numpy(la), torch.from_numpy(ha), torch.from_numpy(ids_), c.psa_seed_stride)
            return seed.numpy()
        return crf_label_psa(image, cam, labels, alphas)

    return refine


def run_pseudo(
    run: Run, split: str, *, refine: str = "par", root: str | None = None, overwrite: bool = False,
    progress: bool = True, affinity_run: Run | str | Path | None = None, saliency: str | Path | None = None,
) -> Path:  # fmt: skip
    """Pseudo labels from the saved CAMs (``wsss cam`` first): ``pseudo/<split>/<id>.png``.

    ``refine`` names a refiner of ``wsss.methods.REFINERS``: here "none" (high/low thresholds, 255
    between), "par" (methods.md 2.8 on the full image), "crf" (ToCo's label CRF), "psa" (PSA's
    AffinityNet seeds); a method's module registers its own: "affinity" (PSA's random walk with the
    affinity network of ``affinity_run``, a run of method ``affinitynet`` or its directory, 5.7),
    "rca" (RCA's CRF proxy labels, 4.8, with ``saliency``).
    """
    if refine not in REFINERS:
        raise ConfigError(f"refine must be one of {', '.join(REFINERS)}, got {refine!r}")
    ds = _dataset(run, root, split)
    out = run.dir / "pseudo" / split
    todo = _todo(ds.ids, out, ".png", overwrite)
    job = PseudoJob(run, ds, run.dir / "cams" / split)
    label_of = REFINERS[refine](job, todo, affinity_run=affinity_run, saliency=saliency)
    for id in tqdm(todo, desc=f"pseudo {refine} {split}", disable=not progress):
        save_label_png(per_id_path(out, id, ".png"), label_of(id, ds.load_image(id), ds.labels(id)))
    return out


def run_predict(
    run: Run, split: str, *, root: str | None = None, crf: bool = False, scales: Sequence[float] | None = None,
    overwrite: bool = False, progress: bool = True, save_probs: bool = False,
) -> Path:  # fmt: skip
    """Segmentation masks ``predictions/<split>/<id>.png`` (``predictions_crf`` with ``crf``).

    Nothing but the PNGs is written unless ``save_probs``: then also ``probs/<split>/<id>.npy``, the
    fused softmax as float16 (C, H, W). Off by default: on COCO that is terabytes (methods.md 3.10).
    """
    if not run.method.has_seg_head:
        raise UsageError(
            f"{run.dir}: this run (method {run.cfg.method}, model.decoder {run.cfg.model.decoder}) has no "
            "segmentation head to predict with; use `wsss cam` and `wsss pseudo`, or train a seg stage"
        )
    ds = VOCDataset(root or run.cfg.data.root, split)
    out = run.dir / ("predictions_crf" if crf else "predictions") / split
    probs_dir = run.dir / "probs" / split
    todo = _todo(ds.ids, out, ".png", overwrite)
    bar = tqdm(total=len(todo), desc=f"predict {split}", disable=not progress)

    def prob_of(id: str, image: np.ndarray) -> np.ndarray:
        prob = run.seg_prob(image, scales)
        if save_probs:
            save_npy(per_id_path(probs_dir, id, ".npy"), prob.astype(np.float16))
        return prob

    if not crf:
        for id in todo:
            save_label_png(per_id_path(out, id, ".png"), prob_of(id, ds.load_image(id)).argmax(0))
            bar.update(1)
        bar.close()
        return out

    def items() -> Iterator[tuple[str, np.ndarray, np.ndarray, list[int]]]:
        for id in todo:
            image = ds.load_image(id)
            prob = prob_of(id, image)
            yield id, image, prob, present_classes(prob)

    with CRFPool(run.cfg.infer.crf_workers, params=run.cfg.infer.crf) as pool:
        for id, label in pool.imap(items()):
            save_label_png(per_id_path(out, id, ".png"), label)
            bar.update(1)
    bar.close()
    return out
