"""The trainable decoder of the CLIP methods that train one (ExCEL, WeCLIP+): SegFormerHead-style token MLPs of
CLIP blocks fused by a 1x1 convolution (``BlockFusion``) and a small transformer with a 1x1 classifier
(``DecoderTransformer``), as the official ``segformer_head.py`` / ``Decoder/TransDecoder.py`` of both codes define
them (docs/methods/excel.md#decoder, docs/methods/weclip_plus.md#model). Parameter names are the official ones."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class _TokenMLP(nn.Module):
    """SegFormerHead's ``MLP``: Linear, ReLU, Linear on the tokens of one block."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)
        self.proj_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, h, w) -> (B, hw, dim)
        return self.proj_2(F.relu(self.proj(x.flatten(2).transpose(1, 2))))


class BlockFusion(nn.Module):
    """SegFormerHead over every CLIP block: a token MLP per block, concatenated, a 1x1 fusion, Dropout2d(0.1)."""

    def __init__(self, in_channels: int, dim: int, num_layers: int):
        super().__init__()
        self.linears_modulelist = nn.ModuleList(_TokenMLP(in_channels, dim) for _ in range(num_layers))
        self.linear_fuse = nn.Conv2d(dim * num_layers, dim, kernel_size=1)
        self.dropout = nn.Dropout2d(0.1)

    def forward(self, layers: torch.Tensor) -> torch.Tensor:  # (L, B, C, h, w) -> (B, dim, h, w)
        _, b, _, h, w = layers.shape
        parts = [
            mlp(x.to(self.linear_fuse.weight.dtype)).permute(0, 2, 1).reshape(b, -1, h, w)
            for mlp, x in zip(self.linears_modulelist, layers)
        ]
        return self.dropout(self.linear_fuse(torch.cat(parts, dim=1)))


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class _DecoderBlock(nn.Module):
    """A pre-norm transformer block (sequence first), QuickGELU MLP: TransDecoder's ``ResidualAttentionBlock``."""

    def __init__(self, width: int, heads: int, out_proj_fp16: bool = False):
        super().__init__()
        self.out_proj_fp16 = out_proj_fp16
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [("c_fc", nn.Linear(width, width * 4)), ("gelu", _QuickGELU()), ("c_proj", nn.Linear(width * 4, width))]
            )
        )
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.ln_1(x)
        if self.out_proj_fp16:  # WeCLIP+'s myAtt (docs/methods/weclip_plus.md#q1); tokens are sequence-first
            from wsss.models.clip import attention_fp16_out

            out, attn = attention_fp16_out(self.attn, h.transpose(0, 1))
            out = out.transpose(0, 1).to(x.dtype)
        else:
            out, attn = self.attn(h, h, h, need_weights=need_weights)
        x = x + out
        return x + self.mlp(self.ln_2(x)), attn


class DecoderTransformer(nn.Module):
    """TransDecoder's ``DecoderTransformer``: transformer blocks over the tokens, a 1x1 classifier.
    ``out_proj_fp16``: each attention's output projection in float16 (WeCLIP+'s attention module)."""

    def __init__(self, width: int, layers: int, heads: int, num_classes: int, out_proj_fp16: bool = False):
        super().__init__()
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.Sequential(*(_DecoderBlock(width, heads, out_proj_fp16) for _ in range(layers)))
        self.linear_pred = nn.Conv2d(width, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, h, w) -> (B, classes, h, w)
        return self.with_attention(x, need_weights=False)[0]

    def with_attention(self, x: torch.Tensor, need_weights: bool = True) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(scores (B, classes, h, w), each block's head-averaged attention (B, hw, hw) if ``need_weights``)."""
        b, c, h, w = x.shape
        tokens, maps = x.reshape(b, c, h * w).permute(2, 0, 1), []
        for block in self.transformer.resblocks:
            tokens, attn = block(tokens, need_weights)
            if attn is not None:
                maps.append(attn)
        return self.linear_pred(tokens.permute(1, 2, 0).reshape(b, c, h, w)), maps
