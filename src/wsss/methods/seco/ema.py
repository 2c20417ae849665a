"""Exponential moving averages of networks (momentum teachers)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` that takes no gradient (a teacher initialised from the student)."""
    teacher = copy.deepcopy(module)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """theta_t <- m * theta_t + (1 - m) * theta_s, parameter by parameter (MoCo / SeCo 3.4)."""
    t_params = list(teacher.parameters())
    s_params = list(student.parameters())
    if len(t_params) != len(s_params):
        raise ValueError("teacher and student have different parameter lists")
    torch._foreach_mul_(t_params, momentum)
    # no_grad already: a detach per parameter would be one more dispatched operator each
    torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)
