"""The separate segmentation stage of multi-stage WSSS: DeepLab trained on pseudo labels.

RCA and SC-CAM train DeepLab-v2 ResNet-101 (kazuto1011/deeplab-pytorch) on their pseudo labels
(docs/methods/rca.md#pipeline, docs/methods/sccam.md#rounds,
docs/methods/deeplab.md#deeplab); the same stage runs on top of any method's ``wsss pseudo`` or
``wsss cam`` output. It reads ``data.pseudo_dir`` (``<id>.png``, 255 = ignore) and the user's own masks where
``data.true_masks`` has one (they win; ``data.true_mask_weight`` weights their pixels), transformed with
the image by the shared augmentation, and has no CAM: validation and ``wsss predict`` use the
segmentation only (multi-scale + flip, optional DenseCRF, ``runs/jobs.py``).

The package: the method here, its networks (``model.py``: DeepLab-v2 and v3+) and PMM's pretended
under-fitting (``pus.py``).

Loss term ``seg``: cross entropy ignoring 255; ``options.pus`` applies PMM's pretended under-fitting to it (ICCV
2021, ``pus.pretended_underfitting``), off in the presets. kazuto1011's ``DeepLabV2_ResNet101_MSC`` also trains
on the input at scales 0.75 and 0.5 and on the max of the three logits, summing the four losses, with
the labels resized (nearest) to each logit size: ``options.msc_scales`` and
``options.target_at_logit_res``. Optimiser groups (kazuto1011 ``get_params``, the caffe lr_mult):
backbone 1x lr, classifier weights ``train.head_lr_mult`` (10x), classifier biases 2x that (20x) without
weight decay; the backbone BatchNorm is frozen (``options.freeze_bn``).

Loss term ``consistency`` (off unless ``loss.weights.consistency`` > 0; docs/methods/deeplab.md#consistency): a mean
teacher (``teacher``, an EMA of ``net`` updated after each optimiser step) labels photos the stage does not learn
from (``options.consistency_splits``, ``views.DeepLabViews``; their masks are never read) where it is confident,
and the student learns those labels on a photometrically changed view of the same crop.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wsss.cam.labels import box_mask, scale_img_box
from wsss.core.config import (
    FRACTION,
    NON_NEGATIVE_NUMBER,
    POSITIVE,
    POSITIVE_INTS,
    POSITIVE_NUMBER,
    SHARE,
    Config,
    setting,
)
from wsss.core.errors import ConfigError, ConfigWarning, UsageError
from wsss.data.transforms import TrainAugment
from wsss.losses.seg import generalized_ce_pixels
from wsss.methods.base import attach_pseudo_labels, backbone_from_config
from wsss.methods.contract import CamDeclaration, Method, TrainContext, register_method
from wsss.methods.deeplab.model import DeepLabV2, DeepLabV3Plus
from wsss.methods.deeplab.pus import PUS_MODES, PretendedUnderfitting
from wsss.methods.deeplab.views import BOX, STRONG, WEAK, DeepLabViews
from wsss.methods.ema import ema_update, frozen_copy, mean_teacher_decay
from wsss.utils.io import IGNORE

CONSISTENCY = "consistency"  # the loss term of the mean teacher (loss.weights.consistency turns it on)


def seg_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    target_at_logit_res: bool = True,
    ignore_index: int = IGNORE,
    pus: PretendedUnderfitting | None = None,
    weight: torch.Tensor | None = None,
    gce_q: float | None = None,
) -> torch.Tensor:
    """Cross entropy of (B, C, h, w) logits against a (B, H, W) label map, ``ignore_index`` ignored.

    ``target_at_logit_res``: the labels are resized to the logits with nearest (pixel-centre)
    sampling, as kazuto1011's ``resize_labels``; otherwise the logits are upsampled bilinearly to
    the labels. A batch without any labelled pixel gives a zero loss (not NaN). ``pus``: PMM's pretended
    under-fitting of the per-pixel losses before their mean over the labelled pixels. ``weight``: (B,) weights of
    the samples' pixels (``data.true_mask_weight`` on the photos trained on their own masks): the mean over the
    labelled pixels becomes their weighted mean. ``gce_q``: the generalized cross entropy of that ``q`` per pixel
    instead of the cross entropy (``options.seg_loss: gce``).
    """
    if logits.shape[-2:] != target.shape[-2:]:
        if target_at_logit_res:
            target = F.interpolate(target[:, None].float(), size=logits.shape[-2:], mode="nearest-exact")[:, 0]
        else:
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    target = target.long()
    if not bool((target != ignore_index).any()):
        return logits.sum() * 0.0
    if pus is None and weight is None and gce_q is None:
        return F.cross_entropy(logits, target, ignore_index=ignore_index)
    labelled = target != ignore_index
    if gce_q is None:
        pixel = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")  # 0 where ignored
    else:
        pixel = generalized_ce_pixels(logits, target, gce_q, ignore_index).to(logits.dtype)
    if pus is not None:
        pixel = pus(pixel, labelled)
    if weight is None:
        return pixel.sum() / labelled.sum()
    w = weight.to(pixel.dtype).reshape(-1, *([1] * (pixel.dim() - 1)))
    return (pixel * w).sum() / (labelled * w).sum()


@dataclass
class DeepLabOptions:
    # "v2" (DeepLab-v2: dilated backbone + summed ASPP, the papers) or "v3plus"
    arch: str = setting("v2", choices=("v2", "v3plus"))
    # ASPP dilations: v2 (6, 12, 18, 24) at stride 8; v3+ (6, 12, 18) at 16
    rates: tuple[int, ...] = setting((6, 12, 18, 24), **POSITIVE_INTS)
    freeze_bn: bool = True  # backbone BatchNorm frozen (kazuto1011 freeze_bn); false to train a backbone from scratch
    # kazuto1011 MSC training: (0.75, 0.5) adds those inputs and the max fusion
    msc_scales: tuple[float, ...] = setting((), **POSITIVE_NUMBER)
    target_at_logit_res: bool = True  # labels resized to the logits (kazuto1011); false: logits upsampled to the labels
    v3_dim: int = setting(256, **POSITIVE)  # v3+ ASPP / decoder width
    # PMM's pretended under-fitting (pus.pretended_underfitting): "" (off, the papers' DeepLab), "clamp",
    # "pow" or "ignore"; from a batch whose mean loss is below pus_beta, each pixel's loss is capped at pus_k.
    # PMM's official configs: clamp, 0.5 / 0.5 on VOC, 0.8 / 0.8 on COCO.
    pus: str = setting("", choices=("", *PUS_MODES), text=f"'' (off) or one of {', '.join(PUS_MODES)}")
    pus_beta: float = setting(0.5, **NON_NEGATIVE_NUMBER)
    pus_k: float = setting(0.5, **NON_NEGATIVE_NUMBER)
    # The mean teacher's consistency term (docs/methods/deeplab.md#consistency), on when loss.weights.consistency
    # is above 0: the splits whose photos it reads (never their masks), e.g. [val] or [train, val]
    consistency_splits: tuple[str, ...] = setting((), pattern=r"[^\s/\\]+", text="a list of split names, e.g. [val]")
    # a pixel counts where the teacher's top probability reaches it (FixMatch's 0.95)
    consistency_threshold: float = setting(0.95, **FRACTION)
    ema_decay: float = setting(0.99, **FRACTION)  # the teacher's decay, after the mean teacher's ramp
    ema_predict: bool = False  # validation and `wsss predict` use the teacher instead of the student
    # the seg term's loss: "ce" (the papers') or "gce", the generalized cross entropy of gce_q, which tolerates noisy
    # labels (docs/methods/deeplab.md#noisy-labels)
    seg_loss: str = setting("ce", choices=("ce", "gce"))
    gce_q: float = setting(0.7, **SHARE)


@register_method
class DeepLab(Method):
    name = "deeplab"
    Options = DeepLabOptions
    cams = CamDeclaration(source="none")  # validation and inference score the segmentation only

    @classmethod
    def tiny_overrides(cls) -> tuple[str, dict[str, object]]:
        """Two steps in seconds on the CPU (the contract test; ``{root}``: the synthetic dataset)."""
        return "configs/deeplab/synthetic_cpu.yaml", {
            "model.backbone_kwargs": "{channels: [8, 16, 16, 32], stem_width: 8}",
            "data.pseudo_dir": "{root}/SegmentationClass",
        }

    def __init__(self, cfg: Config, classes: Sequence[str]):
        super().__init__(cfg, classes)
        num_classes = self.num_classes
        o, m = self.options, cfg.model
        if o.arch == "v2":
            self.net: nn.Module = DeepLabV2(backbone_from_config(m), num_classes, o.rates)
            self._backbone: nn.Module = self.net.backbone
            self._heads: list[nn.Module] = [self.net.classifier]
        elif o.arch == "v3plus":
            self.net = DeepLabV3Plus(
                m.backbone,
                num_classes,
                pretrained=m.pretrained,
                output_stride=m.output_stride,
                rates=o.rates,
                dim=o.v3_dim,
                **m.backbone_kwargs,
            )
            self._backbone = self.net.net
            self._heads = [*self.net.head_modules(), self.net.classifier]
        else:
            raise UsageError(f"options.arch must be 'v2' or 'v3plus', got {o.arch!r}")
        if o.freeze_bn:
            self.keep_batchnorm_frozen(self._backbone)
        self.pus = PretendedUnderfitting(o.pus, o.pus_beta, o.pus_k) if o.pus else None
        self.consistency = cfg.loss.weights.get(CONSISTENCY, 0) > 0
        if self.consistency and not o.consistency_splits:
            raise ConfigError(
                "loss.weights.consistency is on and options.consistency_splits names no split: name the photos of the"
                " term, e.g. options.consistency_splits=[val]"
            )
        if o.ema_predict and not self.consistency:
            raise ConfigError(
                "options.ema_predict needs the teacher of the consistency term: set loss.weights.consistency"
            )
        # the mean teacher: no gradient, always in eval mode; a submodule, so that last.pt saves and resumes it
        self.teacher: nn.Module | None = frozen_copy(self.net).eval() if self.consistency else None

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        head = [p for mod in self._heads for p in mod.parameters()]
        return {
            "backbone": [p for p in self._backbone.parameters() if p.requires_grad],
            "head": [p for p in head if p.ndim > 1],
            "head_bias": [p for p in head if p.ndim <= 1],
        }

    def param_group_options(self) -> dict[str, dict[str, float]]:
        mult = self.cfg.train.head_lr_mult
        return {
            "backbone": {"lr_mult": 1.0},
            "head": {"lr_mult": mult},
            "head_bias": {"lr_mult": 2 * mult, "weight_decay": 0.0},
        }

    def on_train_start(self, ctx: TrainContext) -> None:
        attach_pseudo_labels(ctx, self.cfg, self.name)

    def train(self, mode: bool = True) -> DeepLab:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # its averaged BatchNorm statistics, no dropout
        return self

    def train_transform_views(self) -> DeepLabViews | None:
        """The photos of the consistency term, when it is on (``views.DeepLabViews``)."""
        o, d = self.options, self.cfg.data
        if not self.consistency:
            if o.consistency_splits:
                warnings.warn(
                    ConfigWarning(
                        "options.consistency_splits is set but loss.weights.consistency is not: no consistency term"
                    ),
                    stacklevel=2,
                )
            return None
        weak = TrainAugment(d.crop_size, scale_range=d.scale_range, hflip=d.hflip)  # the geometry of the crops only
        return DeepLabViews(d.root, o.consistency_splits, weak)

    def after_step(self, step: int) -> None:
        if self.teacher is not None:
            ema_update(self.teacher, self.net, mean_teacher_decay(self.options.ema_decay, step + 1), buffers=True)

    def consistency_loss(self, strong_logits: torch.Tensor, weak: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
        """Cross entropy of the student's logits on the strong views against the teacher's argmax on the weak views
        (the same crops), over the pixels of photo (not padding) where the teacher's top probability reaches
        ``options.consistency_threshold``; 0 (not NaN) where there is none."""
        assert self.teacher is not None
        with torch.no_grad():
            conf, label = self.teacher(weak).float().softmax(1).max(1)
            inside = box_mask(scale_img_box(box, weak.shape[-2:], conf.shape[-2:]), conf.shape[-2:])
            label = label.masked_fill((conf < self.options.consistency_threshold) | ~inside, IGNORE)
        return seg_cross_entropy(strong_logits.float(), label)

    def training_step(self, batch: dict[str, Any], step: int, active: set[str]) -> dict[str, torch.Tensor]:
        images, target = batch["image"], batch.get("target")
        if target is None:
            raise RuntimeError("deeplab: the batch has no 'target' (set data.pseudo_dir)")
        unlabelled = CONSISTENCY in active
        if unlabelled and STRONG not in batch:
            raise RuntimeError(f"deeplab: the batch has no {STRONG!r} (the views of options.consistency_splits)")
        if unlabelled:  # one forward of both: BatchNorm layers that learn see one batch, as FixMatch's
            logits, strong_logits = self.net(torch.cat([images, batch[STRONG]])).split(
                [len(images), len(batch[STRONG])]
            )
        else:
            logits = self.net(images)
        outs = [logits]
        if self.options.msc_scales:
            pyramid = [
                self.net(F.interpolate(images, scale_factor=s, mode="bilinear", align_corners=False))
                for s in self.options.msc_scales
            ]
            up = [F.interpolate(p, size=logits.shape[-2:], mode="bilinear", align_corners=False) for p in pyramid]
            outs += pyramid + [torch.stack([logits, *up]).max(dim=0).values]
        at_logits, weight = self.options.target_at_logit_res, batch.get("target_weight")
        gce_q = self.options.gce_q if self.options.seg_loss == "gce" else None
        terms = {
            "seg": sum(
                seg_cross_entropy(o, target, target_at_logit_res=at_logits, pus=self.pus, weight=weight, gce_q=gce_q)
                for o in outs
            )
        }
        if unlabelled:
            terms[CONSISTENCY] = self.consistency_loss(strong_logits, batch[WEAK], batch[BOX])
        return terms

    def seg_logits(self, images: torch.Tensor) -> torch.Tensor:
        if self.options.ema_predict and self.teacher is not None:
            return self.teacher(images)
        return self.net(images)
