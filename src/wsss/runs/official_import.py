"""``wsss import NAME FILE --config CFG --out RUN``: an official weight file as a run directory.

The layouts (what ``NAME`` may be) are registered by the methods that own them (``wsss.methods.imports``):
this module names none. It loads the config, checks that it is of the layout's method, takes the class names
from the dataset at ``data.root`` (its ``classes.txt``, else VOC's 21), lets the layout build the method from
the file, and writes ``config.yaml`` + ``checkpoints/last.pt``, which ``wsss cam / predict / eval`` use like a
trained run. ``model.pretrained`` is cleared: the file holds every weight.

An ``out`` that holds files (a trained run, or anything else) is refused unless ``overwrite`` (a trained
run's ``last.pt`` and ``config.yaml`` were replaced); with it, the folder's earlier ``checkpoints/`` is kept, moved
aside to ``checkpoints.1`` (``core.files.move_aside``), so that no checkpoint of another model is loaded in place of
the imported one (``best.pt`` comes before ``last.pt``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wsss.core.checkpoint import save_checkpoint
from wsss.core.config import load_config, require_data_root, save_config
from wsss.core.errors import ConfigError, UsageError
from wsss.core.files import check_output_folder, move_aside
from wsss.data.classes import read_classes
from wsss.methods.contract import import_config_modules
from wsss.methods.imports import ImportLayout, available_imports, get_import_layout
from wsss.utils.runlock import LOCK_FILE, is_run_dir, run_dir_lock


def import_run(
    name: str,
    file: str | Path,
    config: str | Path,
    out: str | Path,
    overrides: Sequence[str] = (),
    *,
    overwrite: bool = False,
) -> tuple[Path, ImportLayout]:
    """Write the run directory ``out`` made from ``file`` by the import layout ``name``; returns (out, layout).
    ``out`` holding files: a UsageError naming some, unless ``overwrite`` (module docstring)."""
    out, path = Path(out), Path(file)
    check_output_folder(out, "the folder of the run to write")
    _refuse_a_held_out(out, overwrite)
    cfg = load_config(config, list(overrides))
    import_config_modules(cfg.custom_imports)  # a plugin's layout registers on import, as its method does
    layout = get_import_layout(name)
    if cfg.method != layout.method:
        raise ConfigError(f"{config}: method is {cfg.method!r}; `wsss import {name}` needs {layout.method!r}")
    cfg.model.pretrained = None
    cfg.run.dir = str(out)
    class_names = read_classes(require_data_root(cfg))
    model, extra = layout.build(path, cfg, class_names)
    # the run's lock, as `wsss train` holds it: a training or another import writing there is refused, and the
    # folder is looked at again under the lock (another import may have filled it since the check above)
    with run_dir_lock(out, command=f"wsss import {name}", option="--out"):
        _refuse_a_held_out(out, overwrite)
        _write_run(out, path, cfg, model, extra, class_names)
    return out, layout


def _refuse_a_held_out(out: Path, overwrite: bool) -> None:
    """UsageError naming some of the files ``out`` holds (its lock aside), unless ``overwrite``."""
    held = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE) if out.is_dir() else []
    if held and not overwrite:
        what = "a run" if is_run_dir(out) else "files"
        raise UsageError(
            f"{out}: holds {what} ({', '.join(held[:4])}{' ...' if len(held) > 4 else ''}); import into a new folder, "
            "or pass --overwrite to write its config.yaml and checkpoint there (its checkpoints/ is kept, moved aside)"
        )


def _write_run(out: Path, path: Path, cfg: Any, model: Any, extra: dict[str, Any], class_names: list[str]) -> None:
    move_aside(out / "checkpoints")  # --overwrite: another model's checkpoints kept, never loaded for this one
    save_config(cfg, out / "config.yaml")  # after build: a layout may complete the config (CLIP-ES's arch)
    state = {
        "step": 0,
        "model": model.state_dict(),
        "num_classes": len(class_names),
        "class_names": class_names,
        "config": cfg.to_dict(),
        "imported_from": str(path),
        **extra,
    }
    save_checkpoint(state, out / "checkpoints" / "last.pt")


__all__ = ["available_imports", "import_run"]
