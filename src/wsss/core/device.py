"""The device of a run: ``run.device`` = auto (CUDA when there is one), cpu, cuda or cuda:N."""

from __future__ import annotations

import torch

from wsss.core.config import check_value
from wsss.core.errors import UsageError


def cuda_available() -> bool:
    """Whether this process sees a CUDA device."""
    return torch.cuda.is_available()


def check_device(name: str) -> torch.device | None:
    """The device ``name`` stands for (None for "auto"), once it is a valid ``run.device`` (a ConfigError naming
    the key otherwise) and, for a CUDA device, one this process sees: without a GPU, or with fewer than its index,
    a UsageError saying so (torch's own error came later, as a traceback from the first tensor moved there)."""
    check_value("run.device", name)
    if name == "auto":
        return None
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if cuda_available() else 0
        if count == 0:
            raise UsageError(
                f"device {name!r}: no CUDA GPU is visible to this process; use cpu (--device cpu or "
                "run.device=cpu), or auto (a GPU when there is one)"
            )
        if device.index is not None and device.index >= count:
            raise UsageError(f"device {name!r}: this process sees {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    return device


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available, else cpu; any other name is checked (:func:`check_device`) and returned as
    a ``torch.device``."""
    device = check_device(name)
    if device is None:
        return torch.device("cuda" if cuda_available() else "cpu")
    return device
