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


class ProjectionHead(nn.Module):
    """DINO-style projection head of SeCo (docs/methods/seco.md#networks): Linear-GELU-Linear-GELU-Linear,
    truncated-normal (std 0.02) weights, zero biases, then L2 normalisation.

    The output dimension equals the input (token) dimension because SeCo's LIG compares the
    projected queries with prototypes kept in the raw class-token space (seco.md#networks). The
    official head also builds a weight-normed ``last_layer`` that its forward never uses; it is
    left out here (it has no effect on training: AdamW skips parameters without gradients).
    """

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int | None = None):
        super().__init__()
        out_dim = out_dim or in_dim
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, out_dim),
        )
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1)
