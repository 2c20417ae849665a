"""Official weight files as runs: the layouts ``wsss import NAME FILE --config CFG --out RUN`` takes.

Each layout is registered by the method that owns it (``register_import``, next to its
``register_method``): SeCo's, ToCo's (our CAM baseline), RCA's, SC-CAM's official checkpoints, a CLIP file
for CLIP-ES. A plugin ships its own the same way, from its own module, and ``wsss import`` lists it once the
plugin is installed (the entry-point group ``wsss.methods``). ``wsss.runs.official_import`` writes the run
directory from what a layout builds; it names no method.

A layout's ``build(path, cfg, class_names)`` reads the file (never running code from it: ``torch.load`` with
``weights_only=True``, or the CLIP readers), may complete ``cfg`` (CLIP-ES writes the architecture it found
into ``options``), and returns the method of ``cfg`` holding the file's weights, plus any entries to record
in the run's checkpoint (e.g. the official keys that were left out).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wsss.core.config import Config
from wsss.core.errors import ConfigError, UsageError, WeightLoadError
from wsss.methods.contract import Method, build_method, load_entry_points, require_free_name
from wsss.models.official_keys import OfficialKeyError
from wsss.models.weights import check_state_dict, read_state_dict

# (official state dict) -> (our state dict, the official keys left out)
KeyMapper = Callable[[Mapping[str, torch.Tensor]], tuple[dict[str, torch.Tensor], list[str]]]
Builder = Callable[[Path, Config, list[str]], tuple[Method, dict[str, Any]]]


@dataclass(frozen=True)
class ImportLayout:
    """A kind of file that ``wsss import <name>`` makes a run of method ``method`` from.

    ``summary``: one line for ``wsss import --help``; ``next_step``: what the command prints after the run
    directory is written (``{out}`` is the run)."""

    name: str
    method: str
    build: Builder
    summary: str = ""
    next_step: str = "imported; next: wsss cam {out} --split SPLIT"


#: name -> layout (``wsss import`` choices)
IMPORT_LAYOUTS: dict[str, ImportLayout] = {}


def register_import(layout: ImportLayout) -> ImportLayout:
    """Make ``layout`` available as ``wsss import <layout.name>``; an empty or taken name raises."""
    require_free_name("import layout", IMPORT_LAYOUTS, layout.name, layout)
    IMPORT_LAYOUTS[layout.name] = layout
    return layout


def available_imports() -> list[str]:
    """Every registered import layout, those of installed plugins (entry-point group) included."""
    load_entry_points()
    return list(IMPORT_LAYOUTS)


def get_import_layout(name: str) -> ImportLayout:
    if name not in IMPORT_LAYOUTS:
        load_entry_points()
    if name not in IMPORT_LAYOUTS:
        raise UsageError(f"no import layout {name!r}; available: {', '.join(IMPORT_LAYOUTS)}")
    return IMPORT_LAYOUTS[name]


def key_mapped(mapper: KeyMapper, class_key: str, ours_only: tuple[str, ...] = (), official: str = "") -> Builder:
    """The builder of an official checkpoint whose keys ``mapper`` maps to ours, loaded strictly.

    ``class_key``: the mapped entry whose rows are the foreground classes (their count must be the dataset's);
    ``ours_only``: patterns (regex, full match) of our entries that an official file may not hold and that
    keep the freshly built model's value; ``official``: the code's name, for the errors."""

    def build(path: Path, cfg: Config, class_names: list[str]) -> tuple[Method, dict[str, Any]]:
        try:
            mapped, dropped = mapper(read_state_dict(path))
        except OfficialKeyError as e:
            raise WeightLoadError(f"{path}: {e}") from e
        if class_key not in mapped:
            raise WeightLoadError(
                f"{path}: no classifier in the checkpoint (expected an official {official} state dict)"
            )
        num_classes = int(mapped[class_key].shape[0]) + 1
        if len(class_names) != num_classes:
            raise ConfigError(
                f"{path}: the checkpoint has {num_classes} classes (with background) but the dataset at "
                f"data.root={cfg.data.root} has {len(class_names)}; pass data.root=<dataset with its classes.txt>"
            )
        model = build_method(cfg, class_names)
        own = model.state_dict()
        mapped.update({k: v for k, v in own.items() if k not in mapped and any(re.fullmatch(p, k) for p in ours_only)})
        tensors = {k: v for k, v in mapped.items() if torch.is_tensor(v)}  # not RCA's attention (extra state)
        own_tensors = {k: v for k, v in own.items() if torch.is_tensor(v)}
        check_state_dict(tensors, own_tensors, f"{path}: official {official} checkpoint does not fit the config")
        model.load_state_dict(mapped, strict=True)
        return model, {"dropped_official_keys": dropped}

    return build
