"""A config loaded: a preset with its overrides over the schema's defaults, a run's saved config, the
plugins a command line names, the paths made absolute, the config written."""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsss.core.config.checks import check_settings, from_dict
from wsss.core.config.overrides import parse_override, set_dotted
from wsss.core.config.presets import _merge, config_file, read_preset
from wsss.core.config.schema import TRUE_MASKS_AUTO, Config, DataConfig
from wsss.core.config.yaml_text import dump_yaml
from wsss.core.errors import ConfigError, MissingFileError

# Plugins (``custom_imports``): the modules a config may import are the ones the user names, on the command line or
# in this environment variable (comma-separated); a file names no code to run (docs/security.md).
PLUGINS_ENV = "WSSS_PLUGINS"
_command_line_plugins: frozenset[str] = frozenset()


def name_command_line_plugins(overrides: Sequence[str]) -> None:
    """Record the modules the overrides of this command's line name (``custom_imports=[...]``; a word that is no
    valid override is left to :func:`load_config` to refuse): :func:`named_plugins` holds them until the next
    command's line is read (``cli_common.take_overrides`` calls this for every command and script)."""
    global _command_line_plugins
    named: set[str] = set()
    for text in overrides:
        try:
            keys, value = parse_override(text)
        except ConfigError:
            continue
        if keys == ["custom_imports"] and isinstance(value, list):
            named.update(v for v in value if isinstance(v, str))
    _command_line_plugins = frozenset(named)


def named_plugins() -> frozenset[str]:
    """The plugin modules the user named: on this command's line (:func:`name_command_line_plugins`) or in
    ``WSSS_PLUGINS``. Imported by ``methods.contract.import_config_modules`` when a config lists them."""
    env = (n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(","))
    return _command_line_plugins | {n for n in env if n}


def iterations_per_epoch(n_images: int, batch_size: int) -> int:
    """Optimiser steps in one pass over ``n_images`` with global ``batch_size`` (drop_last; at least 1)."""
    return max(1, n_images // batch_size)


def resolve_epochs(cfg: Config, n_images: int) -> Config:
    """``cfg`` with ``train.max_iters`` computed from ``train.epochs`` for a split of ``n_images``.

    A copy is returned (the caller's config is left alone); without ``train.epochs`` it is ``cfg``.
    """
    t = cfg.train
    if t.epochs is None:
        return cfg
    if not t.epochs > 0:
        raise ConfigError(f"train.epochs must be positive, got {t.epochs}")
    iters = max(1, round(t.epochs * iterations_per_epoch(n_images, t.batch_size)))
    return dataclasses.replace(cfg, train=dataclasses.replace(t, max_iters=iters))


# `data.root` has no default: the one line a command that needs the data set stops with when a config has none.
DATA_ROOT_UNSET = (
    "data.root is not set: name the data set's folder in the config (data: {root: DIR}, or a "
    "_base_/datasets/*.yaml among its _base_) or pass data.root=DIR"
)


def require_data_root(cfg: Config) -> str:
    """``cfg.data.root``, or ConfigError :data:`DATA_ROOT_UNSET` when the config names no data set."""
    if cfg.data.root is None:
        raise ConfigError(DATA_ROOT_UNSET)
    return cfg.data.root


def run_config_path(run_dir: str | Path, hint: str = "") -> Path:
    """``RUN/config.yaml``, the settings a run directory was trained with: the one check of every command that
    reads a run. MissingFileError when ``run_dir`` does not exist (naming the run directories beside it that
    its name is close to), is a file, or is a folder without ``config.yaml`` (with ``hint``, e.g. what to do
    instead)."""
    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if path.is_file():
        return path
    if run_dir.is_file():
        raise MissingFileError(
            f"{run_dir}: a file, not a run directory (a folder holding config.yaml and checkpoints/)"
        )
    if not run_dir.is_dir():
        raise MissingFileError(f"{run_dir}: no such run directory (the folder does not exist){_runs_like(run_dir)}")
    raise MissingFileError(f"{path}: not a run directory (no config.yaml){hint}")


def _runs_like(run_dir: Path) -> str:
    """``"; did you mean X?"`` for the run directories beside ``run_dir`` whose name is close to its name."""
    parent = run_dir.parent
    try:
        runs = [p.name for p in parent.iterdir() if (p / "config.yaml").is_file()] if parent.is_dir() else []
    except OSError:  # an unreadable parent: nothing to suggest
        runs = []
    close = difflib.get_close_matches(run_dir.name, runs, n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(str(parent / c) for c in close)}?" if close else ""


def load_run_config(run_dir: str | Path, hint: str = "", overrides: Sequence[str] = ()) -> Config:
    """The :class:`Config` of a run directory (:func:`run_config_path`): its saved config, read afresh (a copy: the
    file is never written), then the ``KEY=VALUE`` words ``overrides`` merged over it by :func:`load_config`, the
    one path of a setting given on the command line of a command that reads a run."""
    return load_config(run_config_path(run_dir, hint), list(overrides))


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML config (or the defaults) and apply dotted ``key=value`` overrides. ``path``: a file, or the
    scoped name of a shipped preset (``wsss::cam/synthetic_cpu.yaml``, :func:`config_file`).

    The file's ``_base_`` presets are merged under it first (:func:`read_preset`), the overrides last.
    An error in the file names the file; an error in an override names the override (the file is
    validated first, then each override on top of it).
    """
    data: dict[str, Any] = {}
    defaults = Config().to_dict()
    if path is not None:
        path = config_file(path)
        data = read_preset(path)
        try:
            from_dict(Config, _merge(defaults, data))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e
    try:
        check_settings(from_dict(Config, _merge(defaults, data)))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path is not None else str(e)) from e
    if not overrides:
        return from_dict(Config, _merge(defaults, data))
    for text in overrides:
        keys, value = parse_override(text)
        try:
            set_dotted(data, keys, value)
            check_settings(from_dict(Config, _merge(defaults, data)))
        except ConfigError as e:
            raise ConfigError(f"command-line override '{text}': {e}") from e
    return from_dict(Config, _merge(defaults, data))


@dataclass(frozen=True)
class TrueMasks:
    """``data.true_masks`` read (:func:`true_masks_of`): the data set's own masks (``own``, the value
    :data:`TRUE_MASKS_AUTO`), a folder of the user's ``<id>.png`` (``folder``), or none (false)."""

    own: bool = False
    folder: Path | None = None

    def __bool__(self) -> bool:
        return self.own or self.folder is not None


def true_masks_of(data: DataConfig) -> TrueMasks:
    """What ``data.true_masks`` names, decided here alone; every other reader takes this typed result."""
    value = data.true_masks
    if not value:
        return TrueMasks()
    if value == TRUE_MASKS_AUTO:
        return TrueMasks(own=True)
    return TrueMasks(folder=Path(value).expanduser())


def resolve_paths(cfg: Config) -> Config:
    """Make the run's input paths absolute (``data.root``, ``data.pseudo_dir``, a ``data.true_masks`` folder,
    ``model.pretrained`` when it is a file), so a run's ``config.yaml`` works from any directory. In place;
    returns ``cfg``.
    ConfigError :data:`DATA_ROOT_UNSET` when ``data.root`` is not set."""
    cfg.data.root = str(Path(require_data_root(cfg)).expanduser().resolve())
    if cfg.data.pseudo_dir:
        cfg.data.pseudo_dir = str(Path(cfg.data.pseudo_dir).expanduser().resolve())
    masks = true_masks_of(cfg.data).folder
    if masks is not None:
        cfg.data.true_masks = str(masks.resolve())
    if cfg.model.pretrained and Path(cfg.model.pretrained).expanduser().exists():
        cfg.model.pretrained = str(Path(cfg.model.pretrained).expanduser().resolve())
    return cfg


def dump_config(cfg: Config) -> str:
    """``cfg`` in full as YAML: every key, no ``_base_`` (what ``wsss config show`` prints and a run's
    ``config.yaml`` holds, so a run is reproduced without the presets it came from)."""
    return dump_yaml(cfg.to_dict())


def save_config(cfg: Config, path: str | Path) -> None:
    from wsss.core.files import write_text_if_changed

    write_text_if_changed(path, dump_config(cfg))
