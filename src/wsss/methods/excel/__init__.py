"""ExCEL (Yang et al., CVPR 2025, "Exploring CLIP's Dense Knowledge for Weakly Supervised Semantic
Segmentation"): patch-text maps of a frozen CLIP ViT, enriched text and calibrated attention
(official code zwyang6/ExCEL at 2cd7f510, specified in docs/methods/excel.md#spec).

Two routes, one method:

- **training-free** (docs/methods/excel.md#training-free, ``tools/infer_lam.py --training_free true``):
  ``wsss import excel CLIPFILE --config configs/excel/voc.yaml --out RUN`` builds the run (the CLIP, the
  text with its attribute bank), ``wsss cam RUN`` writes the attention-refined patch-text maps of the labelled
  classes (:meth:`Excel.labelled_cam_of_image`), ``wsss pseudo RUN --refine excel`` their labels (background
  ``1 - max``, PAR; :func:`excel_pseudo_refiner`).
- **trained** (docs/methods/excel.md#trained, ``scripts/train_voc.py``): ``wsss train configs/excel/voc.yaml
  model.pretrained=CLIPFILE`` trains the decoder (SegFormer-style fusion of every block + a small
  transformer) on the online pseudo labels of the frozen CLIP, with the affinity ("diver") loss on its
  attention, and from ``options.lvc_start`` the Learnable Visual Calibration (the decoder's features
  steer CLIP's surgery attention). ``wsss predict`` then uses the decoder; ``wsss cam`` of a trained run
  uses the calibrated maps.

Text Semantic Enrichment needs attribute descriptions of each class (``options.descriptors``, a JSON
``{class name: [sentences]}``; docs/methods/excel.md says where the official VOC / COCO files are and how to
write one). Their k-means bank is computed once, when the run is made, and kept in the run (buffer
``attr_bank``): the official bank depends on the scikit-learn version (docs/methods/excel.md#q12).

Every official quirk is an ``options.quirk_*`` switch (docs/methods/excel.md#quirks, the quirks Q1..Q25, each
row anchored ``#q1``..``#q25``): on in ``voc.yaml`` / ``coco.yaml``, off in ``voc_corrected.yaml`` and the CPU
presets.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsss.cam import PAR, denormalize_image
from wsss.core.config import NON_NEGATIVE, POSITIVE, SEED, SHARE, Config, setting
from wsss.core.errors import ConfigError, ConfigWarning, UsageError
from wsss.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from wsss.losses import balanced_seg_loss
from wsss.methods.clip_runs import (
    VOC_BACKGROUND,
    clip_input,
    method_from_clip_file,
    prompts_for,
    quick_gelu_of,
    read_clip_weights,
)
from wsss.methods.contract import (
    CamDeclaration,
    Method,
    RefineJob,
    Refiner,
    register_method,
    register_refiner,
)
from wsss.methods.excel.cam import (
    affinity_label,
    attention_affinity_loss,
    labels_from_maps,
    labels_from_refined,
    radius_mask,
    refine_with_attention,
)
from wsss.methods.excel.model import (
    ExcelDecoder,
    ExcelModelQuirks,
    descriptor_embeddings,
    enrich_text,
    feature_surgery,
    kmeans_bank,
    surgery_forward,
)
from wsss.methods.imports import ImportLayout, register_import
from wsss.models.clip import ClipArch, build_clip


@dataclass
class ExcelOptions:
    """ExCEL's own settings (official defaults: docs/methods/excel.md#schedule). ``quirk_*``: True keeps the
    official behaviour (paper presets), False the intended one (``voc_corrected.yaml``, CPU presets); the comment
    of each is its quirk number, a row of docs/methods/excel.md#quirks (``Q8``: ``#q8``)."""

    #: ClipArch of the weight file (written at import / train)
    arch: dict[str, int | float] = field(default_factory=dict)
    # text heads if the file's text width is not 64 x heads (tiny test CLIPs)
    text_heads: int | None = setting(None, **POSITIVE)
    quick_gelu: bool | None = None  # null: what the weight file says (models/clip_files.py)
    weights: str = ""  # the CLIP weight file the run was made from (provenance only)
    templates: list[str] = field(default_factory=lambda: ["a clean origami {}."])
    background: list[str] = field(default_factory=lambda: list(VOC_BACKGROUND))
    synonyms: dict[str, str] = field(default_factory=dict)  # class name -> its prompt (clip_text.new_class_names)
    prompts: list[str] = field(default_factory=list)  # one per foreground class (written when the run is made)
    descriptors: str = ""  # JSON {class name: [sentences]}: the attribute descriptions of TSE
    # a ready bank instead of the k-means of the descriptors: the official ``attributes_text/*_embedding_bank.pth``
    # ([bank (E, K), flags], for OpenAI's ViT-B/16 only) or an .npy of (E, K); read when the run is made
    bank: str = ""
    n_clusters: int = setting(112, **POSITIVE)  # k-means attributes (VOC 112, COCO 224)
    # TSE keeps the highest keep_ratio of the attribute logits (Q11: masks the rest)
    keep_ratio: float = setting(0.9, **SHARE)
    kmeans_seed: int = setting(0, **SEED)
    surgery_blocks: int = setting(5, **NON_NEGATIVE)  # reload_self_attn(layers=6) converts the last 5 blocks (Q9)
    # the affinity refinement averages the attention of the last this many blocks (Q17)
    attn_layers: int = setting(6, **POSITIVE)
    # caa_thre: the boxes of the refinement at this fraction of the map's max
    box_threshold: float = setting(0.79, lo=0, lo_open=True, hi=1, text="a number in (0, 1)")
    # every image is resized to this square (Q9: the official forward is square only)
    input_size: int = setting(320, **POSITIVE)
    embedding_dim: int = setting(256, **POSITIVE)  # decoder width
    decoder_layers: int = setting(3, **POSITIVE)  # DecoderTransformer depth
    decoder_heads: int = setting(8, **POSITIVE)
    radius: int = setting(8, **POSITIVE)  # the affinity loss's pair radius, in tokens
    lvc_start: int = setting(14000, **NON_NEGATIVE)  # Learnable Visual Calibration (LVC) from this iteration on
    # the affinity target from the decoder's prediction from this iteration on (VOC); null: never (COCO)
    aff_from_seg_start: int | None = setting(24000, **NON_NEGATIVE)
    quirk_inplace_alias: bool = False  # Q8
    quirk_heads_summed: bool = False  # Q7
    quirk_token_axis_norm: bool = False  # Q5
    quirk_cls_in_minmax: bool = False  # Q6
    quirk_imagenet_stats: bool = False  # Q3
    quirk_par_on_normalized: bool = False  # Q4
    quirk_truncating_denorm: bool = False  # Q18
    quirk_box_edge_loss: bool = False  # Q16
    quirk_affinity_diagonal: bool = False  # Q20


def read_descriptors(path: str | Path, class_names: Sequence[str]) -> dict[str, list[str]]:
    """The attribute descriptions of ``options.descriptors``: a JSON object {class name: [sentences]} with a
    non-empty list of strings for every foreground class. ConfigError naming the file otherwise; names of
    other classes are a warning (they still join the bank, as in the official clustering)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8-sig"))
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the ExCEL descriptors ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: not JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and v and all(isinstance(s, str) and s.strip() for s in v) for v in data.values()
    ):
        raise ConfigError(f"{p}: ExCEL descriptors must be a JSON object {{class name: [sentence, ...]}}")
    missing = [c for c in class_names[1:] if c not in data]
    if missing:
        raise ConfigError(f"{p}: no descriptions for {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    extra = [c for c in data if c not in class_names]
    if extra:
        warnings.warn(
            f"{p}: descriptions of classes not in the dataset ({', '.join(extra[:5])}) join the bank",
            ConfigWarning,
            stacklevel=2,
        )
    return {k: list(v) for k, v in data.items()}


def read_bank(path: str | Path) -> torch.Tensor:
    """An attribute bank (E, K) from ``options.bank``: the official ``torch.save([bank, flags])`` file (read
    without running code from it) or an .npy. ConfigError naming the file otherwise."""
    from wsss.core.safe_load import load_torch_file, read_npy

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such attribute bank file (options.bank)")
    try:
        data = read_npy(p, "attribute bank") if p.suffix == ".npy" else load_torch_file(p, "attribute bank")
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same one-line error
        raise ConfigError(f"{p}: cannot read the attribute bank ({e})") from None
    bank = data[0] if isinstance(data, (list, tuple)) and data else data
    bank = torch.as_tensor(np.asarray(bank) if not torch.is_tensor(bank) else bank)
    if bank.dim() != 2 or not bank.is_floating_point():
        raise ConfigError(f"{p}: not an attribute bank (a float (E, K) array or [bank, flags])")
    return bank.float()


@register_method
class Excel(Method):
    name = "excel"
    Options = ExcelOptions

    # maps per image from the labels' text (surgery maps refined by attention), labels by its own refiner
    cams = CamDeclaration(source="per_image")
    refiners = ("excel",)

    @classmethod
    def tiny_overrides(cls) -> tuple[str, dict[str, object]]:
        """A random 3-block CLIP of width 64 (no weight file: ``model.pretrained`` null) on a 2x2 token grid."""
        arch = (
            "{embed_dim: 16, image_size: 32, patch_size: 16, vision_width: 64, vision_layers: 3, "
            "context_length: 77, vocab_size: 49408, text_width: 64, text_heads: 1, text_layers: 1}"
        )
        descriptors = Path(__file__).resolve().parents[4] / "configs/excel/descriptors_synthetic.json"
        return "configs/excel/synthetic_cpu.yaml", {
            "options.arch": arch,
            "options.descriptors": str(descriptors),
            "options.input_size": 32,
            "options.embedding_dim": 16,
            "options.decoder_heads": 2,
            "options.n_clusters": 4,
            "options.surgery_blocks": 2,
            "options.attn_layers": 2,
            "options.radius": 1,
            "options.lvc_start": 1,
        }

    def __init__(self, cfg: Config, classes: Sequence[str]):
        super().__init__(cfg, classes)
        o = self.options
        clip_file = read_clip_weights(self.options, cfg.model.pretrained) if cfg.model.pretrained else None
        if not o.arch:
            raise ConfigError(
                "excel: options.arch is empty; give model.pretrained=CLIPFILE (train) or make the "
                "run with `wsss import excel CLIPFILE ...`"
            )
        if not o.prompts:  # the class names (synonyms applied) are the prompts
            o.prompts = prompts_for(self.class_names, o.synonyms or {})
        self._check_options()
        arch = ClipArch(**o.arch)
        self.clip = build_clip(arch, quick_gelu=quick_gelu_of(o))
        if clip_file is not None:
            self.clip.load_state_dict(clip_file.state_dict())
        for p in self.clip.parameters():  # frozen (Q23: the official encoder gets no gradient either)
            p.requires_grad_(False)
        self.quirks = ExcelModelQuirks(
            inplace_alias=o.quirk_inplace_alias,
            heads_summed=o.quirk_heads_summed,
            token_axis_norm=o.quirk_token_axis_norm,
            cls_in_minmax=o.quirk_cls_in_minmax,
        )
        self.decoder = ExcelDecoder(
            in_channels=arch.vision_width,
            embedding_dim=o.embedding_dim,
            num_layers=arch.vision_layers,
            num_classes=self.num_classes,
            decoder_layers=o.decoder_layers,
            decoder_heads=o.decoder_heads,
        )
        # the TSE bank (E, K), computed once per run (build_bank) and kept in its weights (Q12)
        self.register_buffer("attr_bank", torch.zeros(arch.embed_dim, o.n_clusters))
        self.register_buffer("bank_ready", torch.zeros((), dtype=torch.bool))
        # the decoder's training steps: a run's maps use LVC once the decoder has trained that far
        self.register_buffer("decoder_steps", torch.zeros((), dtype=torch.long))
        self.par = PAR(dilations=cfg.cam.par.dilations, num_iter=cfg.cam.par.num_iter)
        self._text: torch.Tensor | None = None
        self.register_load_state_dict_pre_hook(self._forget_text)

    # -- set-up ---------------------------------------------------------------------------------
    def _check_options(self) -> None:
        o = self.options
        if len(o.prompts) != self.num_classes - 1:
            raise ConfigError(f"excel: options.prompts has {len(o.prompts)} entries for {self.num_classes - 1} classes")
        if not o.templates or not o.background:
            raise ConfigError("excel: options.templates and options.background must not be empty")
        if not o.descriptors and not o.bank:
            raise ConfigError(
                "excel: options.descriptors must name a JSON file of class descriptions (docs/methods/excel.md)"
            )
        if o.input_size % 16 and o.input_size % int(o.arch.get("patch_size", 16)):
            raise ConfigError(f"excel: options.input_size {o.input_size} is not a multiple of the patch size")

    def build_bank(self) -> None:
        """The TSE attribute bank (E, K), computed now and kept in the run (docs/methods/excel.md#tse): the k-means
        of the CLIP text embeddings of ``options.descriptors``, or the file ``options.bank``."""
        o = self.options
        if o.bank:
            bank = read_bank(o.bank)
        else:
            descriptions = read_descriptors(o.descriptors, self.class_names)
            emb = descriptor_embeddings(self.clip, descriptions)
            if len(emb) < o.n_clusters:
                raise ConfigError(f"{o.descriptors}: {len(emb)} descriptions for options.n_clusters={o.n_clusters}")
            bank = kmeans_bank(emb, o.n_clusters, seed=o.kmeans_seed)
        if tuple(bank.shape) != tuple(self.attr_bank.shape):
            raise ConfigError(
                f"{o.bank or o.descriptors}: an attribute bank of shape {tuple(bank.shape)}, this CLIP "
                f"and options.n_clusters need {tuple(self.attr_bank.shape)}"
            )
        self.attr_bank.copy_(bank.to(self.attr_bank))
        self.bank_ready.fill_(True)
        self._text = None

    def _forget_text(self, *_: Any, **__: Any) -> None:
        self._text = None

    def text_attr(self) -> torch.Tensor:
        """The enriched text (C_fg + C_bg, E): TSE of the class prompts with the attribute bank."""
        if self._text is None:
            if not bool(self.bank_ready):
                raise UsageError("excel: the run has no attribute bank; make it with `wsss import excel` or train")
            from wsss.cam.clip_es import text_features

            o = self.options
            with torch.no_grad():
                text = torch.cat(
                    [
                        text_features(self.clip, o.prompts, o.templates),
                        text_features(self.clip, o.background, o.templates),
                    ]
                )
                self._text = enrich_text(text, self.attr_bank, self.num_classes - 1, keep_ratio=o.keep_ratio)
        return self._text

    # -- the shared forward ---------------------------------------------------------------------
    def clip_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images normalised with ImageNet's statistics (the pipeline's) -> CLIP's input: ImageNet's statistics
        kept (Q3) or CLIP's own."""
        return clip_input(images, imagenet_stats=self.options.quirk_imagenet_stats)

    def encode(self, images: torch.Tensor, ex_feats: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The frozen CLIP on square ``images`` (pipeline-normalised): patch-text maps (B, N, C_fg), attention
        (L, B, 1+N, 1+N) and every block's tokens (L, B, 1+N, D) (docs/methods/excel.md#svc, #feature-surgery)."""
        with torch.no_grad():
            x, blocks = self.clip_images(images), self.options.surgery_blocks
            feats, attn, layers = surgery_forward(self.clip, x, self.quirks, surgery_blocks=blocks, ex_feats=ex_feats)
            maps = feature_surgery(feats, self.text_attr(), self.quirks)[:, 1:, : self.num_classes - 1]
        return {"maps": maps, "attn": attn, "all_feats": layers}

    def grid(self, images: torch.Tensor) -> tuple[int, int]:
        p = int(self.options.arch["patch_size"])
        return images.shape[-2] // p, images.shape[-1] // p

    def square(self, images: torch.Tensor) -> torch.Tensor:
        s = self.options.input_size
        if tuple(images.shape[-2:]) == (s, s):
            return images
        return F.interpolate(images, size=(s, s), mode="bilinear", align_corners=False)

    # -- inference ------------------------------------------------------------------------------
    @torch.no_grad()
    def refined_maps(self, x: torch.Tensor, classes: np.ndarray) -> torch.Tensor:
        """The attention-refined maps (k, h, w) of the labelled 0-based ``classes`` of one square input ``x``
        (1, 3, S, S): the training-free route, or, once the decoder is trained, the calibrated one (LVC and the
        decoder's attention, docs/methods/excel.md#lvc, #layer-selection)."""
        enc = self.encode(x)
        seg_attn = None
        if self.trained_decoder:
            _, fts, attn_pred = self.decoder(enc["all_feats"], self.grid(x))
            enc = self.encode(x, ex_feats=fts)
            seg_attn = attn_pred[0]
        return refine_with_attention(
            enc["maps"][0][:, torch.as_tensor(classes)],
            enc["attn"][:, 0],
            self.grid(x),
            box_threshold=self.options.box_threshold,
            layers=self.options.attn_layers,
            seg_attn=seg_attn,
            box_edge_loss=self.options.quirk_box_edge_loss,
        )

    @property
    def trained_decoder(self) -> bool:
        """Whether the decoder has trained up to LVC (``options.lvc_start``): then ``wsss cam`` calibrates."""
        return int(self.decoder_steps) >= max(self.options.lvc_start, 1)

    def labelled_cam_of_image(self, image: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """The refined maps (k, H, W) float32 in [0, 1] of an (H, W, 3) uint8 image for the 0-based foreground
        ``classes``: each min-max scaled and resized to the image (``generate_cam_label``)."""
        from wsss.cam.clip_es import scale_cam

        classes = np.asarray(classes, dtype=np.int64)
        h, w = image.shape[:2]
        if classes.size == 0:
            return np.zeros((0, h, w), dtype=np.float32)
        refined = self.refined_maps(self._input_of(image), classes).float().cpu().numpy()
        return np.stack([scale_cam(m, (w, h)) for m in refined]).astype(np.float32)

    def _input_of(self, image: np.ndarray) -> torch.Tensor:
        """(1, 3, S, S): the image normalised as the official ``normalize_img`` ((x - 255 mean) / (255 std), ImageNet
        statistics: the pipeline's), resized (bilinear) to ``options.input_size``."""
        dev = next(self.decoder.parameters()).device
        mean = torch.tensor([255 * m for m in IMAGENET_MEAN]).view(3, 1, 1)
        std = torch.tensor([255 * s for s in IMAGENET_STD]).view(3, 1, 1)
        x = (torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() - mean) / std
        return self.square(x[None].to(dev))

    def pseudo_label(self, image: np.ndarray, classes: np.ndarray, cams: np.ndarray) -> np.ndarray:
        """``wsss pseudo --refine excel``: background ``1 - max``, PAR, argmax (docs/methods/excel.md#par), on the saved
        maps (k, H, W) of the 0-based foreground ``classes``. PAR reads the normalised square input (Q4) or the image
        in [0, 1]."""
        # PAR on the method's device, as the official training-free labels (PAR and the inputs on the GPU:
        # tools/infer_lam.py:168, :94); on the CPU of a GPU machine it was far slower (BENCHMARKS.md)
        dev = next(self.decoder.parameters()).device
        if self.options.quirk_par_on_normalized:
            guide = self._input_of(image)[0]
        else:
            guide = (torch.from_numpy(image).permute(2, 0, 1).float() / 255.0).to(dev)
        maps = torch.from_numpy(np.asarray(cams, dtype=np.float32))
        return labels_from_maps(maps, torch.as_tensor(classes), guide, self.par).cpu().numpy()

    @property
    def has_seg_head(self) -> bool:
        """A decoder that has trained (``wsss train``): a training-free run has none to predict with."""
        return int(self.decoder_steps) > 0

    def seg_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The decoder's scores (B, C, h, w) on the square resize of ``images``; the caller upsamples."""
        x = self.square(images)
        seg, _, _ = self.decoder(self.encode(x)["all_feats"], self.grid(x))
        return seg

    # -- training ---------------------------------------------------------------------------------
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Only the decoder learns (official group 3, lr x10): the CLIP is frozen."""
        return {"decoder": list(self.decoder.parameters())}

    def built_options(self) -> dict[str, Any]:
        o = self.options
        return {"arch": dict(o.arch), "quick_gelu": quick_gelu_of(o)}

    def on_train_start(self, ctx: Any) -> None:
        """A fresh run computes its attribute bank here (a resumed one has it from its checkpoint)."""
        if ctx.step == 0 and not self.options.weights:  # resumed: the CLIP of its checkpoint
            warnings.warn(
                "excel: no CLIP weights (model.pretrained is null): training on a random CLIP",
                ConfigWarning,
                stacklevel=2,
            )
        if not bool(self.bank_ready):
            self.build_bank()

    def train(self, mode: bool = True) -> Excel:
        super().train(mode)
        self.clip.eval()  # frozen, always in eval mode (the official encoder.eval() in every forward)
        return self

    def training_step(self, batch: dict[str, Any], step: int, active: set[str]) -> dict[str, torch.Tensor]:
        """One training iteration (docs/methods/excel.md#training-step): the online pseudo labels of the frozen CLIP
        (LVC and the decoder's attention from ``options.lvc_start``), the balanced segmentation loss and the
        affinity loss on the decoder's attention."""
        o = self.options
        images, labels = batch["image"], batch["labels"]
        b, _, H, W = images.shape
        grid = self.grid(images)
        enc = self.encode(images)
        seg, fts, attn_pred = self.decoder(enc["all_feats"], grid)
        lvc = step >= o.lvc_start
        maps = self.encode(images, ex_feats=fts.detach())["maps"] if lvc else enc["maps"]
        pseudo = self._online_labels(images, labels, maps, enc["attn"], attn_pred.detach() if lvc else None, grid)
        logits = F.interpolate(seg, size=(H, W), mode="bilinear", align_corners=False)
        terms = {"seg": balanced_seg_loss(logits, pseudo)}
        from_seg = o.aff_from_seg_start is not None and step >= o.aff_from_seg_start
        target = logits.detach().argmax(1) if from_seg else pseudo
        mask = radius_mask(grid[0], grid[1], o.radius).to(images.device)
        aff = affinity_label(target, grid, mask, ignore_diag=not o.quirk_affinity_diagonal)
        terms["aff"] = attention_affinity_loss(attn_pred, aff)
        self.decoder_steps.fill_(step + 1)
        return terms

    @torch.no_grad()
    def _online_labels(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        maps: torch.Tensor,
        attn: torch.Tensor,
        seg_attn: torch.Tensor | None,
        grid: tuple[int, int],
    ) -> torch.Tensor:
        o = self.options
        guide = denormalize_image(images, truncate_uint8=o.quirk_truncating_denorm)
        out = []
        for i in range(images.shape[0]):
            classes = torch.nonzero(labels[i] > 0.5).flatten()
            refined = refine_with_attention(
                maps[i][:, classes],
                attn[:, i],
                grid,
                box_threshold=o.box_threshold,
                layers=o.attn_layers,
                seg_attn=None if seg_attn is None else seg_attn[i],
                box_edge_loss=o.quirk_box_edge_loss,
            )
            out.append(labels_from_refined(refined, classes, guide[i], tuple(images.shape[-2:]), self.par))
        return torch.stack(out).to(images.device).long()


@register_refiner("excel")
def excel_pseudo_refiner(job: RefineJob, ids: Sequence[str]) -> Refiner:
    """``wsss pseudo --refine excel``: ExCEL's labels of the saved maps (background ``1 - max``, PAR;
    :meth:`Excel.pseudo_label`); only runs of method excel accept it (``Excel.refiners``)."""
    method = job.run.method
    job.require_cams(ids)

    def refine(id: str, image: np.ndarray, labels: np.ndarray) -> np.ndarray:
        classes = np.flatnonzero(np.asarray(labels) > 0.5)
        return method.pseudo_label(image, classes, job.cam(id)[classes])

    return refine


def build_from_clip_file(path: Path, cfg: Config, class_names: list[str]) -> tuple[Method, dict[str, Any]]:
    """``wsss import excel``: the training-free run of ``cfg`` from a CLIP weight file (the layouts of
    ``models/clip_files.py``) and the dataset's classes: the CLIP, the class prompts and the TSE bank of
    ``options.descriptors``, computed now and kept in the run."""
    model = method_from_clip_file(path, cfg, class_names)
    model.build_bank()
    return model, {}


register_import(
    ImportLayout(
        "excel",
        "excel",
        build_from_clip_file,
        summary="excel: a CLIP ViT weight file or folder (OpenAI, open_clip, Hugging Face); training-free route",
        next_step="ExCEL training-free (next: wsss cam {out} --split SPLIT, then wsss pseudo {out} --refine excel)",
    )
)
