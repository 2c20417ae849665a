"""What a method provides to the engine.

A method owns its networks and says what one training step computes; the engine owns the loop,
optimiser, schedule, loss weighting and staging, checkpoints and logging for all methods.

Contract:
- ``training_step(batch, step, active)`` returns the **unweighted** loss terms by name. ``active``
  is the set of terms the engine will use at this step (``LossConfig`` staging), so a method can skip
  computing the others. The engine multiplies by ``cfg.loss.weights`` and sums.
- ``param_groups()`` names its parameters: "backbone", "backbone_norm" (base lr) and "head",
  "decoder" (``train.head_lr_mult`` x lr), the four PolyWarmupAdamW groups of methods.md 2.10.
  A method with other groups (RCA's, DeepLab's 10x/20x bias groups) overrides
  ``param_group_options()``: per group name, an lr multiplier and optionally its own weight decay.
- ``on_train_start(trainer)`` runs once before the first step (after a resume), with the trainer
  (run directory, datasets, device); ``on_epoch_start(epoch)`` when the data stream enters an epoch
  (RCA's per-epoch centroid refresh).
- A method whose training is not one run of the loop (SC-CAM's rounds) sets ``train_driver``: a
  function ``(cfg, progress) -> dict`` that ``wsss train`` calls instead of one ``Trainer``.
- ``cam_maps(images)`` returns (cam, cam_aux) before any normalisation, for multi-scale fusion.
- ``seg_logits(images)`` returns (B, C, h, w) segmentation logits at the network's resolution.
- ``after_step(step)`` runs after each optimiser step (EMA teachers, queues...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from wsss.cam import PAR, cam_to_label, denormalize_image, refine_cams_with_bkg
from wsss.engine.config import CamConfig, Config, ModelConfig, from_dict
from wsss.models.backbones import CNNBackbone, ViTBackbone, create_backbone
from wsss.models.deeplab import freeze_batchnorm

METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its ``name`` in configs (``method: <name>``)."""
    METHODS[cls.name] = cls
    return cls


def get_method_class(name: str) -> type[Method]:
    import wsss.methods  # noqa: F401  (registers the built-in methods)

    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def build_method(cfg: Config, num_classes: int) -> Method:
    return get_method_class(cfg.method)(cfg, num_classes)


@dataclass
class NoOptions:
    """This method has no options of its own."""


class Method(nn.Module):
    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    train_driver: ClassVar[Any] = None  # (cfg, progress) -> dict: replaces the single Trainer run

    def __init__(self, cfg: Config, num_classes: int):
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes  # including background
        self.options: Any = from_dict(self.Options, cfg.options, "options")
        self._frozen_bn: list[nn.Module] = []  # see keep_batchnorm_frozen()

    # -- training -------------------------------------------------------------------------
    def forward(self, batch: dict[str, Any], step: int, active: set[str]) -> dict[str, torch.Tensor]:
        """``training_step``, called through ``forward`` so that DistributedDataParallel sees it."""
        return self.training_step(batch, step, active)

    def training_step(self, batch: dict[str, Any], step: int, active: set[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """Called after every optimiser step."""

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        raise NotImplementedError

    def keep_batchnorm_frozen(self, module: nn.Module) -> None:
        """Freeze every BatchNorm of ``module`` (eval statistics, no affine grads), and keep it so
        through later ``train()`` calls (DeepLab's and PSA's frozen BN, methods.md 5.2)."""
        self._frozen_bn.append(module)
        freeze_batchnorm(module)

    def train(self, mode: bool = True) -> Method:
        super().train(mode)
        for module in self._frozen_bn:
            freeze_batchnorm(module)
        return self

    def param_group_options(self) -> dict[str, dict[str, float]]:
        """Per parameter group: ``{"lr_mult": x}`` and optionally ``"weight_decay"`` (default: the config's)."""
        head = self.cfg.train.head_lr_mult
        return {
            "backbone": {"lr_mult": 1.0},
            "backbone_norm": {"lr_mult": 1.0},
            "head": {"lr_mult": head},
            "decoder": {"lr_mult": head},
        }

    def on_train_start(self, trainer: Any) -> None:
        """Called once before the first training step of this process (also after a resume)."""

    def on_epoch_start(self, epoch: int) -> None:
        """Called when the training stream starts epoch ``epoch`` (0-based; also the resumed one)."""

    def train_transform_views(self) -> Any:
        """Extra training views the method needs (None: the main crop only)."""
        return None

    # -- inference ------------------------------------------------------------------------
    def cam_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def seg_logits(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def has_seg_head(self) -> bool:
        return True


def split_backbone_params(backbone: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Backbone parameters without / with "norm" in their name (groups 0 and 1 of methods.md 2.10)."""
    plain, norm = [], []
    for name, p in backbone.named_parameters():
        if not p.requires_grad:
            continue
        (norm if "norm" in name else plain).append(p)
    return plain, norm


def psa_param_groups(backbone: nn.Module, heads: list[nn.Module]) -> dict[str, list[nn.Parameter]]:
    """PSA's four groups (methods.md 5.5, 5.7): weights / biases (ndim <= 1) of the backbone and of the heads;
    frozen parameters are left out."""
    groups: dict[str, list[nn.Parameter]] = {"backbone": [], "backbone_bias": [], "head": [], "head_bias": []}
    for prefix, modules in (("backbone", [backbone]), ("head", heads)):
        for mod in modules:
            for p in mod.parameters():
                if p.requires_grad:
                    groups[prefix if p.ndim > 1 else f"{prefix}_bias"].append(p)
    return groups


def psa_group_options(head_lr_mult: float) -> dict[str, dict[str, float]]:
    """lr x1 / x2 (wd 0) / x``head_lr_mult`` / x2 ``head_lr_mult`` (wd 0): PSA's 1 / 2 / 10 / 20 (5.5)."""
    return {
        "backbone": {"lr_mult": 1.0},
        "backbone_bias": {"lr_mult": 2.0, "weight_decay": 0.0},
        "head": {"lr_mult": head_lr_mult},
        "head_bias": {"lr_mult": 2.0 * head_lr_mult, "weight_decay": 0.0},
    }


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
    """CAM (B, C-1, H, W) -> valid CAM -> PAR with two background levels (methods.md 2.6, 2.8)."""
    valid_cam, _ = cam_to_label(
        cam, labels, img_box=img_box, ignore_mid=True, bkg_thre=c.bkg_thre, high_thre=c.high_thre, low_thre=c.low_thre
    )
    return refine_cams_with_bkg(
        par, denormalize_image(images), valid_cam, labels, high_thre=c.high_thre, low_thre=c.low_thre,
        img_box=img_box, down_scale=c.par_down_scale,
    )  # fmt: skip
