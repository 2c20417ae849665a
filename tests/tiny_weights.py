"""Tiny random CLIP and DINOv2 files as the libraries that write them save them: an open_clip model saved by
``open_clip.push_to_hf_hub.save_for_hf`` and a ``transformers.Dinov2Model`` saved by ``save_pretrained``. Built
from configs here, no download; shared by the loaders' tests and the route's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wsss.models.clip import CLIP_MEAN, CLIP_STD


class NoTokenizer:
    def save_pretrained(self, directory) -> None:  # save_for_hf saves the tokenizer too; none is needed here
        pass


def open_clip_model(quick_gelu: bool, *, patch_size: int = 8, image_size: int = 32):
    """A tiny random open_clip CLIP (2 layers of width 64 a tower) and its model config."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    vision = dict(layers=2, width=64, patch_size=patch_size, image_size=image_size)
    text = dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2)
    model = CLIP(32, vision_cfg=CLIPVisionCfg(**vision), text_cfg=CLIPTextCfg(**text), quick_gelu=quick_gelu)
    with torch.no_grad():  # LayerNorms and biases away from their init, so that a swapped one shows
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.visual.image_mean, model.visual.image_std = CLIP_MEAN, CLIP_STD  # as open_clip.create_model sets them
    cfg = {"embed_dim": 32, "vision_cfg": vision, "text_cfg": text, **({"quick_gelu": True} if quick_gelu else {})}
    return model.eval(), cfg


def write_open_clip_folder(folder: Path) -> Path:
    """A tiny QuickGELU ViT with 16-pixel patches (CLIP ViT-B/16's grid) as ``save_for_hf`` writes it: the folder
    (its open_clip_config.json says the activation and the heads)."""
    from open_clip.push_to_hf_hub import save_for_hf

    model, cfg = open_clip_model(True, patch_size=16, image_size=64)
    save_for_hf(model, NoTokenizer(), cfg, folder, safe_serialization=True)
    return folder


def write_dinov2_folder(folder: Path) -> Path:
    """A tiny random DINOv2 with 14-pixel patches (2 heads of width 16) as ``transformers`` saves it: the folder."""
    transformers = pytest.importorskip("transformers")  # the dev extra installs it
    config = transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, patch_size=14, image_size=56
    )
    torch.manual_seed(3)
    model = transformers.Dinov2Model(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return folder
