"""``wsss train``: one run of the training loop, or the driver a multi-run method declares."""

from __future__ import annotations

from typing import Any

from wsss.core.config import Config, check_config_change, resolve_paths
from wsss.core.errors import UsageError
from wsss.engine.defaults import build_trainer, engine_api
from wsss.methods import method_class


def train(cfg: Config, *, progress: bool = True, allow_config_change: bool = False) -> dict[str, Any]:
    """Train (or resume) the run described by ``cfg``; returns the final step and validation.

    Input paths are stored resolved (``resolve_paths``). Resuming a run with other settings than
    its saved ones raises ConfigError unless ``allow_config_change`` (``check_config_change``).
    A method with a ``train_driver`` (several runs, e.g. SC-CAM's rounds) is trained by it instead.
    """
    cls = method_class(cfg)
    if not cls.trainable:
        raise UsageError(
            f"method {cfg.method!r} trains nothing: make its run from weights with `wsss import {cfg.method}`"
        )
    resolve_paths(cfg)
    check_config_change(cfg, allow=allow_config_change)
    driver = cls.train_driver
    if driver is not None:
        return driver(cfg, engine_api(), progress)
    return build_trainer(cfg, progress=progress).train()
