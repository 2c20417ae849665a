"""The device of a run: ``run.device`` = auto (CUDA when there is one), cpu, cuda or cuda:N."""

from __future__ import annotations

import torch


def cuda_available() -> bool:
    """Whether this process sees a CUDA device."""
    return torch.cuda.is_available()


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available, else cpu; any other name is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if cuda_available() else "cpu")
    return torch.device(name)
