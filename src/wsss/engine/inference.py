"""Inference over a trained run: CAMs, pseudo labels, segmentation masks.

Every command streams over the ids of a split, writes each output atomically, and skips ids whose
output already exists, so a killed job continues where it stopped. Nothing per-image is written in
float unless asked (``cams/`` holds float16 CAMs of the labelled classes only).

Layout (interface.md): ``cams/<split>/<id>.npy`` (dict: ``keys`` = 1-based class ids, ``cam`` =
(K, H, W) float16 in [0, 1]), ``cam_labels/<split>/<id>.png`` (the CAM seed: argmax with
``bkg_thre``), ``pseudo/<split>/<id>.png`` (255 = ignore), ``predictions/<split>/<id>.png``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from wsss.cam import (
    PAR,
    CRFParams,
    CRFPool,
    cam_to_label,
    multi_scale_cam,
    multi_scale_logits,
    refine_cams_with_bkg,
)
from wsss.data import VOCDataset
from wsss.engine.checkpoint import load_checkpoint
from wsss.engine.config import Config, load_config
from wsss.engine.trainer import resolve_device
from wsss.engine.validate import prepare_image
from wsss.methods.base import Method, build_method
from wsss.utils.io import DataError, remove_stale_temps, save_label_png, save_npy


@dataclass
class Run:
    """A trained run loaded for inference: ``run.cam(image)``, ``run.predict(image)``."""

    dir: Path
    cfg: Config
    method: Method
    class_names: list[str]
    device: torch.device

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @torch.no_grad()
    def cam(self, image: np.ndarray, labels: np.ndarray | None = None, scales: Sequence[float] | None = None):
        """Multi-scale + flip CAM of an (H, W, 3) uint8 image -> (C-1, H, W) float32 in [0, 1].

        With ``labels`` (multi-hot over the foreground classes), absent classes are zeroed.
        """
        inf = self.cfg.infer
        x = prepare_image(image, inf.cam_input_size, self.device)
        cam, _ = multi_scale_cam(self.method.cam_maps, x, tuple(scales or inf.cam_scales))
        cam = F.interpolate(cam, size=image.shape[:2], mode="bilinear", align_corners=False)[0]
        if labels is not None:
            cam = cam * torch.as_tensor(labels, dtype=cam.dtype, device=cam.device).view(-1, 1, 1)
        return cam.float().cpu().numpy()

    @torch.no_grad()
    def seg_prob(self, image: np.ndarray, scales: Sequence[float] | None = None) -> np.ndarray:
        """Multi-scale + flip segmentation probabilities (C, H, W) float32 (methods.md 2.11 / 3.10)."""
        inf = self.cfg.infer
        x = prepare_image(image, None, self.device)
        logits = multi_scale_logits(
            self.method.seg_logits, x, tuple(scales or inf.scales), image.shape[:2],
            flip_fuse="sum", scale_fuse="max", square_size=inf.square_size,
        )  # fmt: skip
        return torch.softmax(logits[0].float(), dim=0).cpu().numpy()

    def predict(self, image: np.ndarray, *, crf: bool = False, scales: Sequence[float] | None = None) -> np.ndarray:
        """(H, W) int64 label map; with ``crf`` a DenseCRF over the classes that can appear."""
        prob = self.seg_prob(image, scales)
        if not crf:
            return prob.argmax(0)
        from wsss.cam import crf_label

        return crf_label(image, prob, present=present_classes(prob), params=crf_params(self.cfg))


def crf_params(cfg: Config) -> CRFParams:
    c = cfg.infer.crf
    return CRFParams(
        iters=c.iters, pos_xy_std=c.pos_xy_std, pos_w=c.pos_w, bi_xy_std=c.bi_xy_std, bi_rgb_std=c.bi_rgb_std,
        bi_w=c.bi_w,
    )  # fmt: skip


def present_classes(prob: np.ndarray, min_prob: float = 0.05) -> list[int]:
    """Classes the CRF keeps: background, every class that wins the argmax somewhere, and any class
    whose probability reaches ``min_prob`` somewhere. A class below that everywhere cannot win a
    pixel after 10 mean-field steps in practice, and a CRF over all 81 COCO classes costs 3-30x more."""
    top = np.unique(prob.argmax(0))
    strong = np.flatnonzero(prob.reshape(prob.shape[0], -1).max(1) >= min_prob)
    return sorted({0, *top.tolist(), *strong.tolist()})


def load_run(run_dir: str | Path, *, checkpoint: str = "auto", device: str | None = None) -> Run:
    """Load a run directory (``config.yaml`` + ``checkpoints/best.pt`` or ``last.pt``)."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path}: not a run directory (no config.yaml); train one with `wsss train`")
    cfg = load_config(cfg_path)
    ckpts = run_dir / "checkpoints"
    if checkpoint == "auto":
        path = ckpts / "best.pt" if (ckpts / "best.pt").is_file() else ckpts / "last.pt"
    else:
        path = ckpts / f"{checkpoint}.pt" if not checkpoint.endswith(".pt") else Path(checkpoint)
    state = load_checkpoint(path)
    dev = resolve_device(device or cfg.run.device)
    method = build_method(cfg, state["num_classes"])
    method.load_state_dict(state["model"])
    method.to(dev).eval()
    return Run(dir=run_dir, cfg=cfg, method=method, class_names=list(state["class_names"]), device=dev)


def _todo(ids: list[str], out_dir: Path, suffix: str, overwrite: bool) -> list[str]:
    """The ids still to write into ``out_dir``; a killed earlier run's temporary files there are removed."""
    remove_stale_temps(out_dir)
    if overwrite:
        return list(ids)
    return [i for i in ids if not (out_dir / f"{i}{suffix}").is_file()]


def _dataset(run: Run, root: str | None, split: str) -> VOCDataset:
    ds = VOCDataset(root or run.cfg.data.root, split)
    if ds.num_classes != run.num_classes:
        raise DataError(
            f"{ds.root}: the dataset has {ds.num_classes} classes but the run was trained with {run.num_classes}"
        )
    return ds


def run_cam(
    run: Run, split: str, *, root: str | None = None, overwrite: bool = False, progress: bool = True,
    bkg_thre: float | None = None,
) -> Path:  # fmt: skip
    """Write ``cams/<split>/<id>.npy`` and the CAM seeds ``cam_labels/<split>/<id>.png``.

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
        saved = out / f"{id}.npy"
        if bkg_thre is not None and not overwrite and saved.is_file():
            cam = load_cam(saved, len(labels))
        else:
            cam = run.cam(ds.load_image(id), labels)
            keys = np.flatnonzero(labels > 0.5)
            save_npy(saved, {"keys": keys + 1, "cam": cam[keys].astype(np.float16)})
        _, seed = cam_to_label(torch.from_numpy(cam)[None], torch.from_numpy(labels)[None], bkg_thre=thre)
        save_label_png(seeds / f"{id}.png", seed[0].numpy())
    return seeds


def load_cam(path: Path, num_fg: int) -> np.ndarray:
    """A saved CAM file -> (C-1, H, W) float32 with zeros for the absent classes."""
    try:
        d = np.load(path, allow_pickle=True).item()
        keys, cam = np.asarray(d["keys"]), np.asarray(d["cam"], dtype=np.float32)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{path}: cannot read CAM file ({e})") from e
    full = np.zeros((num_fg, *cam.shape[1:]), dtype=np.float32)
    full[keys - 1] = cam
    return full


def run_pseudo(
    run: Run, split: str, *, refine: str = "par", root: str | None = None, overwrite: bool = False,
    progress: bool = True, affinity_run: Run | str | Path | None = None, saliency: str | Path | None = None,
) -> Path:  # fmt: skip
    """Pseudo labels from the saved CAMs (``wsss cam`` first): ``pseudo/<split>/<id>.png``.

    refine "affinity": PSA's random walk of the CAMs with the affinity network of ``affinity_run``
    (a run of method ``affinitynet``, or its directory), methods.md 5.7.

    refine: "none" (high/low thresholds, 255 between), "par" (methods.md 2.8 on the full image),
    "crf" (ToCo's label CRF: two CRFs with background 0.7 / 0.25, combined as in 2.8), "psa" (PSA's
    AffinityNet seeds: two CRFs with background (1 - max cam)^alpha, ``cam.psa_alphas``, 5.6-5.7).
    refine "rca": RCA's CRF proxy labels (methods.md 4.8, ``cam/proxy_labels.py``) from the run's
    accumulated attention (else the saved CAMs), with the background from ``saliency`` (a directory
    of ``<id>.png``) if given, else saliency-free (CAM thresholds + CRF).
    """
    if refine == "affinity":
        return _pseudo_affinity(run, split, affinity_run, root=root, overwrite=overwrite, progress=progress)
    if refine not in ("none", "par", "crf", "psa", "rca"):
        raise ValueError(f"refine must be none, par, crf, psa, affinity or rca, got {refine!r}")
    ds = _dataset(run, root, split)
    c = run.cfg.cam
    cams = run.dir / "cams" / split
    out = run.dir / "pseudo" / split
    par = PAR(dilations=c.par.dilations, num_iter=c.par.num_iter)
    todo = _todo(ds.ids, out, ".png", overwrite)
    if refine == "rca":
        from wsss.cam.proxy_labels import run_rca_proxy_labels

        return run_rca_proxy_labels(run, ds, todo, out, cams=cams, saliency=saliency, progress=progress)
    missing = [i for i in todo if not (cams / f"{i}.npy").is_file()]
    if missing:
        raise DataError(
            f"{cams}: no CAM for {len(missing)} ids (e.g. {missing[0]}); run `wsss cam {run.dir} --split {split}`"
        )

    def items() -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
        for id in todo:
            yield id, ds.load_image(id), load_cam(cams / f"{id}.npy", ds.num_classes - 1), ds.labels(id)

    if refine in ("crf", "psa"):
        from wsss.cam import crf_label_psa, crf_label_two_levels

        alphas = tuple(c.psa_alphas)
        for id, image, cam, labels in tqdm(items(), total=len(todo), desc=f"pseudo {split}", disable=not progress):
            if refine == "crf":
                label = crf_label_two_levels(image, cam, labels, c.high_thre, c.low_thre)
            else:
                label = crf_label_psa(image, cam, labels, alphas)
            save_label_png(out / f"{id}.png", label)
        return out
    for id, image, cam, labels in tqdm(items(), total=len(todo), desc=f"pseudo {split}", disable=not progress):
        cam_t, lab_t = torch.from_numpy(cam)[None], torch.from_numpy(labels)[None]
        if refine == "none":
            h, w = cam.shape[1:]
            _, label = cam_to_label(
                cam_t, lab_t, img_box=[[0, h, 0, w]], ignore_mid=True,
                bkg_thre=c.bkg_thre, high_thre=c.high_thre, low_thre=c.low_thre,
            )  # fmt: skip
        else:
            image01 = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
            label = refine_cams_with_bkg(
                par, image01, cam_t, lab_t, high_thre=c.high_thre, low_thre=c.low_thre,
                down_scale=c.par_down_scale,
            )  # fmt: skip
        save_label_png(out / f"{id}.png", label[0].cpu().numpy())
    return out


def _pseudo_affinity(
    run: Run, split: str, affinity_run: Run | str | Path | None, *, root: str | None, overwrite: bool, progress: bool
) -> Path:
    """``run_pseudo(refine="affinity")``: the random walk of ``run``'s saved CAMs (AffinityNet.random_walk_label)."""
    if affinity_run is None:
        raise ValueError("refine 'affinity' needs `--affinity-run AFFRUN`, a run of method affinitynet")
    aff = affinity_run if isinstance(affinity_run, Run) else load_run(affinity_run, device=str(run.device))
    walk = getattr(aff.method, "random_walk_label", None)
    if walk is None:
        raise ValueError(f"{aff.dir}: method {aff.cfg.method!r} is not an affinity network (method affinitynet)")
    if aff.num_classes != run.num_classes:
        raise DataError(f"{aff.dir}: trained with {aff.num_classes} classes, {run.dir} with {run.num_classes}")
    ds = _dataset(run, root, split)
    cams, out = run.dir / "cams" / split, run.dir / "pseudo" / split
    todo = _todo(ds.ids, out, ".png", overwrite)
    missing = [i for i in todo if not (cams / f"{i}.npy").is_file()]
    if missing:
        raise DataError(
            f"{cams}: no CAM for {len(missing)} ids (e.g. {missing[0]}); run `wsss cam {run.dir} --split {split}`"
        )
    for id in tqdm(todo, desc=f"random walk {split}", disable=not progress):
        label = walk(ds.load_image(id), load_cam(cams / f"{id}.npy", ds.num_classes - 1), ds.labels(id))
        save_label_png(out / f"{id}.png", label)
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
        raise RuntimeError(f"{run.dir}: this model has no segmentation head; use `wsss cam` and `wsss pseudo`")
    ds = VOCDataset(root or run.cfg.data.root, split)
    out = run.dir / ("predictions_crf" if crf else "predictions") / split
    probs_dir = run.dir / "probs" / split
    todo = _todo(ds.ids, out, ".png", overwrite)
    bar = tqdm(total=len(todo), desc=f"predict {split}", disable=not progress)

    def prob_of(id: str, image: np.ndarray) -> np.ndarray:
        prob = run.seg_prob(image, scales)
        if save_probs:
            save_npy(probs_dir / f"{id}.npy", prob.astype(np.float16))
        return prob

    if not crf:
        for id in todo:
            save_label_png(out / f"{id}.png", prob_of(id, ds.load_image(id)).argmax(0))
            bar.update(1)
        bar.close()
        return out

    def items() -> Iterator[tuple[str, np.ndarray, np.ndarray, list[int]]]:
        for id in todo:
            image = ds.load_image(id)
            prob = prob_of(id, image)
            yield id, image, prob, present_classes(prob)

    with CRFPool(run.cfg.infer.crf_workers, params=crf_params(run.cfg)) as pool:
        for id, label in pool.imap(items()):
            save_label_png(out / f"{id}.png", label)
            bar.update(1)
    bar.close()
    return out
