"""Checkpoints: written atomically, so a run killed mid-save keeps its previous checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from wsss.core.errors import MissingFileError, WeightLoadError
from wsss.utils.io import atomic_write


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    with atomic_write(path) as f:
        torch.save(state, f)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: checkpoint not found")
    try:
        # RNG states hold numpy arrays and tuples: this file is our own, so full unpickling is fine.
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise WeightLoadError(f"{path}: cannot read checkpoint ({e})") from e
