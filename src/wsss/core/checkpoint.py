"""Checkpoints: written atomically, so a run killed mid-save keeps its previous checkpoint."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from wsss.core.errors import MissingFileError, WeightLoadError
from wsss.core.files import atomic_write
from wsss.core.safe_load import load_torch_file


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    with atomic_write(path) as f:
        torch.save(state, f)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A run checkpoint, read with ``torch.load(weights_only=True)`` (core/safe_load.py): a run folder
    may come from elsewhere, so one whose pickle asks for more than tensors, plain values and the numpy
    RNG state is refused (UnsafeCheckpointError names the file and what it asked for)."""
    return _load(Path(path), map_location, None)


def load_checkpoint_digest(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], str]:
    """A run checkpoint (:func:`load_checkpoint`) and the SHA-1 of the very bytes it was loaded from: the file read
    once, so that a checkpoint replaced meanwhile (a training into the run) names the model that was loaded, not the
    new one (:func:`checkpoint_digest`)."""
    digest = hashlib.sha1(usedforsecurity=False)
    return _load(Path(path), map_location, digest), digest.hexdigest()


def _load(path: Path, map_location: str | torch.device, digest: Any) -> dict[str, Any]:
    if not path.is_file():
        raise MissingFileError(f"{path}: checkpoint not found")
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise WeightLoadError(f"{path}: checkpoint file is empty (0 bytes; an interrupted copy?)")
            if digest is not None:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
                f.seek(0)
            state = load_torch_file(path, "checkpoint", map_location=map_location, opened=f)
    except WeightLoadError:  # refused, or not a PyTorch file: the message names the file already
        raise
    except Exception as e:  # noqa: BLE001
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightLoadError(f"{path}: cannot read checkpoint ({why}; a truncated or foreign file?)") from e
    if not isinstance(state, dict):
        raise WeightLoadError(f"{path}: not a wsss checkpoint (a {type(state).__name__}, not a dict)")
    return state


def load_model_state(model: torch.nn.Module, state_dict: dict[str, Any], path: str | Path) -> None:
    """``model.load_state_dict(state_dict)`` (strict), with a WeightLoadError naming the checkpoint file
    when its tensors do not fit the model (another architecture or size: missing, unexpected or
    differently shaped weights) instead of PyTorch's multi-line RuntimeError."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = "; ".join(lines[1:3]) if len(lines) > 1 else (lines[0] if lines else type(e).__name__)
        if len(detail) > 300:
            detail = detail[:300] + "..."
        raise WeightLoadError(
            f"{path}: checkpoint does not fit the model of these settings (another architecture or size: {detail})"
        ) from e


def check_checkpoint_classes(state: dict[str, Any], path: str | Path, class_names: list[str], source: str) -> None:
    """WeightLoadError naming the checkpoint when it was trained on another class list than
    ``class_names`` (read from ``source``, e.g. the run's dataset): its outputs would be ids of
    other classes. The names are compared too, in order: a list of as many other classes would pass a count
    (a checkpoint of other class names predicted without a word)."""
    have = state.get("num_classes")
    if have is not None and int(have) != len(class_names):
        raise WeightLoadError(
            f"{path}: checkpoint trained with {int(have)} classes, but {source} has {len(class_names)}; "
            "it is from another run (or another dataset)"
        )
    names = state.get("class_names")
    if isinstance(names, (list, tuple)) and len(names) == len(class_names) and list(names) != list(class_names):
        i = next(i for i, (a, b) in enumerate(zip(names, class_names, strict=True)) if a != b)
        raise WeightLoadError(
            f"{path}: checkpoint trained with other classes than {source} (class {i}: {names[i]!r} there, "
            f"{class_names[i]!r} here); it is from another run (or another dataset)"
        )


def check_run_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """WeightLoadError naming ``path`` when ``state`` is not a run's checkpoint as ``wsss train`` writes it: a
    ``model`` state dict and ``class_names``, a list of names. A weights-only file (a bare state dict, an official
    checkpoint) given to ``--checkpoint`` failed with ``KeyError: 'class_names'``, and names stored as one string
    with "does not fit ... another architecture or size"."""
    if not isinstance(state.get("model"), dict) or "class_names" not in state:
        missing = [k for k in ("model", "class_names") if k not in state]
        what = f"no {' or '.join(repr(k) for k in missing)} entry" if missing else "its 'model' is not a state dict"
        raise WeightLoadError(
            f"{path}: not a wsss run checkpoint ({what}; a weights-only file?): --checkpoint takes a run's "
            "checkpoints/*.pt; official weights become a run with `wsss import`, a backbone's go in model.pretrained"
        )
    names = state["class_names"]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise WeightLoadError(
            f"{path}: the checkpoint's class_names is not a list of class names (a {type(names).__name__}); "
            "a damaged or foreign checkpoint"
        )


def checkpoint_digest(path: str | Path) -> str:
    """The SHA-1 of a checkpoint file's bytes: which model it is, whatever its name and step (a run retrained into
    the same folder, or another run's checkpoint of the same name and step, differs). Names the outputs a model made
    in their settings stamps (``runs/stamps.py``); not a security check. Read once per file version (its size and
    modification time)."""
    st = Path(path).stat()
    return _digest(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=16)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha1(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
