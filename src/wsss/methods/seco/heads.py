"""SeCo's projection head (docs/methods/seco.md#networks); the classifiers are the shared ``CAMClassifier``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
