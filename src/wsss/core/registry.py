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
- ``on_train_start(ctx)`` runs once before the first step (after a resume), with a ``TrainContext``:
  the run directory, step, device, datasets, the optimiser and a save hook, never the trainer
  itself; ``on_epoch_start(epoch)`` when the data stream enters an epoch
  (RCA's per-epoch centroid refresh); ``lr_factor(epoch)`` a per-epoch LR rule that the engine applies.
- A method whose training is not one run of the loop (SC-CAM's rounds) sets ``train_driver``: the
  name of a driver in ``wsss.engine.rounds.DRIVERS`` that ``wsss train`` calls instead of one ``Trainer``.
- ``cam_maps(images)`` returns (cam, cam_aux) before any normalisation, for multi-scale fusion.
- ``seg_logits(images)`` returns (B, C, h, w) segmentation logits at the network's resolution.
- ``after_step(step)`` runs after each optimiser step (EMA teachers, queues...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from wsss.core.config import Config, from_dict
from wsss.core.errors import UsageError

if TYPE_CHECKING:  # for the annotations only: the data layer sits above the core
    from wsss.data import ClsTrainDataset, VOCDataset

METHODS: dict[str, type[Method]] = {}


@dataclass
class TrainContext:
    """What the engine hands a method before training (``Method.on_train_start``): never the trainer.

    ``train_data`` is what the loop draws its batches from (augmented samples of ``train_set``);
    ``save(name)`` writes a checkpoint ``checkpoints/<name>`` of the run at the current step (every
    process must call it).
    """

    run_dir: Path
    step: int
    device: torch.device
    train_set: VOCDataset
    train_data: ClsTrainDataset
    val_set: VOCDataset | None
    optimizer: torch.optim.Optimizer
    save: Callable[[str], None]


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its ``name`` in configs (``method: <name>``)."""
    METHODS[cls.name] = cls
    return cls


def get_method_class(name: str) -> type[Method]:
    """The registered class of ``name``. The built-in methods register when ``wsss.methods`` is
    imported; ``wsss.methods.get_method_class`` / ``build_method`` do that first."""
    if name not in METHODS:
        raise UsageError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def build_method(cfg: Config, num_classes: int) -> Method:
    return get_method_class(cfg.method)(cfg, num_classes)


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm of ``module`` in eval mode with frozen affine parameters.

    kazuto1011's DeepLab freezes the (COCO/ImageNet-initialised) BatchNorm (``base.freeze_bn()``),
    PSA's ResNet-38 all of its BatchNorm (methods.md 5.2); call again after ``module.train()``.
    """
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)


@dataclass
class NoOptions:
    """This method has no options of its own."""


class Method(nn.Module):
    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    train_driver: ClassVar[str | None] = None  # a key of wsss.engine.rounds.DRIVERS: replaces the single run

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

    def on_train_start(self, ctx: TrainContext) -> None:
        """Called once before the first training step of this process (also after a resume)."""

    def on_epoch_start(self, epoch: int) -> None:
        """Called when the training stream starts epoch ``epoch`` (0-based; also the resumed one)."""

    def lr_factor(self, epoch: int) -> float | None:
        """A per-epoch learning-rate rule on top of the poly schedule: every group's base lr is
        ``train.lr x lr_mult x factor`` from the start of ``epoch`` on (applied by the engine's
        ``EpochLRRule`` hook; RCA's decay, methods.md 4.7). None: no rule (the default)."""
        return None

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
