"""WeCLIP+'s networks (docs/methods/weclip_plus.md#model): the frozen CLIP and DINOv2 features, the two
fusion heads and the shared decoder, and the decoder-side affinity ``attn_pred``.

- :func:`clip_features`: every CLIP block but the last (the official encoder runs ``layers - 1`` blocks for an
  image), their attention maps, the decoder's input (the last of those, the 11th block of ViT-B/16) and the
  tokens Grad-CAM feeds to the last block (the 10th block's output in the official code: Q7).
- :func:`dino_features`: the image resized (bilinear) to multiples of 14, DINOv2's normalised patch tokens.
- :class:`WeclipPlusHead`: ``decoder_fts_fuse`` (CLIP), ``dino_decoder_fts_fuse`` (DINOv2; resized to the CLIP
  grid) and the one ``decoder`` applied to both; ``attn_pred = sigmoid(F^T F)`` of the concatenated features.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wsss.models.clip import vision_blocks
from wsss.models.clip_decoder import BlockFusion, DecoderTransformer


@dataclass
class ClipFeatures:
    """The frozen CLIP's outputs of a batch (grid (h, w) = image // patch)."""

    blocks: list[torch.Tensor]  # each encoder block's tokens (B, 1 + hw, D), blocks 0 .. L-2
    attn: list[torch.Tensor]  # their head-averaged attention (B, 1 + hw, 1 + hw)
    grid: tuple[int, int]

    def decoder_input(self) -> torch.Tensor:
        """(B, D, h, w): the last encoder block's patch tokens (``fts_all_stack[-1]``)."""
        x = self.blocks[-1][:, 1:]
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *self.grid)

    def cam_tokens(self, skip_block: bool = True) -> torch.Tensor:
        """(B, 1 + hw, D): what Grad-CAM's last block reads. ``skip_block`` (Q7): the official
        ``fts_all_stack[-2]``, the output of the block before the last encoder block, so that the CAM path skips
        one block; False: the last encoder block's output, the input the last block has in CLIP."""
        return self.blocks[-2] if skip_block and len(self.blocks) > 1 else self.blocks[-1]


def clip_features(
    clip: nn.Module, images: torch.Tensor, *, pos_fp16: bool = True, out_proj_fp16: bool = True
) -> ClipFeatures:
    """:class:`ClipFeatures` of ``images`` (B, 3, H, W) already in the CLIP's normalisation. Q1 (the official CLIP
    in float16): ``pos_fp16``, the resized position table rounded to float16 (``upsample_pos_emb``);
    ``out_proj_fp16``, each attention's output projection in float16 (``myAtt``)."""
    p = clip.visual.conv1.kernel_size[0]
    blocks, attn = vision_blocks(clip.visual, images, pos_fp16=pos_fp16, out_proj_fp16=out_proj_fp16)
    return ClipFeatures(blocks, attn, (images.shape[-2] // p, images.shape[-1] // p))


@torch.no_grad()
def dino_features(dino: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """DINOv2's normalised patch tokens as a map (B, D, H//p, W//p) of ``images`` resized (bilinear,
    align_corners False) to (H//p*p, W//p*p), p = 14."""
    p = dino.patch_size
    h, w = images.shape[-2] // p, images.shape[-1] // p
    x = F.interpolate(images, size=(h * p, w * p), mode="bilinear", align_corners=False)
    tokens = dino.forward_features(x)["x_norm_patchtokens"]
    return tokens.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2)


@dataclass
class HeadOutput:
    seg_clip: torch.Tensor  # (B, C, h, w)
    seg_dino: torch.Tensor  # (B, C, h, w)
    attn_pred: torch.Tensor  # (B, hw, hw) in (0, 1)
    clip_fts: torch.Tensor  # (B, E, h, w) after the fusion (and its dropout)
    dino_fts: torch.Tensor  # (B, E, h, w) resized to the CLIP grid
    decoder_attn: list[torch.Tensor]  # the decoder's attention on the CLIP branch (need_weights only)

    def seg_prob(self) -> torch.Tensor:
        """``softmax(0.5 seg_dino + 0.5 seg_clip)``, detached: what weights the CAMs."""
        return F.softmax(0.5 * self.seg_dino + 0.5 * self.seg_clip, dim=1).detach()

    def seg(self) -> torch.Tensor:
        """The prediction's scores ``0.5 (seg_clip + seg_dino)`` (training and test)."""
        return 0.5 * self.seg_clip + 0.5 * self.seg_dino


class WeclipPlusHead(nn.Module):
    """The trainable part, in the official names: ``decoder_fts_fuse`` and ``dino_decoder_fts_fuse``
    (SegFormerHead with one layer: token MLP, 1x1 conv, Dropout2d 0.1) and ``decoder`` (DecoderTransformer),
    shared by the two branches. ``out_proj_fp16`` (Q1): the decoder's attention output projections in float16, as
    the official decoder's attention module (the CLIP one) computes them."""

    def __init__(
        self,
        clip_width: int,
        dino_width: int,
        embedding_dim: int,
        num_classes: int,
        decoder_layers: int = 3,
        decoder_heads: int = 8,
        out_proj_fp16: bool = True,
    ):
        super().__init__()
        self.decoder_fts_fuse = BlockFusion(clip_width, embedding_dim, 1)
        self.dino_decoder_fts_fuse = BlockFusion(dino_width, embedding_dim, 1)
        self.decoder = DecoderTransformer(embedding_dim, decoder_layers, decoder_heads, num_classes, out_proj_fp16)

    def forward(self, clip_map: torch.Tensor, dino_map: torch.Tensor, need_weights: bool = False) -> HeadOutput:
        """``clip_map`` (B, D, h, w), ``dino_map`` (B, D', h', w') -> :class:`HeadOutput`."""
        fts = self.decoder_fts_fuse(clip_map[None])
        dino = self.dino_decoder_fts_fuse(dino_map[None])
        dino = F.interpolate(dino, size=fts.shape[-2:], mode="bilinear", align_corners=False)
        seg_clip, maps = self.decoder.with_attention(fts, need_weights)
        seg_dino, _ = self.decoder.with_attention(dino, False)
        both = torch.cat([fts, dino], dim=1).flatten(2)
        attn_pred = torch.sigmoid(both.transpose(2, 1).bmm(both))
        return HeadOutput(seg_clip, seg_dino, attn_pred, fts, dino, maps)


def official_head_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The trainable entries of an official ``WeCLIP_Plus`` state dict (``torch.save(model.state_dict())`` of
    ``scripts/dist_clip_voc.py``; ``module.`` prefixes dropped): ``decoder_fts_fuse.*``, ``dino_decoder_fts_fuse.*``
    and ``decoder.*``, the names :class:`WeclipPlusHead` keeps; the frozen ``encoder.*`` / ``dino_encoder.*`` are
    left out (the run holds its own CLIP and DINOv2)."""
    heads = ("decoder_fts_fuse.", "dino_decoder_fts_fuse.", "decoder.")
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith(heads):
            out[key] = value
    return out
