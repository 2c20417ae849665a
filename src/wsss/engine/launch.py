"""``wsss train``: one run of the training loop, or the driver a multi-run method names."""

from __future__ import annotations

from typing import Any

from wsss.core.config import Config
from wsss.engine.defaults import build_trainer
from wsss.engine.rounds import DRIVERS
from wsss.methods import get_method_class


def train(cfg: Config, *, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the run described by ``cfg``; returns the final step and validation.

    A method with a ``train_driver`` (several runs, e.g. SC-CAM's rounds) is trained by it instead.
    """
    driver = get_method_class(cfg.method).train_driver
    if driver is not None:
        return DRIVERS[driver](cfg, progress)
    return build_trainer(cfg, progress=progress).train()
