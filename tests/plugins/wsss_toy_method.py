"""A method defined outside the wsss package, in one file: what docs/adding-a-method.md walks through.

It registers on import (``custom_imports: [wsss_toy_method]`` in a config, or the entry point of
``entry_point/wsss_toy_method-0.1.dist-info``), and ``wsss train`` / ``cam`` / ``predict`` run it; no
file under src/ names it. It also ships the import of its "official" checkpoint (``wsss import toy FILE``:
the keys under a ``toy_official.`` prefix, as another codebase would name them), registered the same way.

A strided 3x3 convolution for the CAMs and one for the segmentation logits:
nothing to learn from, everything the pipeline asks of a method.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wsss.core.config import Config
from wsss.methods import Method, build_method, register_method
from wsss.methods.imports import ImportLayout, register_import
from wsss.models.weights import read_state_dict


@dataclass
class ToyOptions:
    width: int = 8  # channels of the shared stem
    prompt: str = "a photo of a {}"  # per foreground class name (what a CLIP-based method would encode)


@register_method
class ToyMethod(Method):
    name = "toy"
    Options = ToyOptions

    @classmethod
    def tiny_overrides(cls) -> tuple[str, dict[str, object]]:
        return "configs/cam/synthetic_cpu.yaml", {"method": "toy", "options": "{width: 4}"}

    def __init__(self, cfg: Config, classes: Sequence[str]):
        super().__init__(cfg, classes)
        self.prompts = [self.options.prompt.format(c) for c in self.class_names[1:]]  # the class names arrive
        self.stem = nn.Conv2d(3, self.options.width, 3, stride=4, padding=1)
        self.cam_head = nn.Conv2d(self.options.width, self.num_classes - 1, 1, bias=False)
        self.seg_head = nn.Conv2d(self.options.width, self.num_classes, 1)

    def training_step(self, batch: dict[str, Any], step: int, active: set[str]) -> dict[str, torch.Tensor]:
        cam, _ = self.cam_maps(batch["image"])
        return {"cls": F.multilabel_soft_margin_loss(cam.mean(dim=(2, 3)), batch["labels"])}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "backbone": list(self.stem.parameters()),
            "head": [*self.cam_head.parameters(), *self.seg_head.parameters()],
        }

    def cam_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cam = F.relu(self.cam_head(F.relu(self.stem(images))))
        return cam, cam

    def seg_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.seg_head(F.relu(self.stem(images)))


def toy_from_official(path: Path, cfg: Config, class_names: list[str]) -> tuple[Method, dict[str, Any]]:
    """``wsss import toy FILE``: the "official" keys (``toy_official.<ours>``) mapped to ours, loaded strictly."""
    state = {k.removeprefix("toy_official."): v for k, v in read_state_dict(path).items()}
    model = build_method(cfg, class_names)
    model.load_state_dict(state, strict=True)
    return model, {"imported_keys": len(state)}


register_import(ImportLayout("toy", "toy", toy_from_official, summary="toy: the toy method's official file"))
