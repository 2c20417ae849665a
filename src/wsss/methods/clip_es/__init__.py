"""CLIP-ES (Lin et al., CVPR 2023, "CLIP is Also an Efficient Segmenter"): CAMs of a frozen CLIP from
the class names alone, refined by CLIP's own attention (CAA), then CRF pseudo labels; no classifier
training (docs/methods/clip_es.md#spec).

A run is created from a CLIP weight file and a dataset's class list
(``wsss import clip_es ViT-B-16.pt --config configs/clip_es/voc.yaml --out RUN data.root=ROOT``,
registered here, ``build_from_clip_file``); ``wsss cam`` then calls :meth:`ClipES.image_cams` (its
:meth:`ClipES.labelled_cam_of_image`) per image and ``wsss pseudo --refine crf`` :meth:`ClipES.crf_refiner` (its
:meth:`ClipES.crf_pseudo_label`). The segmentation network is the usual
DeepLab stage (``configs/deeplab/``) on those pseudo labels.

Prompts: ``options.templates`` filled with each foreground class's prompt (``options.prompts``, written
at import from the dataset's ``classes.txt`` with ``options.synonyms`` applied: ``{name: "name,syn1,syn2"}``,
one comma-separated string as the official ``new_class_names``) and with each ``options.background``
name. Every official quirk is an ``options.quirk_*`` switch (docs/methods/clip_es.md#quirk-switches).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from wsss.cam.clip_es import ClipESQuirks, clip_es_cams, clip_es_crf_label, text_features, zero_shot_scores
from wsss.core.config import FRACTION, POSITIVE, Config, setting
from wsss.core.errors import ConfigError, UsageError
from wsss.methods.clip_runs import VOC_BACKGROUND, method_from_clip_file, prompts_for
from wsss.methods.contract import CamDeclaration, JobStop, Method, RefineJob, Refiner, register_method
from wsss.methods.imports import ImportLayout, register_import
from wsss.models.clip import ClipArch, build_clip


class UnlabelledImageStop(JobStop):
    """``quirk_unlabelled_stops_worker``: an image without labels ends the official CAM worker."""


@dataclass
class ClipESOptions:
    arch: dict[str, int | float] = field(default_factory=dict)  # ClipArch of the weight file (written at import)
    # text heads if the file's text width is not 64 x heads (tiny test CLIPs)
    text_heads: int | None = setting(None, **POSITIVE)
    # activation: true QuickGELU (OpenAI's weights), false GELU (most open_clip/LAION weights); null: what the
    # weight file says (models/clip_files.py), written at import; a file that says nothing needs it set
    quick_gelu: bool | None = None
    weights: str = ""  # the CLIP weight file the run was created from (provenance only)
    templates: list[str] = field(default_factory=lambda: ["a clean origami {}."])
    background: list[str] = field(default_factory=lambda: list(VOC_BACKGROUND))
    synonyms: dict[str, str] = field(default_factory=dict)  # class name -> its prompt, e.g. "bird avian"
    prompts: list[str] = field(default_factory=list)  # one per foreground class (written at import)
    box_threshold: float = setting(0.4, **FRACTION)  # scoremap2bbox threshold (x max)
    attn_blocks: int = setting(8, **POSITIVE)  # CAA averages the attention of the last this many blocks
    # CRF pseudo label: 255 where the top marginal is below; None: none
    crf_confidence: float | None = setting(0.95, **FRACTION)
    quirk_pos_emb_fp16: bool = False
    quirk_layers_by_77_tokens: bool = False
    quirk_box_clip_minus_one: bool = False
    quirk_crf_image_wrap: bool = False
    quirk_unlabelled_stops_worker: bool = False
    quirk_unsaved_highres_gradcam: bool = False


@register_method
class ClipES(Method):
    name = "clip_es"
    Options = ClipESOptions

    trainable = False  # a run comes from a CLIP weight file (wsss import clip_es)
    # CAMs per image from the labels' text (docs/methods/clip_es.md#pipeline, image_cams), refined by its own CRF
    # (crf_refiner)
    cams = CamDeclaration(source="per_image")

    def __init__(self, cfg: Config, classes: Sequence[str]):
        super().__init__(cfg, classes)
        o = self.options
        if not o.arch:
            raise ConfigError("clip_es: options.arch is empty; create the run with `wsss import clip_es WEIGHTS ...`")
        if not o.prompts:  # the class names (synonyms applied) are the prompts; the run's config records them
            o.prompts = prompts_for(self.class_names, o.synonyms or {})
        if len(o.prompts) != self.num_classes - 1:
            raise ConfigError(
                f"clip_es: options.prompts has {len(o.prompts)} entries for {self.num_classes - 1} classes"
            )
        if not o.templates or not o.background:
            raise ConfigError("clip_es: options.templates and options.background must not be empty")
        # a run written before options.quick_gelu existed was built with QuickGELU
        self.clip = build_clip(ClipArch(**o.arch), quick_gelu=True if o.quick_gelu is None else bool(o.quick_gelu))
        for p in self.clip.parameters():  # frozen: Grad-CAM takes gradients of activations only
            p.requires_grad_(False)
        self.quirks = ClipESQuirks(**{f: getattr(o, f"quirk_{f}") for f in ClipESQuirks.__dataclass_fields__})
        self._text: tuple[torch.Tensor, torch.Tensor] | None = None
        self.register_load_state_dict_pre_hook(self._forget_text)

    def _forget_text(self, *_: Any, **__: Any) -> None:
        self._text = None

    def text_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(foreground (C-1, E), background (n_bg, E)) text features, computed once per weights."""
        if self._text is None:
            o = self.options
            self._text = (
                text_features(self.clip, o.prompts, o.templates),
                text_features(self.clip, o.background, o.templates),
            )
        return self._text

    # -- inference ------------------------------------------------------------------------------

    def labelled_cam_of_image(self, image: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """CLIP-ES refined CAMs (k, H, W) float32 in [0, 1] of an (H, W, 3) uint8 image for the 0-based
        foreground classes ``classes``."""
        classes = np.asarray(classes, dtype=np.int64)
        if classes.size == 0:
            if self.quirks.unlabelled_stops_worker:
                raise UnlabelledImageStop("an image without labels ends the official CAM worker")
            return np.zeros((0, *image.shape[:2]), dtype=np.float32)
        fg, bg = self.text_features()
        cams, _ = clip_es_cams(
            self.clip,
            image,
            classes,
            fg,
            bg,
            self.quirks,
            box_threshold=self.options.box_threshold,
            attn_blocks=self.options.attn_blocks,
        )
        return cams

    def image_scores(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``wsss tag``: CLIP zero-shot scores of an (H, W, 3) uint8 image: (foreground (C-1,), background
        prompts (n_bg,)), one softmax over both (``cam.clip_es.zero_shot_scores``)."""
        fg, bg = self.text_features()
        probs = zero_shot_scores(self.clip, image, fg, bg, self.quirks)
        return probs[: len(fg)], probs[len(fg) :]

    def crf_refiner(self, job: RefineJob) -> Refiner:
        """``wsss pseudo --refine crf`` on a CLIP-ES run: its own CRF of each image's saved labelled maps
        (:meth:`crf_pseudo_label`, step 14), not ToCo's two-level CRF."""
        return lambda id, image, labels: self.crf_pseudo_label(image, *job.labelled_cam(id))

    def crf_pseudo_label(self, image: np.ndarray, classes: np.ndarray, cams: np.ndarray) -> np.ndarray:
        """The official CRF labels of the saved CAMs (float16, as saved) of the 0-based foreground ``classes``;
        255 below ``options.crf_confidence``."""
        label, _ = clip_es_crf_label(
            image,
            classes,
            np.asarray(cams).astype(np.float16),
            wrap_image=self.quirks.crf_image_wrap,
            confidence=self.options.crf_confidence,
        )
        return label

    def seg_logits(self, images: torch.Tensor) -> torch.Tensor:
        raise UsageError("clip_es has no segmentation head: train configs/deeplab/ on its pseudo labels")

    @property
    def has_seg_head(self) -> bool:
        return False

    # -- training: none -------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], step: int, active: set[str]) -> dict[str, torch.Tensor]:
        raise UsageError("clip_es needs no training: create the run with `wsss import clip_es WEIGHTS ...`")

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {}


def build_from_clip_file(path: Path, cfg: Config, class_names: list[str]) -> tuple[Method, dict[str, Any]]:
    """``wsss import clip_es``: the method of ``cfg`` (no training) from a CLIP weight file and the dataset's
    classes (``clip_runs.method_from_clip_file``)."""
    model = method_from_clip_file(path, cfg, class_names)
    return model, {}


register_import(
    ImportLayout(
        "clip_es",
        "clip_es",
        build_from_clip_file,
        summary="clip_es: a CLIP ViT weight file or folder (OpenAI, open_clip, Hugging Face), no training",
        next_step="CLIP-ES (no training; next: wsss cam {out} --split SPLIT)",
    )
)
