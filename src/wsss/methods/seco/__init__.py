"""SeCo: Separate and Conquer (Yang et al., CVPR 2024), on the shared ToCo-lineage pieces.

One training step (docs/methods/seco.md#step; the anchors below are on that page):

1. multi-scale CAM and aux-CAM of the main crop (no grad, #ms-cam);
2. the online pseudo label of the segmentation head: CAM -> valid CAM -> PAR with two background
   levels (#cam2label, #par, #pseudo-label);
3. the decomposition mask (``cam_to_roi_mask``, from the aux-CAM until ``cam2mask``), local patches
   centred on uncertain pixels and their tags (#decompose);
4. the student: classification and aux classification (GMP), ASPP segmentation, the projected class
   tokens of the two global views and the local patches (the queries q);
5. the dual teachers (#networks): the momentum encoder + projection head encode the local patches of
   the teacher view into keys k, which enter the local semantic reservoir (a queue with their tags);
   class prototypes are EMAs of the class tokens of single-class images;
6. the losses (#lil, #lig, #staging): ``cls``, ``aux``, ``ptc`` (#ptc), ``lil`` (local contrast vs the reservoir),
   ``lig`` (global contrast vs the prototypes), ``seg`` (bg/fg-balanced CE), ``reg`` (dense energy),
   with the staged weights of ``loss.weights`` / ``loss.start_iters``.

What we compute differently from the official code, keeping the math: the main crop is encoded
once and serves both the classification branch and the reservoir's first global view (the
official forward encodes it twice; no dropout, so the outputs and gradients are the same); the
DDP "batch shuffle" of the keys is left out (a BatchNorm trick that is the identity for a
LayerNorm ViT); the patch positions are drawn once and used for both q and k patches (#decisions,
S6 and S-extra).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wsss.cam import (
    PAR,
    CamPasses,
    cam_to_label,
    cam_to_roi_mask,
    label_to_aff_mask,
    labelled_classes,
    online_pseudo_label,
)
from wsss.cam.labels import scale_img_box
from wsss.core.config import (
    AREA_RANGE,
    FRACTION,
    NON_NEGATIVE,
    NON_NEGATIVE_NUMBER,
    POSITIVE,
    POSITIVE_NUMBER,
    Config,
    setting,
)
from wsss.core.distributed import all_gather_cat
from wsss.core.errors import ConfigWarning, UsageError
from wsss.losses import balanced_seg_loss
from wsss.methods.base import backbone_from_config, split_backbone_params
from wsss.methods.contract import Method, TrainContext, register_method
from wsss.methods.ema import ema_update, frozen_copy
from wsss.methods.imports import ImportLayout, key_mapped, register_import
from wsss.methods.seco.contrast import lig_loss, lil_loss
from wsss.methods.seco.decompose import assign_tags, crop_patches, sample_patch_positions
from wsss.methods.seco.energy import energy_loss_from_logits
from wsss.methods.seco.heads import ProjectionHead
from wsss.methods.seco.official_keys import seco_state_from_official
from wsss.methods.seco.ptc import ptc_loss
from wsss.methods.seco.views import SeCoViews
from wsss.models.backbones import ViTBackbone
from wsss.models.decoders import create_decoder
from wsss.models.heads import CAMClassifier


@dataclass
class SeCoOptions:
    """SeCo's own settings (docs/methods/seco.md#defaults). The ``quirk_*`` switches keep an official behaviour
    (True, the paper presets) or use the intended one (False, ``*_corrected`` and CPU presets)."""

    num_patches: int = setting(10, **POSITIVE)  # local patches per image (ncrops 12 = 2 global + 10 local)
    patch_size: int = setting(64, **POSITIVE)  # local_crop_size
    tag_threshold: float = setting(0.2, **FRACTION)
    global_view_scale: tuple[float, float] = setting((0.4, 1.0), **AREA_RANGE)  # RandomResizedCrop of w_image
    proj_hidden_dim: int = setting(2048, **POSITIVE)
    momentum: float = setting(0.999, **FRACTION)  # encoder_k and proj_head_t EMA
    queue_size: int = setting(4608, **POSITIVE)  # moco_queue
    proto_momentum: float = setting(0.9, **FRACTION)  # proto_m (COCO 0.99)
    update_prototype: int = setting(600, **NON_NEGATIVE)  # iteration from which prototypes are updated
    cam2mask: int = setting(10000, **NON_NEGATIVE)  # decomposition mask: aux-CAM before this iteration, CAM after
    # online pseudo label: aux-CAM before this iteration (COCO 12000)
    seg_mask_source_iter: int = setting(0, **NON_NEGATIVE)
    # lr multiplier of the projection head; None = train.head_lr_mult like the classifiers (official).
    # For from-scratch AdamW runs (1.0 measured on the synthetic preset: BENCHMARKS.md, SeCo pieces).
    proj_lr_mult: float | None = setting(None, **POSITIVE_NUMBER)
    temp_lil: float = setting(0.08, **POSITIVE_NUMBER)
    base_temp_lil: float = setting(0.08, **POSITIVE_NUMBER)
    temp_lig: float = setting(0.1, **POSITIVE_NUMBER)
    base_temp_lig: float = setting(0.1, **POSITIVE_NUMBER)
    # dense-energy regulariser (docs/methods/seco.md#reg-loss)
    reg_sigma_rgb: float = setting(15.0, **POSITIVE_NUMBER)
    reg_sigma_xy: float = setting(100.0, **POSITIVE_NUMBER)
    reg_scale: float = setting(0.5, **POSITIVE_NUMBER)
    reg_weight: float = setting(1e-7, **NON_NEGATIVE_NUMBER)
    # official quirks (docs/methods/seco.md#quirk-switches, #decisions)
    quirk_no_class_global_tag: bool = True  # a view with no confident class is tagged class 1
    quirk_area_weighted_by_class_id: bool = True  # the patch area test sums class ids
    quirk_lil_normaliser: bool = True  # LIL sums log-probs over all columns / global positive count
    quirk_local_view_flip: bool = True  # the teacher's view flips independently of the tags
    quirk_patch_seed: bool = True  # positions = randperm with seed 0 (the official reseed's effect)
    quirk_ptc_box_pixel_scale: bool = True  # the 448-px img_box is applied to the token grid
    quirk_queue_init_dim0: bool = True  # the random queue is normalised along dim 0


def prototype_free_lig_steps(
    weights: dict[str, float], start_iters: dict[str, int], o: SeCoOptions
) -> tuple[int, int] | None:
    """(first LIG step, first prototype update) when LIG is on before the prototypes are first updated,
    else None. A term is active when step > start_iters[term] (from step 0 without an entry); the
    prototypes are updated from step ``update_prototype``, before the losses of that step."""
    if not weights.get("lig"):
        return None
    first_lig = start_iters["lig"] + 1 if "lig" in start_iters else 0
    return (first_lig, o.update_prototype) if first_lig < o.update_prototype else None


@register_method
class SeCo(Method):
    name = "seco"
    Options = SeCoOptions

    @classmethod
    def tiny_overrides(cls) -> tuple[str, dict[str, object]]:
        """Two steps in seconds on the CPU (the contract test; ``{root}``: the synthetic dataset)."""
        return "configs/seco/synthetic_cpu.yaml", {
            "model.backbone_kwargs": "{patch_size: 8, depth: 2, embed_dim: 32, num_heads: 2, img_size: 64}",
            "options.num_patches": 2,
            "options.patch_size": 16,
            "options.queue_size": 32,
            "options.proj_hidden_dim": 16,
            "options.cam2mask": 1,
        }

    def __init__(self, cfg: Config, classes: Sequence[str]):
        super().__init__(cfg, classes)
        num_classes = self.num_classes
        m, o = cfg.model, self.options
        self.backbone = backbone_from_config(m)
        if not isinstance(self.backbone, ViTBackbone):
            raise UsageError(
                f"SeCo needs a ViT backbone with a class token (got {m.backbone}); "
                "set model.backbone to a timm vit_* name"
            )
        dim = self.backbone.out_dim
        num_fg = num_classes - 1
        self.classifier = CAMClassifier(dim, num_fg, m.pooling)
        self.aux_classifier = CAMClassifier(self.backbone.aux_dim, num_fg, m.pooling)
        self.decoder = create_decoder(m.decoder, dim, num_classes, m.decoder_dim)
        self.proj_head = ProjectionHead(dim, o.proj_hidden_dim, dim)
        self.par = PAR(dilations=cfg.cam.par.dilations, num_iter=cfg.cam.par.num_iter)
        # The local teacher: momentum copies of the encoder and the projection head (docs/methods/seco.md#networks).
        self.encoder_k = frozen_copy(self.backbone)
        self.proj_head_t = frozen_copy(self.proj_head)
        # The local semantic reservoir and the class prototypes are buffers: saved and resumed.
        queue = torch.randn(o.queue_size, dim)
        self.register_buffer("queue", F.normalize(queue, dim=0 if o.quirk_queue_init_dim0 else 1))
        self.register_buffer("queue_flags", torch.zeros(o.queue_size))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("prototypes", torch.randn(num_fg, dim))

    # -- engine interface ------------------------------------------------------------------------
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        plain, norm = split_backbone_params(self.backbone)
        return {
            "backbone": plain,
            "backbone_norm": norm,
            "head": [*self.classifier.parameters(), *self.aux_classifier.parameters()],
            "proj_head": list(self.proj_head.parameters()),
            "decoder": list(self.decoder.parameters()) if self.decoder is not None else [],
        }

    def param_group_options(self) -> dict[str, dict[str, float]]:
        opts = super().param_group_options()
        mult = self.options.proj_lr_mult
        opts["proj_head"] = {"lr_mult": self.cfg.train.head_lr_mult if mult is None else mult}
        return opts

    def on_train_start(self, ctx: TrainContext) -> None:
        lig_from = prototype_free_lig_steps(self.cfg.loss.weights, self.cfg.loss.start_iters, self.options)
        if lig_from is not None:
            warnings.warn(
                ConfigWarning(
                    f"loss.start_iters.lig lets LIG run from step {lig_from[0]}, before options.update_prototype "
                    f"({lig_from[1]}): until then it contrasts against the random, unnormalised initial prototypes, "
                    "and its exp (no max subtraction, docs/methods/seco.md#lig) can overflow to inf as the queries "
                    "align with them; set loss.start_iters.lig >= options.update_prototype - 1"
                ),
                stacklevel=2,
            )

    def train_transform_views(self) -> SeCoViews:
        return SeCoViews(
            global_size=self.cfg.data.crop_size,
            global_scale=self.options.global_view_scale,
            local_flip=self.options.quirk_local_view_flip,
        )

    def cam_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.backbone(images)
        return self.classifier.cam(out.final), self.aux_classifier.cam(out.aux)

    def class_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(images).final)  # gmp pools the features before the 1x1 conv

    def seg_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.backbone(images).final)

    # -- one training step (docs/methods/seco.md#step) -----------------------------------------------
    def training_step(self, batch: dict[str, Any], step: int, active: set[str]) -> dict[str, torch.Tensor]:
        """The unweighted loss terms of one step. ``batch`` holds ``image``, ``w_image``, ``s_image``,
        ``labels``, ``label_idx``, ``img_box`` and optionally ``patch_top_left`` (B, P, 2) long: the
        (h0, w0) of the local patches, used instead of drawing them (replays a recorded step, e.g.
        golden ``seco_iteration.npz: crop_top_left``)."""
        c, o = self.cfg.cam, self.options
        images, labels, img_box = batch["image"], batch["labels"], batch["img_box"]
        b, _, H, W = images.shape

        # Student: the main crop and the global view in one pass.
        out = self.backbone(torch.cat([images, batch["w_image"]], dim=0))
        final, aux = out.final[:b], out.aux[:b]

        cam, cam_aux, top_left, flags = self._decompose(batch, step, final, aux)
        terms = {
            "cls": F.multilabel_soft_margin_loss(self.classifier(final), labels),
            "aux": F.multilabel_soft_margin_loss(self.aux_classifier(aux), labels),
        }
        if "ptc" in active:
            terms["ptc"] = self._ptc(final, cam_aux, labels, img_box)

        global_cls = out.cls.view(2, b, -1).transpose(0, 1)  # (B, 2, D): [main, w_image]
        if step >= o.update_prototype:
            self._update_prototypes(global_cls[:, 0].detach(), batch["label_idx"])
        keys = self._teacher_keys(global_cls.detach(), crop_patches(batch["s_image"], top_left, o.patch_size))
        self._enqueue(keys, flags)

        if "lil" in active or "lig" in active:
            terms.update(self._contrast(images, global_cls, top_left, keys, flags))

        if "seg" in active or "reg" in active:
            source = cam if step >= o.seg_mask_source_iter else cam_aux
            pseudo = online_pseudo_label(self.par, c, images, source, labels, img_box)
            logits = F.interpolate(self.decoder(final), size=(H, W), mode="bilinear", align_corners=False)
            terms["seg"] = balanced_seg_loss(logits, pseudo)
            if "reg" in active:
                terms["reg"] = energy_loss_from_logits(
                    images,
                    logits,
                    pseudo,
                    img_box,
                    weight=o.reg_weight,
                    sigma_rgb=o.reg_sigma_rgb,
                    sigma_xy=o.reg_sigma_xy,
                    scale_factor=o.reg_scale,
                )
        return terms

    # -- pieces ------------------------------------------------------------------------------------
    @torch.no_grad()
    def _decompose(
        self, batch: dict[str, Any], step: int, final: torch.Tensor, aux: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Steps 2, 4 and 5 of docs/methods/seco.md#step: the CAMs of the labelled classes, the decomposition
        mask, the local patches' positions (injected ``patch_top_left`` or drawn) and the tags of the global and
        local views.
        Returns (cam, cam_aux, top_left (B, P, 2), flags (B*(2+P),) ordered [g1, g2, l1..lP] per image)."""
        c, o = self.cfg.cam, self.options
        images, labels = batch["image"], batch["labels"]
        # the scale-1.0 CAMs of the training forward are reused (seco.md#ms-cam); every consumer multiplies by
        # the labels, so the other classes' maps are left zero. The official training-time passes (multi_scale_cam2: max
        # flip fusion, min-max), whatever infer says.
        unflipped = (self.classifier.cam(final.detach()), self.aux_classifier.cam(aux.detach()))
        cam, cam_aux = CamPasses(c.scales)(self.cam_maps, images, unflipped=unflipped, classes=labelled_classes(labels))
        roi = self.decomposition_mask(batch, cam if step >= o.cam2mask else cam_aux)
        top_left = batch.get("patch_top_left")  # injected positions (a replay), else drawn
        if top_left is None:
            top_left, _, _ = sample_patch_positions(roi, o.num_patches, o.patch_size, official_seed=o.quirk_patch_seed)
        flags = assign_tags(
            roi,
            top_left,
            o.patch_size,
            threshold=o.tag_threshold,
            no_class_global_tag=1.0 if o.quirk_no_class_global_tag else -1.0,
            area_weighted_by_class_id=o.quirk_area_weighted_by_class_id,
        ).reshape(-1)
        return cam, cam_aux, top_left, flags

    def _contrast(
        self,
        images: torch.Tensor,
        global_cls: torch.Tensor,
        top_left: torch.Tensor,
        keys: torch.Tensor,
        flags: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """LIL and LIG (docs/methods/seco.md#lil, #lig): the student's queries of the global and local views against the
        reservoir, which already holds the current keys (enqueued before, as in the official code)."""
        o, b = self.options, images.shape[0]
        q_patches = torch.cat(crop_patches(images, top_left, o.patch_size), dim=0)  # (P*B, 3, s, s)
        local_cls = self.backbone(q_patches).cls.view(o.num_patches, b, -1).transpose(0, 1)
        q = self.proj_head(torch.cat([global_cls, local_cls], dim=1).reshape(-1, global_cls.shape[-1]))
        lil, revised = lil_loss(
            q,
            torch.cat([keys, self.queue]),
            flags,
            torch.cat([flags, self.queue_flags]),
            temperature=o.temp_lil,
            base_temperature=o.base_temp_lil,
            normalise="official" if o.quirk_lil_normaliser else "supcon",
        )
        lig = lig_loss(q, self.prototypes, revised, temperature=o.temp_lig, base_temperature=o.base_temp_lig)
        return {"lil": lil, "lig": lig}

    def decomposition_mask(self, batch: dict[str, Any], cam: torch.Tensor) -> torch.Tensor:
        """The mask the patches are centred on and tagged from (docs/methods/seco.md#decompose): class id where
        ``cam`` > high, -1 where low < ``cam`` <= high, 0 below, 255 outside the image box."""
        c = self.cfg.cam
        return cam_to_roi_mask(
            cam,
            batch["labels"],
            img_box=batch["img_box"],
            ignore_mid=True,
            bkg_thre=c.bkg_thre,
            high_thre=c.high_thre,
            low_thre=c.low_thre,
        )

    def _ptc(self, final: torch.Tensor, cam_aux: torch.Tensor, labels: torch.Tensor, img_box: torch.Tensor):
        """PTC target from the aux-CAM at token resolution (docs/methods/seco.md#ptc)."""
        c = self.cfg.cam
        h, w = final.shape[-2:]
        small = F.interpolate(cam_aux, size=(h, w), mode="bilinear", align_corners=False)
        box = img_box if self.options.quirk_ptc_box_pixel_scale else scale_img_box(img_box, cam_aux.shape[-2:], (h, w))
        _, target = cam_to_label(
            small, labels, img_box=box, ignore_mid=True, bkg_thre=c.bkg_thre, high_thre=c.high_thre, low_thre=c.low_thre
        )
        return ptc_loss(final, label_to_aff_mask(target))

    @torch.no_grad()
    def _teacher_keys(self, global_cls: torch.Tensor, k_patches: list[torch.Tensor]) -> torch.Tensor:
        """EMA-update the teacher, encode the teacher view's patches -> keys (B*(2+P), D)
        (docs/methods/seco.md#networks).

        The global entries are the student's class tokens (detached), as in the official code.
        """
        o = self.options
        b = global_cls.shape[0]
        ema_update(self.encoder_k, self.backbone, o.momentum)
        local = self.encoder_k(torch.cat(k_patches, dim=0)).cls.view(o.num_patches, b, -1).transpose(0, 1)
        ema_update(self.proj_head_t, self.proj_head, o.momentum)
        return self.proj_head_t(torch.cat([global_cls, local], dim=1).reshape(-1, global_cls.shape[-1]))

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor, flags: torch.Tensor) -> None:
        """Ring-buffer write of the keys and tags of every process (docs/methods/seco.md#networks)."""
        keys, flags = all_gather_cat(keys), all_gather_cat(flags.to(self.queue_flags.dtype))
        n, size = keys.shape[0], self.queue.shape[0]
        if size % n:
            raise UsageError(
                f"options.queue_size {size} must be a multiple of the keys per step {n} "
                "(global batch x (2 + num_patches))"
            )
        ptr = int(self.queue_ptr)
        self.queue[ptr : ptr + n] = keys
        self.queue_flags[ptr : ptr + n] = flags
        self.queue_ptr.fill_((ptr + n) % size)

    @torch.no_grad()
    def _update_prototypes(self, cls_tokens: torch.Tensor, label_idx: torch.Tensor) -> None:
        """EMA of the class tokens of single-class images, sample by sample, then L2 rows
        (docs/methods/seco.md#networks)."""
        tokens, idx = all_gather_cat(cls_tokens), all_gather_cat(label_idx)
        m = self.options.proto_momentum
        for t, c in zip(tokens, idx.tolist()):
            if c > 0:
                self.prototypes[c - 1] = m * self.prototypes[c - 1] + (1 - m) * t
        self.prototypes.copy_(F.normalize(self.prototypes, dim=1))


# `wsss import seco`: the released checkpoint (encoder and EMA copy, classifiers, ASPP, heads, queue, prototypes)
register_import(
    ImportLayout(
        "seco",
        "seco",
        key_mapped(seco_state_from_official, "classifier.conv.weight", official="SeCo"),
        summary="seco: SeCo's official checkpoint",
    )
)
