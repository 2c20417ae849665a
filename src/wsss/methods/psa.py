"""PSA's building blocks that its lineage shares (AffinityNet and SC-CAM): the four parameter groups of its
``PolyOptimizer`` (docs/methods/sccam.md#training, docs/methods/affinitynet.md#train-aff), and the options of
PSA's seeds that `wsss pseudo --refine psa` reads from a CAM run."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class PSASeedOptions:
    """PSA's AffinityNet seeds made from a run's CAMs by `wsss pseudo RUN --refine psa`
    (docs/methods/affinitynet.md#psa-seeds): options of the methods whose CAMs feed PSA's AffinityNet in the
    shipped routes (the CAM baseline, SC-CAM), which derive their ``Options`` from this class. The CAMs of any
    other method get these defaults."""

    # background (1 - max cam)^alpha of the confident-foreground ("la") and confident-background ("ha") CRF maps
    # (PSA: 4 and 32); `--levels HIGH/LOW` replaces them for one job (``cam.affinity.alpha_for_level``)
    psa_alphas: tuple[float, float] = (4.0, 32.0)
    # PSA's seed resolution: its AffinityNet loader average-pools the la / ha CRF score maps by 8 and takes the
    # argmax there (golden psa_aff_labels.npz; ``cam.affinity.psa_seed_grid``); `--refine psa` then writes that
    # grid label, block-constant at the image size (padding -> 255). 1: the label of the full-resolution maps.
    psa_seed_stride: int = 1


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
