"""The public way to build and load what the engine runs (as detectron2's ``engine/defaults.py``), so that
a multi-run driver (a method's ``train_driver``, handed ``engine_api()``) or a script composes trainers
without private calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from wsss.core.checkpoint import (
    check_checkpoint_classes,
    check_run_checkpoint,
    load_checkpoint_digest,
    load_model_state,
)
from wsss.core.config import Config, load_run_config, run_config_path
from wsss.core.device import resolve_device
from wsss.core.errors import MissingFileError, WSSSError
from wsss.data.classes import read_classes
from wsss.engine.train_loop import HookBase
from wsss.engine.trainer import Trainer, build_optimizer, config_without_gone_starts
from wsss.engine.validate import validate
from wsss.methods import EngineAPI, Method, build_method, check_method

__all__ = [
    "HookBase",
    "TrainedMethod",
    "build_method",
    "build_optimizer",
    "build_trainer",
    "engine_api",
    "load_trained_method",
    "run_has_seg_head",
]


def build_trainer(cfg: Config, *, progress: bool = True, hooks: Sequence[HookBase] = ()) -> Trainer:
    """A ``Trainer`` for ``cfg`` (not yet resumed: ``trainer.train()`` resumes from ``last.pt``).

    ``hooks`` run after the default ones (``Trainer.build_hooks``: LR rule, logging, validation,
    checkpoints, TensorBoard), in the order given; ``trainer.register_hooks`` adds more later.
    """
    return Trainer(cfg, progress=progress, hooks=hooks)


@dataclass
class TrainedMethod:
    cfg: Config
    method: Method
    class_names: list[str]
    device: torch.device
    checkpoint: Path | None = None  # the file loaded
    step: int | None = None  # the training step it was saved at (None: a checkpoint without one)
    sha1: str | None = None  # the SHA-1 of the bytes loaded (core.checkpoint.load_checkpoint_digest)


def load_trained_method(
    run_dir: str | Path, *, checkpoint: str = "auto", device: str | None = None, overrides: Sequence[str] = ()
) -> TrainedMethod:
    """The method of a run directory (``config.yaml`` + ``checkpoints/best.pt`` or ``last.pt``), in eval mode.

    ``checkpoint``: "auto" (best, else last), a name in ``checkpoints/`` ("last") or a ``.pt`` path.
    ``overrides``: ``KEY=VALUE`` words merged over the run's saved config (``load_run_config``); ``device`` is
    shorthand for the word ``run.device=DEVICE``, put after them.
    """
    run_dir = Path(run_dir)
    hint = "; train one with `wsss train`"
    cfg = load_run_config(run_dir, hint)
    check_method(cfg, run_config_path(run_dir))  # a run of an older wsss: its renamed option named with its file
    words = [*overrides, *([f"run.device={device}"] if device else [])]
    if words:
        cfg = load_run_config(run_dir, hint, words)
        check_method(cfg, "command-line overrides")
    ckpts = run_dir / "checkpoints"
    if checkpoint == "auto":
        path = ckpts / "best.pt" if (ckpts / "best.pt").is_file() else ckpts / "last.pt"
    else:
        path = ckpts / f"{checkpoint}.pt" if not checkpoint.endswith(".pt") else Path(checkpoint)
        if not path.is_file():  # name what was given, not the .pt name made of it
            names = "" if path == Path(checkpoint) else f"no {path}; "
            raise MissingFileError(
                f"{checkpoint}: checkpoint not found ({names}--checkpoint takes best, last, another "
                f"name in {ckpts}, or the path of a file ending in .pt)"
            )
    state, sha1 = load_checkpoint_digest(path)
    check_run_checkpoint(state, path)
    if cfg.data.root and Path(cfg.data.root).is_dir():  # a checkpoint copied from another run would write its class ids
        check_checkpoint_classes(state, path, read_classes(cfg.data.root), f"the run's dataset {cfg.data.root}")
    dev = resolve_device(cfg.run.device)
    cfg = config_without_gone_starts(cfg, path, run_dir, lambda: state)
    method = build_method(cfg, state["class_names"])
    load_model_state(method, state["model"], path)
    method.to(dev).eval()
    step = state.get("step")
    return TrainedMethod(
        cfg=cfg,
        method=method,
        class_names=list(state["class_names"]),
        device=dev,
        checkpoint=path,
        step=int(step) if isinstance(step, (int, float)) else None,
        sha1=sha1,
    )


def run_has_seg_head(cfg: Config, class_names: Sequence[str]) -> bool | None:
    """Whether a run of ``cfg`` can predict masks (``wsss predict``): its method built on the meta device, so
    that no weight is allocated or read; None when the config cannot build without its files."""
    import warnings

    try:
        # a method that reads a second file at build (WeCLIP+'s options.dino_weights) copies it into meta tensors: a
        # no-op that torch warns of once a tensor
        with torch.device("meta"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", r".*non-meta parameter .* to a meta parameter", UserWarning)
            return bool(build_method(replace(cfg, model=replace(cfg.model, pretrained=None)), class_names).has_seg_head)
    except WSSSError:  # a config that cannot build without its files (a CLIP preset without its arch): unknown
        return None


def engine_api() -> EngineAPI:
    """The builders a method's ``train_driver`` composes runs with (a method never imports the engine)."""
    return EngineAPI(build_trainer=build_trainer, load_trained_method=load_trained_method, validate=validate)
