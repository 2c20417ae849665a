"""Optimisers on a linear warm-up + polynomial decay schedule.

``PolyWarmupAdamW`` is ToCo/SeCo's (docs/methods/seco.md#optim; golden ``poly_warmup_adamw.npz``); ``PolyWarmupSGD``
the momentum SGD of the DeepLab stage, RCA and SC-CAM, on the same schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


def poly_warmup_lr_mult(
    step: int,
    warmup_iters: int,
    max_iters: int,
    warmup_ratio: float = 1e-6,
    power: float = 0.9,
) -> float:
    """Learning-rate multiplier at ``step`` (docs/methods/seco.md#optim).

    - ``step < warmup_iters``: ``1 - (1 - step/warmup_iters) * (1 - warmup_ratio)``, a linear ramp from
      ``warmup_ratio`` to 1 (the ratio is a multiplier, not an absolute lr);
    - ``step < max_iters``: ``(1 - step/max_iters) ** power`` (the poly decay runs on the absolute
      step, not offset by the warm-up);
    - otherwise 0.0. (:class:`PolyWarmupAdamW` by default does not apply this value: it keeps the
      last lr, like the official optimiser.)
    """
    if step < warmup_iters:
        return 1 - (1 - step / warmup_iters) * (1 - warmup_ratio)
    if step < max_iters:
        return (1 - step / max_iters) ** power
    return 0.0


class _PolyWarmupSchedule:
    """The schedule shared by the poly optimisers: mixed into a ``torch.optim`` class.

    Each group's lr (its own ``"lr"`` or the ``lr`` argument) is its base lr, stored in the group as
    ``"base_lr"``. Every :meth:`step` first sets ``lr = base_lr * poly_warmup_lr_mult(global_step, ...)``
    for every group, then takes the wrapped optimiser's step, then advances ``global_step``.

    ``hold_lr_after_max=True`` (official ToCo/SeCo behaviour): for ``global_step >= max_iter`` the lr
    is **not updated** and keeps its previous value. With False it is set to 0.

    ``state_dict()`` carries ``global_step`` (and the base lrs, inside the param groups), so
    ``load_state_dict`` resumes the schedule where it stopped.
    """

    param_groups: list[dict[str, Any]]

    def _init_schedule(
        self, warmup_iter: int, max_iter: int, warmup_ratio: float, power: float, hold_lr_after_max: bool
    ) -> None:
        self.warmup_iter = int(warmup_iter)
        self.max_iter = int(max_iter)
        self.warmup_ratio = float(warmup_ratio)
        self.power = float(power)
        self.hold_lr_after_max = bool(hold_lr_after_max)
        self.global_step = 0
        for group in self.param_groups:
            group.setdefault("base_lr", group["lr"])

    def lr_mult(self, step: int | None = None) -> float:
        """The schedule multiplier at ``step`` (default: the current ``global_step``)."""
        s = self.global_step if step is None else step
        return poly_warmup_lr_mult(s, self.warmup_iter, self.max_iter, self.warmup_ratio, self.power)

    def _update_lr(self) -> None:
        if self.global_step >= self.max_iter and self.hold_lr_after_max:
            return
        mult = self.lr_mult()
        for group in self.param_groups:
            group["lr"] = group["base_lr"] * mult

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Set the scheduled lr, take the optimiser step, advance ``global_step``."""
        self._update_lr()
        loss = super().step(closure)  # type: ignore[misc]
        self.global_step += 1
        return loss

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()  # type: ignore[misc]
        sd["global_step"] = self.global_step
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        global_step = state_dict.pop("global_step", None)
        base_lrs = [group["base_lr"] for group in self.param_groups]
        super().load_state_dict(state_dict)  # type: ignore[misc]
        for group, base in zip(self.param_groups, base_lrs):  # state saved by a plain optimiser
            group.setdefault("base_lr", base)
        if global_step is not None:
            self.global_step = int(global_step)


class PolyWarmupAdamW(_PolyWarmupSchedule, torch.optim.AdamW):
    """AdamW whose lr follows :func:`poly_warmup_lr_mult` (docs/methods/seco.md#optim, ``PolyWarmupAdamW``)."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        warmup_iter: int = 1500,
        max_iter: int = 20000,
        warmup_ratio: float = 1e-6,
        power: float = 0.9,
        hold_lr_after_max: bool = True,
    ) -> None:
        torch.optim.AdamW.__init__(self, params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        self._init_schedule(warmup_iter, max_iter, warmup_ratio, power, hold_lr_after_max)


class PolyWarmupSGD(_PolyWarmupSchedule, torch.optim.SGD):
    """SGD with momentum on the same poly schedule: the DeepLab stage, RCA (docs/methods/rca.md#training)
    and SC-CAM (docs/methods/sccam.md#training).

    Those codes use ``lr = base * (1 - it/max_it) ** 0.9`` without warm-up: ``warmup_iter=0``.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        weight_decay: float = 5e-4,
        momentum: float = 0.9,
        nesterov: bool = False,
        warmup_iter: int = 0,
        max_iter: int = 20000,
        warmup_ratio: float = 1e-6,
        power: float = 0.9,
        hold_lr_after_max: bool = False,
    ) -> None:
        torch.optim.SGD.__init__(self, params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
        self._init_schedule(warmup_iter, max_iter, warmup_ratio, power, hold_lr_after_max)


def install_adam_moments(
    optimizer: torch.optim.Optimizer,
    moments: dict[torch.nn.Parameter, tuple[torch.Tensor, torch.Tensor]],
    step: float,
) -> None:
    """Set the Adam(W) state of the given parameters: first and second moments and the step count.

    Replays a recorded optimiser state for a step test (golden ``seco_iteration.npz:
    adam_exp_avg_before / adam_exp_avg_sq_before / adam_step_before``) without a state dict of the
    recording's layout. Parameters not in ``moments`` keep their state (none: Adam starts them fresh).
    """
    owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for param, (exp_avg, exp_avg_sq) in moments.items():
        if id(param) not in owned:
            raise KeyError(f"parameter of shape {tuple(param.shape)} is not in this optimiser")
        if exp_avg.shape != param.shape or exp_avg_sq.shape != param.shape:
            raise ValueError(f"moments of shape {tuple(exp_avg.shape)} for a parameter of shape {tuple(param.shape)}")
        optimizer.state[param] = {
            "step": torch.tensor(float(step), dtype=torch.float32),
            "exp_avg": exp_avg.detach().to(param).clone(),
            "exp_avg_sq": exp_avg_sq.detach().to(param).clone(),
        }
