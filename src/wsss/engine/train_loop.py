"""The loop and its hooks' base (as detectron2's ``engine/train_loop.py``): ``TrainerBase`` runs steps and
calls hooks, nothing else; ``Trainer`` (trainer.py) adds the data, the model, the optimiser and the run's state.

Events, on every registered hook in order: ``before_train``, then per step ``before_step`` /
``after_step`` (``trainer.step`` already counts the finished step), and ``after_train`` (also when a
step raised); ``before_epoch(epoch)`` when the data stream enters an epoch (the subclass calls
``enter_epoch``), and ``write(record)`` for every record published through ``log``.

A hook gets its collaborators (paths, periods, the optimiser, a save function...) in its constructor and
owns its state; a trainer's own method goes through ``weak_method``, so that no reference cycle keeps the
trainer alive. From the trainer it reads the loop's own state only: ``step``, ``step_losses`` (the last
step's (total, terms)) and ``log``. A hook with state that a resume needs returns it from
``state_dict()``; the checkpoint stores the non-empty ones by hook class name, and each hook gets its
entry (or ``{}``) back through ``load_state_dict``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["HookBase", "TrainerBase", "weak_method"]


def weak_method(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` (bound) as a callable that does not keep its object alive, for a hook given a trainer's
    method (``save_checkpoint``, ``validate``): held strongly, it closes a cycle (trainer -> hooks -> hook
    -> method -> trainer) that only the cycle collector frees. Under torchrun that kept the DDP model and
    its process group alive past ``destroy_process_group``, to be freed at interpreter teardown, a suspected
    cause of a finished gloo worker's rare abort ("terminate called without an active exception"; the same
    abort was seen once without gloo, so not the only one)."""
    ref, name = weakref.WeakMethod(method), method.__qualname__  # the closure must not hold ``method``

    def call(*args: Any, **kwargs: Any) -> Any:
        bound = ref()
        if bound is None:
            raise ReferenceError(f"{name}: its object no longer exists")
        return bound(*args, **kwargs)

    return call


class HookBase:
    """One hook of the loop; ``trainer`` is set when the hook is registered (``TrainerBase.register_hooks``)."""

    trainer: TrainerBase

    def before_train(self) -> None:
        """Before the first step of ``train`` (after a resume)."""

    def after_train(self) -> None:
        """After the last step of ``train``, also when a step raised."""

    def before_step(self) -> None:
        """Before each step (``trainer.step`` is the number of steps done)."""

    def after_step(self) -> None:
        """After each step (``trainer.step`` counts it; ``trainer.step_losses`` holds its losses)."""

    def before_epoch(self, epoch: int) -> None:
        """When the training stream enters ``epoch`` (0-based; also the epoch a resume lands in)."""

    def write(self, record: dict[str, Any]) -> None:
        """A record published by the run (``TrainerBase.log``): ``{"step": ..., ...}``."""

    def state_dict(self) -> dict[str, Any]:
        """What a resume needs of this hook (stored in the checkpoint when non-empty)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from the checkpoint at ``trainer.step`` (``state``: this hook's entry, or ``{}``)."""


class TrainerBase:
    """Steps and hooks: ``train(stop)`` calls ``run_step`` until ``step == stop``, with the hook events."""

    def __init__(self) -> None:
        self.step = 0
        self.step_losses: tuple[float, dict[str, float]] = (0.0, {})  # the last step's (total, terms)
        self.hooks: list[HookBase] = []

    def register_hooks(self, hooks: Sequence[HookBase | None]) -> None:
        """Append ``hooks`` (None entries are skipped); they run after the ones already registered."""
        for h in hooks:
            if h is None:
                continue
            if not isinstance(h, HookBase):
                raise TypeError(f"a hook must subclass wsss.engine.train_loop.HookBase, got {type(h).__name__}")
            h.trainer = weakref.proxy(self)  # no reference cycle (as detectron2)
            self.hooks.append(h)

    def log(self, record: dict[str, Any]) -> None:
        """Publish ``record`` (``{"step": ..., ...}``) to every hook's ``write`` (metrics.jsonl, TensorBoard...)."""
        for h in self.hooks:
            h.write(record)

    def enter_epoch(self, epoch: int) -> None:
        for h in self.hooks:
            h.before_epoch(epoch)

    def hook_states(self) -> dict[str, dict[str, Any]]:
        """The non-empty ``state_dict`` of every hook, by class name (collective: every process calls it)."""
        return {type(h).__name__: s for h in self.hooks if (s := h.state_dict())}

    def load_hook_states(self, states: dict[str, dict[str, Any]]) -> None:
        for h in self.hooks:
            h.load_state_dict(states.get(type(h).__name__, {}))

    def run_step(self) -> None:
        raise NotImplementedError

    def run_loop(self, stop: int) -> None:
        """Steps until ``step == stop``; ``after_train`` runs also when a step raises."""
        for h in self.hooks:
            h.before_train()
        try:
            while self.step < stop:
                for h in self.hooks:
                    h.before_step()
                self.run_step()
                self.step += 1
                for h in self.hooks:
                    h.after_step()
        finally:
            for h in self.hooks:
                h.after_train()
