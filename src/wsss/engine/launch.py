"""``wsss train``: one run of the training loop, or the driver a multi-run method names."""

from __future__ import annotations

from typing import Any

from wsss.core.config import Config, resolve_paths
from wsss.engine.defaults import build_trainer
from wsss.engine.rounds import DRIVERS
from wsss.engine.trainer import check_config_change
from wsss.methods import get_method_class


def train(cfg: Config, *, progress: bool = True, allow_config_change: bool = False) -> dict[str, Any]:
    """Train (or resume) the run described by ``cfg``; returns the final step and validation.

    Input paths are stored resolved (``resolve_paths``). Resuming a run with other settings than
    its saved ones raises ConfigError unless ``allow_config_change`` (``check_config_change``).
    A method with a ``train_driver`` (several runs, e.g. SC-CAM's rounds) is trained by it instead.
    """
    resolve_paths(cfg)
    check_config_change(cfg, allow=allow_config_change)
    driver = get_method_class(cfg.method).train_driver
    if driver is not None:
        return DRIVERS[driver](cfg, progress)
    return build_trainer(cfg, progress=progress).train()
