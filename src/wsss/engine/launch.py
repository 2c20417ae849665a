"""``wsss train``: one run of the training loop, or the driver a multi-run method declares."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from wsss.core.checkpoint import load_model_state
from wsss.core.config import Config, check_config_change, check_settings, resolve_paths
from wsss.core.errors import UsageError
from wsss.core.files import remove_stale_temps
from wsss.engine.defaults import build_trainer, engine_api
from wsss.engine.trainer import config_without_gone_starts, resolve_mask_term
from wsss.methods import build_method, method_class
from wsss.utils.runlock import check_run_dir, run_dir_lock


def train(
    cfg: Config,
    *,
    progress: bool = True,
    allow_config_change: bool = False,
    overwrite: bool = False,
    change_advice: str | None = None,
) -> dict[str, Any]:
    """Train (or resume) the run described by ``cfg``; returns the final step and validation.

    Input paths are stored resolved (``resolve_paths``). Resuming a run with other settings than
    its saved ones raises ConfigError unless ``allow_config_change`` (``check_config_change``; ``change_advice``: what
    it advises, where the command is not ``wsss train``).
    A method with a ``train_driver`` (several runs, e.g. SC-CAM's rounds) is trained by it instead.
    The run directory is locked for the whole job (``utils.runlock``): a second ``wsss train`` on it
    gets a one-line error naming this process. A ``run.dir`` that holds files but no run is refused
    unless ``overwrite`` (``utils.runlock.check_run_dir``).
    """
    cls = method_class(cfg)
    if not cls.trainable:
        raise UsageError(
            f"method {cfg.method!r} trains nothing: make its run from weights with `wsss import {cfg.method}`"
        )
    resolve_paths(cfg)
    check_settings(cfg)
    resolve_mask_term(cfg, cls)
    run_dir = Path(cfg.run.dir)
    if int(os.environ.get("RANK", "0")) == 0:  # before the lock: its file would make any folder a run
        check_run_dir(run_dir, overwrite)
    # one writer per run directory (rank 0 holds it for a torchrun job: its other processes share the run)
    lock = run_dir_lock(run_dir) if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext()
    with lock:
        if int(os.environ.get("RANK", "0")) == 0:
            for folder in (run_dir, run_dir / "checkpoints"):
                remove_stale_temps(folder)  # a killed earlier run's temporary files
        check_config_change(cfg, allow=allow_config_change, verify=_resumes_under(cfg), advice=change_advice)
        driver = cls.train_driver
        if driver is not None:
            return driver(cfg, engine_api(), progress)
        return build_trainer(cfg, progress=progress).train()


def _resumes_under(cfg: Config):
    """The check that a run's ``last.pt`` loads into the model of ``cfg`` (before a config change is recorded:
    a change whose checkpoint does not fit is refused with one line naming the file, and never recorded)."""

    def verify(state: dict[str, Any], path: Path) -> None:
        if "model" in state and "class_names" in state:
            built = config_without_gone_starts(cfg, path, path.parent.parent, lambda: state, warn=False)
            load_model_state(build_method(built, state["class_names"]), state["model"], path)

    return verify
