"""Checkpoints: written atomically, so a run killed mid-save keeps its previous checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from wsss.core.errors import MissingFileError, UnsafeCheckpointError, WeightLoadError
from wsss.utils.io import atomic_write
from wsss.utils.safe_load import load_torch_file


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    with atomic_write(path) as f:
        torch.save(state, f)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A run checkpoint, read with ``torch.load(weights_only=True)`` (utils/safe_load.py): a run folder
    may come from elsewhere, so one whose pickle asks for more than tensors, plain values and the numpy
    RNG state is refused (UnsafeCheckpointError names the file and what it asked for)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: checkpoint not found")
    try:
        state = load_torch_file(path, "checkpoint", map_location=map_location)
    except UnsafeCheckpointError:
        raise
    except Exception as e:  # noqa: BLE001
        raise WeightLoadError(f"{path}: cannot read checkpoint ({e})") from e
    if not isinstance(state, dict):
        raise WeightLoadError(f"{path}: not a wsss checkpoint (a {type(state).__name__}, not a dict)")
    return state
