"""WeCLIP+ (Zhang et al., TPAMI 2025, "Frozen CLIP-DINO: a Strong Backbone for Weakly Supervised Semantic
Segmentation"; official code zbf1991/WeCLIP at 0f47db46, folder ``WeCLIP+/``), specified in
docs/methods/weclip_plus.md.

One stage: a frozen CLIP ViT-B/16 and a frozen DINOv2 ViT-S/14 feed two fusion heads and one shared decoder;
the decoder learns from online pseudo labels that the frozen CLIP makes (Grad-CAM of the labelled classes'
text, weighted by the decoder's own class probabilities, refined by an affinity of CLIP's attention and the
decoder's ``attn_pred``, then PAR). ``wsss train configs/weclip_plus/voc.yaml model.pretrained=CLIPFILE
options.dino_weights=DINOFILE`` trains it, ``wsss predict`` uses the decoder (``0.5 (seg_clip + seg_dino)``),
``wsss cam`` the pseudo-label maps of a run. ``wsss import weclip_plus CHECKPOINT`` makes a run of an official
checkpoint (its CLIP, DINOv2 and heads).

Every official quirk is an ``options.quirk_*`` switch (docs/methods/weclip_plus.md#quirks): on in ``voc.yaml`` /
``coco.yaml``, off in ``voc_corrected.yaml`` and the CPU preset.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsss.cam import PAR, denormalize_image, resize_long
from wsss.cam.clip_refine import (
    affinity_label,
    attention_affinity_loss,
    par_refine,
    radius_mask,
    scaled_maps,
    with_background,
)
from wsss.core.config import FRACTION, NON_NEGATIVE, POSITIVE, POSITIVE_NUMBER, SIDE, Config, setting
from wsss.core.errors import ConfigError, ConfigWarning, WeightLoadError
from wsss.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from wsss.losses import balanced_seg_loss
from wsss.methods.clip_runs import VOC_BACKGROUND, clip_input, prompts_for, quick_gelu_of, read_clip_weights
from wsss.methods.contract import CamDeclaration, Method, register_method
from wsss.methods.imports import ImportLayout, register_import
from wsss.methods.weclip_plus.cam import refined_cams
from wsss.methods.weclip_plus.model import (
    HeadOutput,
    WeclipPlusHead,
    clip_features,
    dino_features,
    official_head_state,
)
from wsss.models.clip import ClipArch, build_clip
from wsss.models.dinov2 import Dinov2, Dinov2Arch


@dataclass
class WeclipPlusOptions:
    """WeCLIP+'s own settings (official values: docs/methods/weclip_plus.md#spec). ``quirk_*``: True keeps the
    official behaviour (paper presets), False the intended one (``voc_corrected.yaml``, CPU preset); the comment of
    each is its quirk, a row of docs/methods/weclip_plus.md#quirks (``Q1``: ``#q1``)."""

    arch: dict[str, int | float] = field(default_factory=dict)  # ClipArch of the CLIP file (written at train/import)
    text_heads: int | None = None  # text heads if the file's text width is not 64 x heads (tiny test CLIPs)
    quick_gelu: bool | None = None  # null: what the CLIP file says (models/clip_files.py)
    weights: str = ""  # the CLIP weight file the run was made from (provenance only)
    dino_weights: str = ""  # the DINOv2 file: the hub's dinov2_vits14_pretrain.pth or a Hugging Face folder
    dino_arch: dict[str, Any] = field(default_factory=dict)  # Dinov2Arch of that file (written at train/import)
    dino_heads: int | None = None  # DINOv2 heads if not width // 64 (tiny test models)
    templates: list[str] = field(default_factory=lambda: ["a clean origami {}."])
    background: list[str] = field(default_factory=lambda: list(VOC_BACKGROUND))
    synonyms: dict[str, str] = field(default_factory=dict)  # class name -> its prompt (clip_text.new_class_names)
    prompts: list[str] = field(default_factory=list)  # one per foreground class (written when the run is made)
    embedding_dim: int = setting(256, **POSITIVE)  # fusion and decoder width
    decoder_layers: int = setting(3, **POSITIVE)
    decoder_heads: int = setting(8, **POSITIVE)
    attn_layers: int = setting(6, **POSITIVE)  # the affinity uses the last this many CLIP attention maps (COCO: 8)
    # Grad-CAM box threshold (COCO 0.7); the boxes only count without Q5
    box_threshold: float = setting(0.4, lo=0, lo_open=True, hi=1, text="a number in (0, 1)")
    bg_power: float = setting(1.0, **POSITIVE_NUMBER)  # background = (1 - max) ** bg_power (cam_bg_thres)
    radius: int = setting(8, **POSITIVE)  # the affinity loss's pair radius, in tokens
    # from the iteration after this, confident predictions replace labels
    label_update_after: int | None = setting(18000, **NON_NEGATIVE)
    label_update_threshold: float = setting(0.75, **FRACTION)
    # set: from this fraction of train.max_iters instead (a schedule in epochs: configs/weclip_plus/route_gpu.yaml)
    label_update_fraction: float | None = setting(None, **FRACTION)
    # `wsss cam`: the long side resized to this (test_msc_flip_voc.py's input; `wsss predict` reads infer.resize_long)
    test_resize_long: int = setting(512, **SIDE)
    quirk_fp16: bool = False  # Q1
    quirk_dice_counts_ignored: bool = False  # Q2
    quirk_padding_supervised: bool = False  # Q3
    quirk_box_mask_dropped: bool = False  # Q5
    quirk_cam_skips_block: bool = False  # Q7
    quirk_imagenet_stats: bool = False  # Q8
    quirk_par_on_normalized: bool = False  # Q9


def dice_loss(logits: torch.Tensor, label: torch.Tensor, ignore_index: int = 255, counts_ignored: bool = False):
    """``DiceLoss`` (``WeCLIP_Plus/dice_loss.py``): ``1 - mean_c 2 sum(p onehot) / (sum(p + onehot) + 1e-7)`` over
    the batch, with p the softmax of ``logits`` (B, C, H, W) and the one-hot of ``label`` (B, H, W).
    ``counts_ignored`` (Q2): as official, the ignored pixels (which it first relabels C, in place in the caller's
    tensor) have no one-hot but their probabilities stay in the union; False: they are left out of both sums. The
    caller's label is never changed here."""
    c = logits.shape[1]
    ignored = label == ignore_index
    onehot = F.one_hot(label.masked_fill(ignored, c), c + 1)[..., :c].permute(0, 3, 1, 2).to(logits.dtype)
    prob = F.softmax(logits, dim=1)
    valid = torch.ones_like(prob) if counts_ignored else (~ignored)[:, None].to(prob.dtype).expand_as(prob)
    inter = (prob * valid * onehot).sum(dim=(0, 2, 3))
    union = (prob * valid + onehot * valid).sum(dim=(0, 2, 3))
    return 1.0 - (2.0 * inter / (union + 1e-7)).mean()


@register_method
class WeclipPlus(Method):
    name = "weclip_plus"
    Options = WeclipPlusOptions

    cams = CamDeclaration(source="per_image")  # pseudo-label maps per image from the labels' text (wsss cam)
    start_files = ("dino_weights",)

    @classmethod
    def tiny_overrides(cls) -> tuple[str, dict[str, object]]:
        """A random 3-block CLIP of width 64 and a random 2-block DINOv2 of width 32 (no weight files) on 64-px
        crops (the contract test's 64 px: 4x4 grids)."""
        arch = (
            "{embed_dim: 16, image_size: 32, patch_size: 16, vision_width: 64, vision_layers: 3, "
            "context_length: 77, vocab_size: 49408, text_width: 64, text_heads: 1, text_layers: 1}"
        )
        dino = "{embed_dim: 32, depth: 2, num_heads: 2, patch_size: 14, pos_grid: 4}"
        return "configs/weclip_plus/synthetic_cpu.yaml", {
            "options.arch": arch,
            "options.dino_arch": dino,
            "options.embedding_dim": 16,
            "options.decoder_heads": 2,
            "options.attn_layers": 2,
            "options.radius": 1,
        }

    def __init__(self, cfg: Config, classes: Sequence[str]):
        super().__init__(cfg, classes)
        o = self.options
        clip_file = read_clip_weights(self.options, cfg.model.pretrained) if cfg.model.pretrained else None
        dino_file = self._read_dino(o.dino_weights) if o.dino_weights else None
        if not o.arch or not o.dino_arch:
            raise ConfigError(
                "weclip_plus: options.arch / options.dino_arch are empty; give model.pretrained=CLIPFILE "
                "and options.dino_weights=DINOFILE"
            )
        if not o.prompts:
            o.prompts = prompts_for(self.class_names, o.synonyms or {})
        if len(o.prompts) != self.num_classes - 1:
            raise ConfigError(
                f"weclip_plus: options.prompts has {len(o.prompts)} entries for {self.num_classes - 1} classes"
            )
        if not o.templates or not o.background:
            raise ConfigError("weclip_plus: options.templates and options.background must not be empty")
        arch = ClipArch(**o.arch)
        self.clip = build_clip(arch, quick_gelu=quick_gelu_of(o))
        if clip_file is not None:
            self.clip.load_state_dict(clip_file.state_dict())
        self.dino = Dinov2(Dinov2Arch(**o.dino_arch))
        if dino_file is not None:
            self.dino.load_state_dict(dino_file.state_dict())
        for p in [*self.clip.parameters(), *self.dino.parameters()]:  # frozen (the official freezes all it trains)
            p.requires_grad_(False)
        self.decoder = WeclipPlusHead(
            arch.vision_width,
            self.dino.arch.embed_dim,
            o.embedding_dim,
            self.num_classes,
            decoder_layers=o.decoder_layers,
            decoder_heads=o.decoder_heads,
            out_proj_fp16=o.quirk_fp16,
        )
        self.register_buffer("decoder_steps", torch.zeros((), dtype=torch.long))
        self.par = PAR(dilations=cfg.cam.par.dilations, num_iter=cfg.cam.par.num_iter)
        self._text: torch.Tensor | None = None

    # -- set-up ---------------------------------------------------------------------------------
    def _read_dino(self, weights: str) -> nn.Module:
        from wsss.models.dinov2 import load_dinov2_file

        o = self.options
        model, arch, _ = load_dinov2_file(weights, num_heads=o.dino_heads)
        if o.dino_arch and Dinov2Arch(**o.dino_arch) != arch:
            raise ConfigError(f"{weights}: its DINOv2 architecture {arch.as_dict()} is not options.dino_arch")
        o.dino_arch = arch.as_dict()
        return model

    def text(self) -> torch.Tensor:
        """(C_fg + C_bg, E): the class prompts' and the background names' text (``zeroshot_classifier``)."""
        if self._text is None:
            from wsss.cam.clip_es import text_features

            o, fp16 = self.options, self.options.quirk_fp16
            with torch.no_grad():
                self._text = torch.cat(
                    [
                        text_features(self.clip, o.prompts, o.templates, fp16),
                        text_features(self.clip, o.background, o.templates, fp16),
                    ]
                )
        return self._text

    def clip_images(self, images: torch.Tensor) -> torch.Tensor:
        """Pipeline-normalised images (ImageNet statistics) -> CLIP's input: as they are (Q8) or CLIP's statistics."""
        return clip_input(images, imagenet_stats=self.options.quirk_imagenet_stats)

    # -- the forward ------------------------------------------------------------------------------
    def network(self, images: torch.Tensor) -> tuple[Any, HeadOutput]:
        """The frozen features and the heads on ``images`` (B, 3, H, W), pipeline-normalised; H, W >= 2 patches."""
        o = self.options
        with torch.no_grad():
            cf = clip_features(self.clip, self.clip_images(images), pos_fp16=o.quirk_fp16, out_proj_fp16=o.quirk_fp16)
            dm = dino_features(self.dino, images)  # DINOv2 reads ImageNet's statistics, the pipeline's
        return cf, self.decoder(cf.decoder_input(), dm)

    def scaled_cams(
        self,
        images: torch.Tensor,
        cf: Any,
        head: HeadOutput,
        i: int,
        classes: torch.Tensor,
        size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """The refined CAMs (k, H, W) in [0, 1] of image ``i`` for its 0-based foreground ``classes``, each min-max
        scaled and resized to ``size`` (default the input's; ``generate_cam_label``)."""
        o = self.options
        size = tuple(images.shape[-2:]) if size is None else size
        if len(classes) == 0:  # no foreground label: the background alone
            return torch.zeros(0, *size, device=images.device)
        text = self.text()
        n_fg = self.num_classes - 1
        img_text = torch.cat([text[:n_fg][classes.to(text.device)], text[n_fg:]])
        ic = refined_cams(
            self.clip,
            cf.cam_tokens(o.quirk_cam_skips_block)[i : i + 1],
            img_text,
            len(classes),
            cf.grid,
            torch.stack(cf.attn)[:, i],
            head.attn_pred[i].detach(),
            head.seg_prob()[i],
            classes,
            layers=o.attn_layers,
            box_threshold=o.box_threshold,
            box_masked=not o.quirk_box_mask_dropped,
            out_proj_fp16=o.quirk_fp16,
        )
        return scaled_maps(ic.refined.float(), size).to(images.device)

    def pseudo_scores(
        self,
        images: torch.Tensor,
        cf: Any,
        head: HeadOutput,
        i: int,
        classes: torch.Tensor,
        size: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(PAR-refined scores (1 + k, H, W), their dataset ids (1 + k,)) of image ``i``: :meth:`scaled_cams`,
        background ``(1 - max)^bg_power``, PAR on the normalised input (Q9) or the image in [0, 1]."""
        o = self.options
        cams = with_background(self.scaled_cams(images, cf, head, i, classes, size))
        if o.bg_power != 1.0:
            cams[0] = cams[0] ** o.bg_power
        if o.quirk_par_on_normalized:
            guide = images[i]
        else:
            guide = denormalize_image(images[i : i + 1], truncate_uint8=False)[0].float()
        valid = torch.cat([torch.zeros(1, dtype=torch.long), classes.cpu().long() + 1]).to(images.device)
        return par_refine(cams, guide, self.par), valid

    def online_labels(self, images: torch.Tensor, labels: torch.Tensor, cf: Any, head: HeadOutput) -> torch.Tensor:
        """The pseudo labels (B, H, W) int64 of a batch (``cam_labels`` of the official forward)."""
        out = []
        for i in range(images.shape[0]):
            classes = torch.nonzero(labels[i] > 0.5).flatten().cpu()
            scores, valid = self.pseudo_scores(images, cf, head, i, classes)
            out.append(valid[scores.argmax(dim=0)])
        return torch.stack(out).long()

    # -- inference ------------------------------------------------------------------------------

    @torch.no_grad()
    def labelled_cam_of_image(self, image: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """The refined CAMs (k, H, W) float32 in [0, 1] of an (H, W, 3) uint8 image for the 0-based ``classes``, on
        the image resized to ``options.test_resize_long`` (the official test's input), scaled to the image."""
        classes = np.asarray(classes, dtype=np.int64)
        h, w = image.shape[:2]
        if classes.size == 0:
            return np.zeros((0, h, w), dtype=np.float32)
        x = self._input_of(image)
        cf, head = self.network(x)
        with torch.enable_grad():
            maps = self.scaled_cams(x, cf, head, 0, torch.from_numpy(classes), size=(h, w))
        return maps.float().cpu().numpy()

    def _input_of(self, image: np.ndarray) -> torch.Tensor:
        dev = next(self.decoder.parameters()).device
        mean = torch.tensor([255 * m for m in IMAGENET_MEAN]).view(3, 1, 1)
        std = torch.tensor([255 * s for s in IMAGENET_STD]).view(3, 1, 1)
        x = (torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() - mean) / std
        return resize_long(x[None].to(dev), self.options.test_resize_long)

    @property
    def has_seg_head(self) -> bool:
        return int(self.decoder_steps) > 0

    def seg_logits(self, images: torch.Tensor) -> torch.Tensor:
        """``0.5 (seg_clip + seg_dino)`` (B, C, h, w) at the CLIP grid; the caller upsamples."""
        return self.network(images)[1].seg()

    # -- training ---------------------------------------------------------------------------------
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Only the heads learn (the official group 3, lr x 10)."""
        return {"decoder": list(self.decoder.parameters())}

    def built_options(self) -> dict[str, Any]:
        o = self.options
        return {"arch": dict(o.arch), "dino_arch": dict(o.dino_arch), "quick_gelu": quick_gelu_of(o)}

    def on_train_start(self, ctx: Any) -> None:
        if ctx.step == 0 and (not self.options.weights or not self.options.dino_weights):  # resumed: its checkpoint's
            warnings.warn(
                "weclip_plus: no CLIP or DINOv2 weights (model.pretrained / options.dino_weights): "
                "training on a random network",
                ConfigWarning,
                stacklevel=2,
            )

    def train(self, mode: bool = True) -> WeclipPlus:
        super().train(mode)
        self.clip.eval()  # frozen, always in eval mode (the official encoder.eval() in every forward)
        self.dino.eval()
        return self

    def label_update_after(self) -> int | None:
        """The step after which confident predictions replace the labels: ``options.label_update_fraction`` of
        ``train.max_iters`` (the length resolved from ``train.epochs``), else ``options.label_update_after``."""
        o = self.options
        if o.label_update_fraction is not None:
            return round(o.label_update_fraction * self.cfg.train.max_iters)
        return o.label_update_after

    def training_step(self, batch: dict[str, Any], step: int, active: set[str]) -> dict[str, torch.Tensor]:
        """One iteration (``scripts/dist_clip_voc.py``, docs/methods/weclip_plus.md#training-step)."""
        o = self.options
        images, labels = batch["image"], batch["labels"]
        cf, head = self.network(images)
        with torch.enable_grad():
            pseudo = self.online_labels(images, labels, cf, head).to(images.device)
        if not o.quirk_padding_supervised and "img_box" in batch:
            from wsss.cam.labels import box_mask

            pseudo = pseudo.masked_fill(~box_mask(batch["img_box"], tuple(pseudo.shape[-2:]), pseudo.device), 255)
        size = tuple(pseudo.shape[-2:])
        up = lambda t: F.interpolate(t, size=size, mode="bilinear", align_corners=False)  # noqa: E731
        segs, segs_clip, segs_dino = up(head.seg()), up(head.seg_clip), up(head.seg_dino)
        grid = cf.grid
        mask = radius_mask(grid[0], grid[1], o.radius).to(images.device)
        aff = affinity_label(pseudo, grid, mask)
        terms = {"aff": attention_affinity_loss(head.attn_pred, aff)}
        after = self.label_update_after()
        if after is not None and step > after:
            pred_max, pred_label = F.softmax(segs, dim=1).max(dim=1)
            sure = (pred_max > o.label_update_threshold).detach()
            pseudo = torch.where(sure, pred_label.detach(), pseudo)
        terms["seg"] = balanced_seg_loss(segs, pseudo)
        terms["dice"] = dice_loss(segs, pseudo, counts_ignored=o.quirk_dice_counts_ignored)
        label_clip = F.softmax(segs_clip, dim=1).argmax(dim=1).detach()
        label_dino = F.softmax(segs_dino, dim=1).argmax(dim=1).detach()
        terms["cross"] = balanced_seg_loss(segs_clip, label_dino) + balanced_seg_loss(segs_dino, label_clip)
        self.decoder_steps.fill_(step + 1)
        return terms


def msc_flip_segs(seg_fn: Any, x: torch.Tensor, scales: Sequence[float]) -> torch.Tensor:
    """``test_msc_flip_voc.validate``'s fusion: for each scale s, ``seg_fn`` on [x_s, flip(x_s)] (x_s: ``x``
    (1, 3, h, w) scaled by ``F.interpolate(scale_factor=s)``, s = 1 unchanged), resized to the scale-1 grid, the flip
    averaged; the mean over scales (1, C, h', w'). The recording pins this replay; ``wsss predict`` runs the shared
    step (``cam.multi_scale_logits``) with the presets' ``infer`` settings, which a test holds equal to it
    (docs/methods/weclip_plus.md#test)."""
    segs, grid = [], None
    for s in scales:
        xs = x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        seg = seg_fn(torch.cat([xs, xs.flip(-1)], dim=0))
        grid = grid or tuple(seg.shape[-2:])
        if tuple(seg.shape[-2:]) != grid:
            seg = F.interpolate(seg, size=grid, mode="bilinear", align_corners=False)
        segs.append((seg[0] + seg[1].flip(-1)) / 2)
    return torch.stack(segs).mean(dim=0)[None]


def build_from_checkpoint(path: Path, cfg: Config, class_names: list[str]) -> tuple[Method, dict[str, Any]]:
    """``wsss import weclip_plus CHECKPOINT``: an official ``wetr_iter_*.pth`` (``torch.save(model.state_dict())``
    of ``scripts/dist_clip_voc.py``; ``module.`` prefixes dropped). It holds every weight: the CLIP (``encoder.*``,
    OpenAI's names, float16 as the official model keeps it; QuickGELU, OpenAI's activation, unless
    ``options.quick_gelu`` says otherwise), the DINOv2 (``dino_encoder.*``, the hub's names) and the heads. The
    architectures are read off the tensors, as from the weight files."""
    from wsss.methods.contract import build_method
    from wsss.models.clip import arch_of_state_dict
    from wsss.models.dinov2 import arch_of_state_dict as dino_arch_of
    from wsss.models.weights import read_state_dict

    state = {k.removeprefix("module."): v for k, v in read_state_dict(path).items() if torch.is_tensor(v)}
    heads = official_head_state(state)
    clip_sd = {k.removeprefix("encoder."): v.float() for k, v in state.items() if k.startswith("encoder.")}
    dino_sd = {k.removeprefix("dino_encoder."): v.float() for k, v in state.items() if k.startswith("dino_encoder.")}
    if not heads or not clip_sd or not dino_sd:
        raise WeightLoadError(
            f"{path}: not an official WeCLIP+ checkpoint (it needs encoder.*, dino_encoder.* and the "
            "heads decoder_fts_fuse.*, dino_decoder_fts_fuse.*, decoder.*)"
        )
    o = cfg.options
    try:
        arch = arch_of_state_dict(clip_sd, o.get("text_heads"))
        dino_arch = dino_arch_of(dino_sd, o.get("dino_heads"))
    except KeyError as e:
        raise WeightLoadError(f"{path}: {e.args[0]}") from None
    quick_gelu = True if o.get("quick_gelu") is None else bool(o["quick_gelu"])
    cfg.options.update(
        arch=arch.as_dict(), dino_arch=dino_arch.as_dict(), quick_gelu=quick_gelu, weights=str(path), dino_weights=""
    )
    cfg.model.pretrained = None
    model = build_method(cfg, class_names)
    cfg.options["prompts"] = list(model.options.prompts)
    for part, loaded in ((model.clip, clip_sd), (model.dino, dino_sd), (model.decoder, heads)):
        own = part.state_dict()
        bad = [k for k in own if k != "attn_mask" and (k not in loaded or loaded[k].shape != own[k].shape)]
        if bad:
            raise WeightLoadError(f"{path}: the checkpoint does not fit the config (first: {bad[0]})")
        part.load_state_dict({k: loaded[k].to(own[k].dtype) for k in own if k in loaded}, strict=False)
    model.decoder_steps.fill_(1)  # a trained head: wsss predict uses it
    return model, {"dropped_official_keys": []}


register_import(
    ImportLayout(
        "weclip_plus",
        "weclip_plus",
        build_from_checkpoint,
        summary="weclip_plus: an official WeCLIP+ checkpoint (wetr_iter_*.pth: CLIP, DINOv2 and the heads)",
        next_step="WeCLIP+ imported (next: wsss predict {out} --split SPLIT)",
    )
)
