"""AffinityNet (PSA, Ahn & Kwak, CVPR 2018; docs/methods/affinitynet.md#train-aff): learn pixel affinities from
confident CAM regions, then propagate the CAMs by a random walk (``wsss pseudo RUN --refine affinity
--affinity-run AFFRUN``). SC-CAM refines its CAMs this way; it runs on any run with saved CAMs.

Training data: the images and ``data.pseudo_dir``, a directory of ``<id>.png`` seed labels with
255 = undecided, which goes through the same scale / flip / crop as the image. PSA's seeds are the
la / ha CRF labels (label = la-CRF argmax, la background -> 255, ha background -> 0); the toolkit's
``wsss pseudo RUN --refine crf`` writes the same two-level construction (high / low background,
background only where both agree, 255 between), ``--refine none`` the thresholded CAM. The seed is
resized to the feature grid with nearest (pixel-centre) sampling; PSA average-pools the la / ha
CRF score maps by 8 and takes the argmax there, which needs the score maps rather than a PNG.

Network: any backbone of the toolkit (``backbone_from_config``; PSA's is ResNet-38) and PSA's head:
1x1 convs (no bias) of the auxiliary and final maps, ELU, concatenated, a 1x1 conv, ELU
(``f8_3/f8_4/f8_5 -> f9``; kaiming init, ``f9`` xavier with gain 4). Loss terms ``aff_bg``,
``aff_fg``, ``aff_neg`` (``cam/affinity.py``), weighted 1/4, 1/4, 1/2 in the presets' loss.weights.
Optimiser groups as PSA's ``PolyOptimizer``: backbone weights 1x, backbone biases 2x without weight
decay, head weights ``train.head_lr_mult`` (10x), head biases 2x that (20x, none exist).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsss.cam.affinity import (
    affinity_labels,
    affinity_loss,
    alpha_for_level,
    background_cam,
    pairwise_affinity,
    random_walk_scores,
)
from wsss.core.config import NON_NEGATIVE, NON_NEGATIVE_NUMBER, POSITIVE, POSITIVE_NUMBER, Config, setting
from wsss.core.errors import ConfigError, DataError, UsageError
from wsss.data.transforms import normalize
from wsss.methods.base import attach_pseudo_labels, backbone_from_config
from wsss.methods.contract import (
    CamDeclaration,
    Method,
    RefineJob,
    Refiner,
    TrainContext,
    register_method,
    register_refiner,
)
from wsss.methods.psa import psa_group_options, psa_param_groups


@dataclass
class AffinityOptions:
    radius: int = setting(5, **POSITIVE)  # pairs within this radius on the feature grid (PSA: 5 at 1/8 resolution)
    aux_dim: int = setting(128, **POSITIVE)  # width of the projected auxiliary map (PSA: 64 + 128 from b4 / b5)
    final_dim: int = setting(256, **POSITIVE)  # width of the projected final map (PSA: 256 from conv6)
    out_dim: int = setting(448, **POSITIVE)  # affinity feature width (PSA f9: 448)
    freeze_bn: bool = True  # backbone BatchNorm frozen (PSA's ResNet-38); false for a backbone from scratch
    # Official quirk (PSA): only the interior pixels [:-(r-1), r-1:-(r-1)] of the grid are pair sources,
    # so edge pixels have fewer pairs and some top-row corner pixels none. false: every pixel is a
    # source (the grid is padded; pairs leaving it are dropped), in training and in the random walk.
    quirk_interior_sources: bool = True
    # random-walk background (1 - max cam)^alpha (PSA infer_aff: 16)
    rw_alpha: float = setting(16.0, **NON_NEGATIVE_NUMBER)
    rw_beta: float = setting(8.0, **POSITIVE_NUMBER)  # affinity power (PSA: 8)
    rw_logt: int = setting(8, **NON_NEGATIVE)  # log2 of the random-walk steps: T^(2^logt) by repeated squaring (PSA: 8)
    # image scale of the walk (PSA: 1, VOC images give a ~63x63 grid at stride 8); small images can
    # walk on a finer grid by upsampling the image and its CAM first (the label is at the image size)
    rw_scale: float = setting(1.0, **POSITIVE_NUMBER)


class AffinityHead(nn.Module):
    """PSA's affinity feature head on two backbone levels: ELU(1x1) each, concat, ELU(1x1)."""

    def __init__(self, aux_in: int, final_in: int, aux_dim: int, final_dim: int, out_dim: int):
        super().__init__()
        self.proj_aux = nn.Conv2d(aux_in, aux_dim, 1, bias=False)
        self.proj_final = nn.Conv2d(final_in, final_dim, 1, bias=False)
        self.fuse = nn.Conv2d(aux_dim + final_dim, out_dim, 1, bias=False)
        nn.init.kaiming_normal_(self.proj_aux.weight)
        nn.init.kaiming_normal_(self.proj_final.weight)
        nn.init.xavier_uniform_(self.fuse.weight, gain=4)

    def forward(self, aux: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
        x = torch.cat([F.elu(self.proj_aux(aux)), F.elu(self.proj_final(final))], dim=1)
        return F.elu(self.fuse(x))


@register_method
class AffinityNet(Method):
    name = "affinitynet"
    Options = AffinityOptions
    cams = CamDeclaration(source="none")
    # its module registers `--refine affinity`, which walks the CAMs of any other run: no refiner is for its own
    # runs, which make no CAMs

    @classmethod
    def tiny_overrides(cls) -> tuple[str, dict[str, object]]:
        """Two steps in seconds on the CPU (the contract test; ``{root}``: the synthetic dataset)."""
        return "configs/affinitynet/synthetic_cpu.yaml", {
            "model.backbone_kwargs": "{channels: [8, 16, 16, 32], stem_width: 8}",
            "options.aux_dim": 8,
            "options.final_dim": 8,
            "options.out_dim": 16,
            "data.pseudo_dir": "{root}/SegmentationClass",
        }

    def __init__(self, cfg: Config, classes: Sequence[str]):
        super().__init__(cfg, classes)
        o = self.options
        self.backbone = backbone_from_config(cfg.model)
        self.head = AffinityHead(self.backbone.aux_dim, self.backbone.out_dim, o.aux_dim, o.final_dim, o.out_dim)
        self.stride = int(self.backbone.stride)
        if o.freeze_bn:
            self.keep_batchnorm_frozen(self.backbone)

    @property
    def has_seg_head(self) -> bool:
        return False

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return psa_param_groups(self.backbone, [self.head])

    def param_group_options(self) -> dict[str, dict[str, float]]:
        return psa_group_options(self.cfg.train.head_lr_mult)

    def on_train_start(self, ctx: TrainContext) -> None:
        if ctx.val_set is not None:
            raise ConfigError(
                "affinitynet has no CAM and no segmentation head to validate: set data.val_split='' "
                "(the random walk is scored after `wsss pseudo --refine affinity` with `wsss eval --pseudo`)"
            )
        attach_pseudo_labels(ctx, self.cfg, self.name)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, out_dim, h, w) affinity features at the backbone stride."""
        out = self.backbone(images)
        return self.head(out.aux, out.final)

    def training_step(self, batch: dict[str, Any], step: int, active: set[str]) -> dict[str, torch.Tensor]:
        images, target = batch["image"], batch.get("target")
        if target is None:
            raise RuntimeError("affinitynet: the batch has no 'target' (set data.pseudo_dir)")
        feat = self.features(images)
        grid = F.interpolate(target[:, None].float(), size=feat.shape[-2:], mode="nearest-exact")[:, 0].long()
        o = self.options
        bg, fg, neg = affinity_labels(grid, o.radius, interior_sources=o.quirk_interior_sources)
        aff = pairwise_affinity(feat, o.radius, interior_sources=o.quirk_interior_sources)
        return affinity_loss(aff, bg, fg, neg)

    @torch.no_grad()
    def random_walk_label(
        self, image: np.ndarray, cam: np.ndarray, labels: np.ndarray | None = None, alpha: float | None = None
    ) -> np.ndarray:
        """PSA ``infer_aff.py``: (H, W, 3) uint8 image, (C-1, H, W) CAM in [0, 1] -> (H, W) int64 label.

        ``alpha``: the background's exponent (default ``options.rw_alpha``; ``wsss pseudo --levels`` gives
        ``alpha_for_level`` of the high level, so the walk starts from the calibrated boundary).

        The image is zero-padded (after normalisation) right / bottom to a multiple of the stride,
        the CAM likewise after its background channel is computed; absent classes (``labels``) are zeroed.
        """
        o = self.options
        device = next(self.parameters()).device
        h, w = image.shape[:2]
        if cam.shape[1:] != (h, w):
            raise ValueError(f"CAM size {cam.shape[1:]} differs from the image size {(h, w)}")
        s = self.stride
        x = normalize(image)[None].to(device)
        cam_t = torch.from_numpy(np.asarray(cam, dtype=np.float32)).to(device)
        if labels is not None:
            cam_t = cam_t * torch.as_tensor(np.asarray(labels) > 0.5, dtype=cam_t.dtype, device=device).view(-1, 1, 1)
        full = background_cam(cam_t, o.rw_alpha if alpha is None else alpha)  # PSA: bg first, then zero padding
        sh, sw = h, w
        if o.rw_scale != 1.0:
            sh, sw = max(1, round(h * o.rw_scale)), max(1, round(w * o.rw_scale))
            x = F.interpolate(x, size=(sh, sw), mode="bilinear", align_corners=False)
            full = F.interpolate(full[None], size=(sh, sw), mode="bilinear", align_corners=False)[0]
        ph, pw = -sh % s, -sw % s
        feat = self.features(F.pad(x, (0, pw, 0, ph)))[0]
        scores = random_walk_scores(
            F.pad(full, (0, pw, 0, ph)),
            feat,
            beta=o.rw_beta,
            logt=o.rw_logt,
            radius=o.radius,
            interior_sources=o.quirk_interior_sources,
        )[:, :sh, :sw]
        if (sh, sw) != (h, w):
            scores = F.interpolate(scores[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        return scores.argmax(0).cpu().numpy().astype(np.int64)

    def seg_logits(self, images: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("affinitynet has no segmentation head: use `wsss pseudo RUN --refine affinity`")


@register_refiner("affinity", options=("affinity_run",))
def refine_affinity(job: RefineJob, ids: Sequence[str], *, affinity_run: Any = None) -> Refiner:
    """PSA's random walk of the CAMs with the affinity network of ``affinity_run`` (a loaded run or its
    directory, of method affinitynet; docs/methods/affinitynet.md#random-walk)."""
    run = job.run
    if affinity_run is None:
        raise UsageError("refine 'affinity' needs `--affinity-run AFFRUN`, a run of method affinitynet")
    aff = job.load_run(affinity_run) if isinstance(affinity_run, (str, Path)) else affinity_run
    if not isinstance(aff.method, AffinityNet):
        raise UsageError(f"{aff.dir}: method {aff.cfg.method!r} is not an affinity network (method affinitynet)")
    if aff.num_classes != run.num_classes:
        raise DataError(f"{aff.dir}: trained with {aff.num_classes} classes, {run.dir} with {run.num_classes}")
    job.require_cams(ids)
    walk = aff.method.random_walk_label
    levels = job.levels  # `--levels`: the walk's background crosses the CAM at the high one
    alpha = alpha_for_level(levels[0]) if levels else None
    return lambda id, image, labels: walk(image, job.cam(id), labels, alpha)
