"""Segmentation heads: ToCo's LargeFOV and SeCo's ASPP (docs/methods/seco.md#heads)."""

from __future__ import annotations

import torch
from torch import nn

from wsss.core.errors import UsageError


class LargeFOV(nn.Module):
    """conv3x3 d5 -> ReLU -> conv3x3 d5 -> ReLU -> conv1x1, all without bias (ToCo).

    ToCo never calls its ``_init_weights``, so PyTorch's default init is the official behaviour.
    """

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 512, dilation: int = 5):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_dim, hidden, 3, padding=dilation, dilation=dilation, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, num_classes, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ASPP(nn.Module):
    """Four parallel 3x3 convs with dilations 6/12/18/24, outputs summed (DeepLab-v2 style).

    Weights N(0, 0.01), bias 0, as SeCo's decoder.
    """

    def __init__(self, in_dim: int, num_classes: int, dilations: tuple[int, ...] = (6, 12, 18, 24)):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_dim, num_classes, 3, padding=d, dilation=d, bias=True) for d in dilations
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for conv in self.branches[1:]:
            out = out + conv(x)
        return out


def create_decoder(name: str, in_dim: int, num_classes: int, hidden: int = 512) -> nn.Module | None:
    if name == "aspp":
        return ASPP(in_dim, num_classes)
    if name == "largefov":
        return LargeFOV(in_dim, num_classes, hidden=hidden)
    if name == "none":
        return None
    raise UsageError(f"unknown decoder {name!r}: choose 'aspp', 'largefov' or 'none'")
