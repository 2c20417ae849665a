"""PSA's building blocks that its lineage shares (AffinityNet and SC-CAM): the four parameter groups of its
``PolyOptimizer`` (docs/methods/sccam.md#training, docs/methods/affinitynet.md#train-aff). The options of PSA's
seeds, which `wsss pseudo --refine psa` reads from any CAM run, are ``wsss.cam.affinity.PSASeedOptions``."""

from __future__ import annotations

from torch import nn


def psa_param_groups(backbone: nn.Module, heads: list[nn.Module]) -> dict[str, list[nn.Parameter]]:
    """PSA's four groups (docs/methods/sccam.md#training,
    docs/methods/affinitynet.md#train-aff): weights / biases (ndim <= 1) of the backbone and of the heads;
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
    (affinitynet.md#train-aff)."""
    return {
        "backbone": {"lr_mult": 1.0},
        "backbone_bias": {"lr_mult": 2.0, "weight_decay": 0.0},
        "head": {"lr_mult": head_lr_mult},
        "head_bias": {"lr_mult": 2.0 * head_lr_mult, "weight_decay": 0.0},
    }
