"""Classification heads and the CAM they define (docs/methods/seco.md#heads)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wsss.core.errors import UsageError


class CAMClassifier(nn.Module):
    """1x1 conv classifier without bias over a pooled feature map.

    ``forward`` pools first (global max pooling "gmp" as ToCo/SeCo, or average "gap") and returns
    logits (B, C-1); ``cam`` applies the same weights at every position, which is the class
    activation map (B, C-1, h, w).
    """

    def __init__(self, in_dim: int, num_fg: int, pooling: str = "gmp"):
        super().__init__()
        if pooling not in ("gmp", "gap"):
            raise UsageError(f"pooling must be 'gmp' or 'gap', got {pooling!r}")
        self.pooling = pooling
        self.conv = nn.Conv2d(in_dim, num_fg, kernel_size=1, bias=False)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        if self.pooling == "gmp":
            pooled = F.adaptive_max_pool2d(fmap, 1)
        else:
            pooled = F.adaptive_avg_pool2d(fmap, 1)
        return self.conv(pooled).flatten(1)

    def cam(self, fmap: torch.Tensor) -> torch.Tensor:
        return F.conv2d(fmap, self.conv.weight)
