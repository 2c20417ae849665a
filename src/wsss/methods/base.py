"""Building blocks that several methods share: the parameter groups of docs/methods/seco.md#optim and PSA
(docs/methods/multistage.md#train-aff), PSA's seed options, the backbone of a ``ModelConfig``, and the online
pseudo label of ToCo/SeCo (seco.md#cam2label, seco.md#pseudo-label).

The method contract itself (``Method``, ``register_method``) is ``wsss.methods.contract``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from wsss.cam import PAR, cam_to_label, denormalize_image, refine_cams_with_bkg
from wsss.core.config import CamConfig, ModelConfig
from wsss.models.backbones import CNNBackbone, ViTBackbone, create_backbone


def split_backbone_params(backbone: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Backbone parameters without / with "norm" in their name (groups 0 and 1 of docs/methods/seco.md#optim)."""
    plain, norm = [], []
    for name, p in backbone.named_parameters():
        if not p.requires_grad:
            continue
        (norm if "norm" in name else plain).append(p)
    return plain, norm


def psa_param_groups(backbone: nn.Module, heads: list[nn.Module]) -> dict[str, list[nn.Parameter]]:
    """PSA's four groups (docs/methods/sccam.md#training,
    docs/methods/multistage.md#train-aff): weights / biases (ndim <= 1) of the backbone and of the heads;
    frozen parameters are left out."""
    groups: dict[str, list[nn.Parameter]] = {"backbone": [], "backbone_bias": [], "head": [], "head_bias": []}
    for prefix, modules in (("backbone", [backbone]), ("head", heads)):
        for mod in modules:
            for p in mod.parameters():
                if p.requires_grad:
                    groups[prefix if p.ndim > 1 else f"{prefix}_bias"].append(p)
    return groups


def psa_group_options(head_lr_mult: float) -> dict[str, dict[str, float]]:
    """lr x1 / x2 (wd 0) / x``head_lr_mult`` / x2 ``head_lr_mult`` (wd 0): PSA's 1 / 2 / 10 / 20
    (multistage.md#train-aff)."""
    return {
        "backbone": {"lr_mult": 1.0},
        "backbone_bias": {"lr_mult": 2.0, "weight_decay": 0.0},
        "head": {"lr_mult": head_lr_mult},
        "head_bias": {"lr_mult": 2.0 * head_lr_mult, "weight_decay": 0.0},
    }


@dataclass
class PSASeedOptions:
    """PSA's AffinityNet seeds made from a run's CAMs by `wsss pseudo RUN --refine psa`
    (docs/methods/multistage.md#psa-seeds): options of the methods whose CAMs feed PSA's AffinityNet in the
    shipped routes (the CAM baseline, SC-CAM), which derive their ``Options`` from this class. The CAMs of any
    other method get these defaults."""

    # background (1 - max cam)^alpha of the confident-foreground ("la") and confident-background ("ha") CRF maps
    # (PSA: 4 and 32); `--levels HIGH/LOW` replaces them for one job (``cam.affinity.alpha_for_level``)
    psa_alphas: tuple[float, float] = (4.0, 32.0)
    # PSA's seed resolution: its AffinityNet loader average-pools the la / ha CRF score maps by 8 and takes the
    # argmax there (golden psa_aff_labels.npz; ``cam.affinity.psa_seed_grid``); `--refine psa` then writes that
    # grid label, block-constant at the image size (padding -> 255). 1: the label of the full-resolution maps.
    psa_seed_stride: int = 1


def backbone_from_config(m: ModelConfig) -> ViTBackbone | CNNBackbone:
    return create_backbone(
        m.backbone,
        pretrained=m.pretrained,
        aux_layer=m.aux_layer,
        freeze_pos_embed=m.freeze_pos_embed,
        output_stride=m.output_stride,
        **m.backbone_kwargs,
    )


@torch.no_grad()
def online_pseudo_label(
    par: PAR, c: CamConfig, images: torch.Tensor, cam: torch.Tensor, labels: torch.Tensor, img_box: torch.Tensor
) -> torch.Tensor:
    """CAM (B, C-1, H, W) -> valid CAM -> PAR with two background levels (docs/methods/seco.md#pseudo-label)."""
    valid_cam, _ = cam_to_label(
        cam, labels, img_box=img_box, ignore_mid=True, bkg_thre=c.bkg_thre, high_thre=c.high_thre, low_thre=c.low_thre
    )
    return refine_cams_with_bkg(
        par, denormalize_image(images), valid_cam, labels, high_thre=c.high_thre, low_thre=c.low_thre,
        img_box=img_box, down_scale=c.par_down_scale,
    )  # fmt: skip
