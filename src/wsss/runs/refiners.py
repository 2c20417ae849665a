"""The generic refiners of ``wsss pseudo --refine``, which every run with CAMs accepts: "none" (high/low
thresholds, 255 between), "par" (docs/methods/seco.md#pseudo-label on the full image), "crf" (the method's
label CRF, ``Method.crf_refiner``: ToCo's unless the method has its own), "agree" (PAR's label where the CAM's
thresholds and the CRF say the same, 255 elsewhere) and "psa" (PSA's AffinityNet seeds,
docs/methods/affinitynet.md#psa-seeds). A method's package registers its own (``affinity``, ``rca``,
``excel``); ``wsss.methods.refiners_of`` says which a run accepts.

A refiner factory ``(job, ids, **its options) -> refine(id, image, labels)`` reads the job's saved CAMs
(``wsss.runs.jobs.PseudoJob``); a CPU-bound label is returned as a :class:`~wsss.methods.PoolCall` that the
job's worker pool runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from wsss.cam import PAR, cam_to_label, crf_label_psa, refine_cams_with_bkg
from wsss.cam.affinity import PSASeedOptions, alpha_for_level, psa_seed_label
from wsss.cam.crf import psa_crf_scores
from wsss.methods import PoolCall, RefineJob, Refiner, register_refiner

# A refiner that makes its label in this process, never a PoolCall ("agree" combines such labels itself)
InProcessRefiner = Callable[[str, np.ndarray, np.ndarray], np.ndarray]


@register_refiner("none")
def refine_none(job: RefineJob, ids: Sequence[str]) -> InProcessRefiner:
    """High/low thresholds of the CAM, 255 between (docs/methods/seco.md#cam2label)."""
    job.require_cams(ids)
    c = job.run.cfg.cam

    def refine(id: str, image: np.ndarray, labels: np.ndarray) -> np.ndarray:
        cam = job.cam(id)
        h, w = cam.shape[1:]
        _, label = cam_to_label(
            torch.from_numpy(cam)[None],
            torch.from_numpy(labels)[None],
            img_box=[[0, h, 0, w]],
            ignore_mid=True,
            bkg_thre=c.bkg_thre,
            high_thre=c.high_thre,
            low_thre=c.low_thre,
        )
        return label[0].cpu().numpy()

    return refine


@register_refiner("par")
def refine_par(job: RefineJob, ids: Sequence[str]) -> InProcessRefiner:
    """PAR with two background levels on the full image (docs/methods/seco.md#pseudo-label)."""
    job.require_cams(ids)
    c = job.run.cfg.cam
    par = PAR(dilations=c.par.dilations, num_iter=c.par.num_iter)
    device = job.run.device  # the run's (`--device`): on a GPU, PAR there rather than on one CPU core

    def refine(id: str, image: np.ndarray, labels: np.ndarray) -> np.ndarray:
        image01 = torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float() / 255.0
        label = refine_cams_with_bkg(
            par,
            image01,
            torch.from_numpy(job.cam(id)).to(device)[None],
            torch.from_numpy(labels)[None],
            high_thre=c.high_thre,
            low_thre=c.low_thre,
            down_scale=c.par_down_scale,
        )
        return label[0].cpu().numpy()

    return refine


@register_refiner("crf")
def refine_crf(job: RefineJob, ids: Sequence[str]) -> Refiner:
    """The run's method's label CRF (``Method.crf_refiner``): ToCo's two CRFs with background ``cam.high_thre`` /
    ``low_thre`` combined as in docs/methods/seco.md#pseudo-label, unless the method has a CRF of its own."""
    job.require_cams(ids)
    return job.run.method.crf_refiner(job)


@register_refiner("agree")
def refine_agree(job: RefineJob, ids: Sequence[str]) -> Refiner:
    """Labels that abstain: PAR's label (``par``) at each pixel where the CAM's own label (``none``) and the CRF's
    (``crf``) at the same levels agree with it, 255 where any of the three differs or is undecided; the stage then
    learns from the pixels its refiners are sure of (docs/getting-started.md, The commands)."""
    par, cam, crf = refine_par(job, ids), refine_none(job, ids), refine_crf(job, ids)

    def refine(id: str, image: np.ndarray, labels: np.ndarray) -> np.ndarray | PoolCall:
        sure = (par(id, image, labels), cam(id, image, labels))
        made = crf(id, image, labels)
        if isinstance(made, PoolCall):  # the CRF in the job's worker pool, the agreement after it there too
            return PoolCall(agreed_label, (made.fn, made.args, *sure))
        return agreement(made, *sure)

    return refine


def agreed_label(fn: Callable[..., np.ndarray], args: tuple, *labels: np.ndarray) -> np.ndarray:
    """``fn(*args)``'s label (a CRF's, in a worker) agreed with ``labels`` (:func:`agreement`); module-level, for
    the worker pool."""
    return agreement(fn(*args), *labels)


def agreement(first: np.ndarray, *others: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """``first``'s label where every map of ``others`` holds the same class, ``ignore_index`` elsewhere."""
    out = np.asarray(first).copy()
    for other in others:
        out[np.asarray(other) != out] = ignore_index
    return out


@register_refiner("psa")
def refine_psa(job: RefineJob, ids: Sequence[str]) -> Refiner:
    """PSA's AffinityNet seeds: two CRFs with background (1 - max cam)^alpha, ``options.psa_alphas``
    (docs/methods/affinitynet.md#psa-seeds),
    or with ``--levels HIGH/LOW`` the alphas that put the boundaries at those CAM values (``alpha_for_level``).

    The CRF reads ``Method.crf_cam`` of the CAM (SC-CAM's ``quirk_binarised_crf_cam``: the {0, 255} heatmap).
    ``options.psa_seed_stride`` > 1: the label of the la / ha scores average-pooled by that stride (PSA's
    loader), block-constant at the image size (``cam.affinity.psa_seed_label``). Both are ``PSASeedOptions`` of
    the CAM run's method (its defaults for a method without them).
    """
    job.require_cams(ids)
    c = job.run.method.options if isinstance(job.run.method.options, PSASeedOptions) else PSASeedOptions()
    if job.levels:
        alphas = (alpha_for_level(job.levels[0]), alpha_for_level(job.levels[1]))
    else:
        alphas = (c.psa_alphas[0], c.psa_alphas[1])
    crf_cam = job.run.method.crf_cam

    def refine(id: str, image: np.ndarray, labels: np.ndarray) -> PoolCall:
        cam = crf_cam(job.cam(id))
        return PoolCall(psa_label, (image, cam, labels, alphas, c.psa_seed_stride))

    return refine


def psa_label(
    image: np.ndarray, cam: np.ndarray, labels: np.ndarray, alphas: tuple[float, float], seed_stride: int
) -> np.ndarray:
    """``--refine psa``'s label of one image (``refine_psa``); module-level, for the worker pool."""
    if seed_stride > 1 and np.any(labels > 0.5):
        ids_, (la, ha) = psa_crf_scores(image, cam, labels, alphas)
        return psa_seed_label(torch.from_numpy(la), torch.from_numpy(ha), torch.from_numpy(ids_), seed_stride).numpy()
    return crf_label_psa(image, cam, labels, alphas)
