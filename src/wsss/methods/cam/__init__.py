"""The plain CAM baseline: a multi-label classifier whose CAMs, refined by PAR, supervise an online
segmentation head. It is SeCo without decomposition, contrast and teachers (and ToCo without PTC
and CTC), so every gain of a method is measured against it on the same data and budget.

Loss terms: ``cls`` and ``aux`` (multilabel soft margin on GMP logits, docs/methods/seco.md#heads),
``seg`` (bg/fg-balanced CE on PAR-refined online pseudo labels, docs/methods/seco.md#pseudo-label and #seg-loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wsss.cam import PAR, CamPasses, labelled_classes, online_pseudo_label
from wsss.cam.affinity import PSASeedOptions
from wsss.core.config import Config, setting
from wsss.losses import balanced_seg_loss
from wsss.methods.base import backbone_from_config, split_backbone_params
from wsss.methods.cam.official_keys import toco_state_from_official
from wsss.methods.contract import Method, register_method
from wsss.methods.imports import ImportLayout, key_mapped, register_import
from wsss.models.decoders import create_decoder
from wsss.models.heads import CAMClassifier
from wsss.models.registry import BackboneOutput


@dataclass
class CAMOptions(PSASeedOptions):
    # CAM that makes the online pseudo labels: "cam" or "aux"
    pseudo_source: str = setting("cam", choices=("cam", "aux"))


@register_method
class CAMBaseline(Method):
    name = "cam"
    Options = CAMOptions

    @classmethod
    def tiny_overrides(cls) -> tuple[str, dict[str, object]]:
        """Two steps in seconds on the CPU (the contract test; ``{root}``: the synthetic dataset)."""
        return "configs/cam/synthetic_cpu.yaml", {
            "model.backbone_kwargs": "{patch_size: 8, depth: 2, embed_dim: 32, num_heads: 2, img_size: 64}",
        }

    def __init__(self, cfg: Config, classes: Sequence[str]):
        super().__init__(cfg, classes)
        num_classes = self.num_classes
        m = cfg.model
        self.backbone = backbone_from_config(m)
        num_fg = num_classes - 1
        self.classifier = CAMClassifier(self.backbone.out_dim, num_fg, m.pooling)
        self.aux_classifier = CAMClassifier(self.backbone.aux_dim, num_fg, m.pooling) if m.aux_classifier else None
        self.decoder = create_decoder(m.decoder, self.backbone.out_dim, num_classes, m.decoder_dim)
        self.par = PAR(dilations=cfg.cam.par.dilations, num_iter=cfg.cam.par.num_iter)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        plain, norm = split_backbone_params(self.backbone)
        heads = list(self.classifier.parameters())
        if self.aux_classifier is not None:
            heads += list(self.aux_classifier.parameters())
        return {
            "backbone": plain,
            "backbone_norm": norm,
            "head": heads,
            "decoder": list(self.decoder.parameters()) if self.decoder is not None else [],
        }

    # -- inference pieces -----------------------------------------------------------------------
    def cam_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._cams(self.backbone(images))

    def class_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(images).final)  # gmp pools the features before the 1x1 conv

    def _cams(self, out: BackboneOutput) -> tuple[torch.Tensor, torch.Tensor]:
        cam = self.classifier.cam(out.final)
        if self.aux_classifier is None:
            return cam, cam
        return cam, self.aux_classifier.cam(out.aux)

    def seg_logits(self, images: torch.Tensor) -> torch.Tensor:
        if self.decoder is None:
            raise RuntimeError("this model has no segmentation head (model.decoder: none)")
        return self.decoder(self.backbone(images).final)

    @property
    def has_seg_head(self) -> bool:
        return self.decoder is not None

    # -- training -------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], step: int, active: set[str]) -> dict[str, torch.Tensor]:
        return self.terms_of_output(self.backbone(batch["image"]), batch, active)

    def terms_of_output(self, out: BackboneOutput, batch: dict[str, Any], active: set[str]) -> dict[str, torch.Tensor]:
        """The loss terms of the backbone's output on ``batch["image"]`` (a subclass adds its own to them)."""
        images, labels = batch["image"], batch["labels"]
        terms = {"cls": F.multilabel_soft_margin_loss(self.classifier(out.final), labels)}
        if self.aux_classifier is not None:
            terms["aux"] = F.multilabel_soft_margin_loss(self.aux_classifier(out.aux), labels)
        if "seg" in active and self.decoder is not None:
            with torch.no_grad():  # the scale-1.0 CAMs of this forward are reused (seco.md#ms-cam)
                unflipped = self._cams(BackboneOutput(out.final.detach(), out.aux.detach(), out.cls.detach()))
            pseudo = self._pseudo_label(images, labels, batch["img_box"], unflipped)
            logits = self.decoder(out.final)
            logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
            terms["seg"] = balanced_seg_loss(logits, pseudo)
        return terms

    @torch.no_grad()
    def _pseudo_label(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        img_box: torch.Tensor,
        unflipped: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Multi-scale CAM (docs/methods/seco.md#ms-cam) -> the online pseudo label (seco.md#pseudo-label)."""
        cam, cam_aux = CamPasses(self.cfg.cam.scales)(  # the pseudo label reads the labelled classes only
            self.cam_maps, images, unflipped=unflipped, classes=labelled_classes(labels)
        )
        source = cam if self.options.pseudo_source == "cam" else cam_aux
        return online_pseudo_label(self.par, self.cfg.cam, images, source, labels, img_box)


# `wsss import toco`: ToCo is our CAM baseline with model.decoder: largefov (its CTC heads only train)
register_import(
    ImportLayout(
        "toco",
        "cam",
        key_mapped(toco_state_from_official, "classifier.conv.weight", official="ToCo"),
        summary="toco: ToCo's official checkpoint (our cam method, model.decoder=largefov)",
    )
)
