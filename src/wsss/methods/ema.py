"""Exponential moving averages of networks (momentum teachers): SeCo's local teacher and the DeepLab stage's
mean teacher (docs/methods/deeplab.md#consistency)."""

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
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float, *, buffers: bool = False) -> None:
    """theta_t <- m * theta_t + (1 - m) * theta_s, parameter by parameter (MoCo / SeCo 3.4).

    ``buffers``: the floating-point buffers (BatchNorm's running statistics) are averaged the same way and the
    others (its batch counter) copied, as timm's ``ModelEmaV3``; without it they are left as they are (SeCo's
    teacher, whose encoder has none)."""
    t_params = list(teacher.parameters())
    s_params = list(student.parameters())
    if len(t_params) != len(s_params):
        raise ValueError("teacher and student have different parameter lists")
    torch._foreach_mul_(t_params, momentum)
    # no_grad already: a detach per parameter would be one more dispatched operator each
    torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)
    if not buffers:
        return
    t_bufs, s_bufs = list(teacher.buffers()), list(student.buffers())
    if len(t_bufs) != len(s_bufs):
        raise ValueError("teacher and student have different buffer lists")
    for t, s in zip(t_bufs, s_bufs):
        if t.is_floating_point():
            t.mul_(momentum).add_(s, alpha=1.0 - momentum)
        else:
            t.copy_(s)


def mean_teacher_decay(decay: float, steps_done: int) -> float:
    """The EMA decay after ``steps_done`` optimiser steps: ``min(1 - 1 / (steps_done + 1), decay)``, the ramp of
    the mean teacher's code (Tarvainen and Valpola 2017, ``update_ema_variables``), so that the teacher follows
    the student closely over the first steps instead of averaging in its random start."""
    return min(1.0 - 1.0 / (steps_done + 1), decay)
