"""``wsss train``: one run of the training loop, or the driver a multi-run method names."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from wsss.core.config import Config, check_settings, resolve_paths
from wsss.engine.defaults import build_trainer
from wsss.engine.rounds import DRIVERS
from wsss.engine.trainer import check_config_change
from wsss.methods import get_method_class
from wsss.utils.io import remove_stale_temps
from wsss.utils.runlock import run_dir_lock


def train(cfg: Config, *, progress: bool = True, allow_config_change: bool = False) -> dict[str, Any]:
    """Train (or resume) the run described by ``cfg``; returns the final step and validation.

    Input paths are stored resolved (``resolve_paths``). Resuming a run with other settings than
    its saved ones raises ConfigError unless ``allow_config_change`` (``check_config_change``).
    A method with a ``train_driver`` (several runs, e.g. SC-CAM's rounds) is trained by it instead.
    The run directory is locked for the whole job (``utils.runlock``): a second ``wsss train`` on it
    gets a one-line error naming this process.
    """
    resolve_paths(cfg)
    check_settings(cfg)
    run_dir = Path(cfg.run.dir)
    # one writer per run directory (rank 0 holds it for a torchrun job: its other processes share the run)
    lock = run_dir_lock(run_dir) if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext()
    with lock:
        if int(os.environ.get("RANK", "0")) == 0:
            for folder in (run_dir, run_dir / "checkpoints"):
                remove_stale_temps(folder)  # a killed earlier run's temporary files
        check_config_change(cfg, allow=allow_config_change)
        driver = get_method_class(cfg.method).train_driver
        if driver is not None:
            return DRIVERS[driver](cfg, progress)
        return build_trainer(cfg, progress=progress).train()
