"""Presets: YAML files composed with ``_base_`` (relative paths or the shipped ``wsss::`` names), ``_delete_``
marks, keys that moved, and a preset written flat."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from wsss.core.config.checks import from_dict
from wsss.core.config.overrides import parse_override, set_dotted
from wsss.core.config.rules import _to_plain
from wsss.core.config.schema import Config
from wsss.core.config.yaml_text import yaml_error_text, yaml_load
from wsss.core.errors import ConfigError

BASE_KEY = "_base_"  # a preset's parent preset(s): paths relative to the preset's folder, or scoped names
SCOPE = "wsss::"  # a shipped preset or base by a name that resolves from any folder (mmengine's ``mmseg::``)
MAX_BASE_DEPTH = 64  # the longest _base_ chain read (a shipped preset's is a few files)
DELETE_KEY = "_delete_"  # `section: {_delete_: true, ...}` replaces the inherited mapping instead of merging into it
REPLACED_WHOLE = ("weights", "start_iters")  # loss.*: the set of loss terms is stated whole, never merged


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``: mappings merge key by key (mmseg's rule), any other value replaces.

    Exceptions: ``loss.weights`` / ``loss.start_iters`` replace the inherited mapping (a preset lists
    its loss terms), and so does a mapping holding ``_delete_: true`` (the key itself is dropped).
    """
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and DELETE_KEY in v:
            replace = v[DELETE_KEY]
            if not isinstance(replace, bool):
                raise ConfigError(f"'{k}.{DELETE_KEY}' must be true or false, got {replace!r}")
            v = {kk: vv for kk, vv in v.items() if kk != DELETE_KEY}
            if replace:
                out[k] = _merge({}, v)
                continue
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in REPLACED_WHOLE:
            out[k] = _merge(out[k], v)
        else:
            out[k] = _merge({}, v) if isinstance(v, dict) else v  # a nested _delete_ is consumed too
    return out


def _read_yaml_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text()
        loaded = yaml_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({yaml_error_text(e, text)})") from e
    except (OSError, UnicodeDecodeError) as e:  # unreadable, or not text: said without the bytes it holds
        why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise ConfigError(f"{path}: cannot read the config ({why})") from e
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a config must be a mapping at the top level")
    return _move_keys(loaded)


# Keys that left the shared schema for a method's options: (section, key) -> (new section, key, the schema's
# default before the move). PSA's seed settings are options of the methods that make PSA seeds from their CAMs
# (``wsss.methods.base.PSASeedOptions``). A file that still has one (a run's config.yaml written before the move
# holds every key) loads: at the old default the key is dropped (the option has the same default), another value
# moves to the options (where a method without PSA seeds names it as an unknown option).
MOVED_KEYS: dict[tuple[str, str], tuple[str, str, Any]] = {
    ("cam", "psa_alphas"): ("options", "psa_alphas", [4.0, 32.0]),
    ("cam", "psa_seed_stride"): ("options", "psa_seed_stride", 1),
}


def _move_keys(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the keys of ``MOVED_KEYS`` dropped or moved (a copy where one is found)."""
    for (section, key), (new_section, new_key, old_default) in MOVED_KEYS.items():
        old = data.get(section)
        if not isinstance(old, dict) or key not in old:
            continue
        data = {**data, section: {k: v for k, v in old.items() if k != key}}
        value = old[key]
        if _plain_equal(value, old_default):
            continue
        target = data.get(new_section)
        data[new_section] = {**(target if isinstance(target, dict) else {}), new_key: value}
    return data


def _plain_equal(a: Any, b: Any) -> bool:
    return _to_plain(a) == _to_plain(b)


def shipped_configs() -> Path:
    """The folder of the shipped presets and bases: ``wsss/configs`` inside an installed wheel (``setup.py`` copies
    ``configs/`` there), else ``configs/`` of the checkout the package runs from (a source or editable install,
    ``pip install -e .``, what ``make setup`` does). Where neither is, a ``wsss::`` name fails with one line
    saying so (:func:`shipped_config`)."""
    package = Path(__file__).resolve().parents[2]  # wsss/core/config/presets.py -> wsss
    inside = package / "configs"
    return inside if inside.is_dir() else package.parents[1] / "configs"  # src/wsss -> the checkout


def shipped_config(name: str, where: str = "") -> Path:
    """The file of the scoped name ``wsss::REL`` (:data:`SCOPE`): ``configs/REL`` of :func:`shipped_configs`.
    ConfigError (``where``: what named it, e.g. ``"FILE: _base_ 'wsss::x.yaml'"``) for a name that is not a
    shipped config, one that leaves ``configs/``, or an install without ``configs/``."""
    where = where or f"'{name}'"
    root = shipped_configs()
    rel = name.removeprefix(SCOPE)
    if not root.is_dir():
        raise ConfigError(
            f"{where}: the shipped configs are not installed ({root} not found): {SCOPE} names resolve in a wheel of "
            "wsss (its wsss/configs) or a checkout (configs/ beside src/); reinstall wsss, or name a file instead"
        )
    path = root / rel
    if not rel or Path(rel).is_absolute() or root.resolve() not in path.resolve().parents:
        raise ConfigError(f"{where}: a {SCOPE} name is a path inside {root}, e.g. {SCOPE}cam/synthetic_cpu.yaml")
    if not path.is_file():
        close = difflib.get_close_matches(rel, _shipped_names(root), n=1, cutoff=0.6)
        hint = f" (did you mean {SCOPE}{close[0]}?)" if close else ""
        raise ConfigError(f"{where}: not a shipped config ({path} not found){hint}")
    return path


def config_file(name: str | Path) -> Path:
    """The file of a config argument: a path, or a scoped name (``wsss::cam/voc.yaml``, :func:`shipped_config`)."""
    return shipped_config(name) if isinstance(name, str) and name.startswith(SCOPE) else Path(name)


def _shipped_names(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.yaml"))


def _shipped_like(base: str) -> list[str]:
    """The scoped names of the shipped configs that a relative ``_base_`` not found may have meant: the path
    without its leading ``./`` and ``../`` is the end of theirs (a preset copied out of ``configs/``
    names ``../_base_/datasets/synthetic.yaml``, or ``voc.yaml`` for the preset beside it)."""
    parts = [p for p in base.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    root = shipped_configs()
    if not parts or not root.is_dir() or Path(base).is_absolute():
        return []
    rest = "/".join(parts)
    return [f"{SCOPE}{n}" for n in _shipped_names(root) if n == rest or n.endswith(f"/{rest}")]


def _base_paths(path: Path, own: dict[str, Any]) -> list[Path]:
    """The presets ``path`` names under ``_base_`` (one name or a list): paths relative to its folder, or scoped
    names of shipped configs (``wsss::_base_/datasets/voc.yaml``, :func:`shipped_config`). A relative one not
    found whose name is a shipped config's is a ConfigError that gives the scoped name to use."""
    bases = own.pop(BASE_KEY, [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(f"{path}: {BASE_KEY} must be a path or a list of paths, got {bases!r}")
    found = []
    for base in bases:
        if base.startswith(SCOPE):
            found.append(shipped_config(base, f"{path}: {BASE_KEY} '{base}'"))
            continue
        base_path = path.parent / Path(base).expanduser()
        if base_path.suffix.lower() not in (".yaml", ".yml"):
            # a base is a preset: a file named by a config from elsewhere is read only as one, so that no error
            # quotes a file of another kind (``_base_: /etc/shadow``)
            raise ConfigError(f"{path}: {BASE_KEY} '{base}' is not a YAML preset (.yaml or .yml)")
        if not base_path.is_file():
            like, hint = _shipped_like(base), ""
            if len(like) == 1:
                hint = f"; the shipped config of that name is {like[0]}: name it so, which resolves from any folder"
            elif like:
                hint = (
                    f"; shipped configs of that name: {', '.join(like)}: name the one meant (resolves from any folder)"
                )
            raise ConfigError(f"{path}: {BASE_KEY} '{base}' not found ({base_path}){hint}")
        found.append(base_path)
    return found


def read_preset(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The settings a YAML preset states, with its ``_base_`` presets merged under them.

    ``_base_: ../cam/voc.yaml`` (or a list, merged in order, later ones winning: mmseg's rule) names the
    presets and the ``configs/_base_/`` parts this one is composed of, by a path relative to the file or by a
    scoped name of a shipped one that resolves from any folder (``wsss::cam/voc.yaml``, :func:`shipped_config`;
    ``path`` may be one too); the file's own keys are merged over
    them with :func:`_merge`. A mapping holding ``_delete_: true`` replaces the one it is merged over: in the
    file, what its bases built; in a base, also what the bases listed before it in the same ``_base_`` built.
    A missing base or a cycle is a ConfigError naming the file; each file's own keys are validated against
    the schema, so a wrong key is blamed on the file that has it. The result holds no ``_base_``: it is what
    the preset would be written out in full, before the schema's defaults and the command-line overrides.
    """
    return _merge({}, _resolve_preset(config_file(path), _chain))  # the _delete_ marks consumed


def _resolve_preset(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """:func:`read_preset`'s merge with the ``_delete_: true`` marks of the file and of its bases kept, so
    that the file that names this one as a base applies them over its earlier bases."""
    chain = (*chain, path.resolve())
    if len(chain) > MAX_BASE_DEPTH:
        raise ConfigError(
            f"{chain[0]}: its {BASE_KEY} chain is more than {MAX_BASE_DEPTH} files deep (at {path}); a preset is "
            "composed of a few"
        )
    own = _read_yaml_mapping(path)
    bases = _base_paths(path, own)
    try:
        from_dict(Config, _merge(Config().to_dict(), own))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
    merged: dict[str, Any] = {}
    marks = _delete_marks(own)
    for base in bases:
        if base.resolve() in chain:
            cycle = " -> ".join(str(p) for p in (*chain[chain.index(base.resolve()) :], base.resolve()))
            raise ConfigError(f"{path}: {BASE_KEY} cycle: {cycle}")
        layer = _resolve_preset(base, chain)
        marks += _delete_marks(layer)
        merged = _merge(merged, layer)
    return _with_delete_marks(_merge(merged, own), marks)


def _delete_marks(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The key paths of the mappings in ``data`` that hold ``_delete_: true``."""
    found = []
    for k, v in data.items():
        if isinstance(v, dict):
            if v.get(DELETE_KEY) is True:
                found.append((*prefix, k))
            found += _delete_marks(v, (*prefix, k))
    return found


def _with_delete_marks(data: dict[str, Any], marks: list[tuple[str, ...]]) -> dict[str, Any]:
    """``data`` with ``_delete_: true`` put back into the mapping at each path of ``marks`` (copies on the way)."""
    for path in marks:
        data = _mark_path(data, path)
    return data


def _mark_path(node: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    child = node.get(path[0])
    if not isinstance(child, dict):
        return node
    child = {**child, DELETE_KEY: True} if len(path) == 1 else _mark_path(child, path[1:])
    return {**node, path[0]: child}


def flat_preset(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The settings preset ``path`` states, its ``_base_`` presets merged in (:func:`read_preset`) and the
    overrides set: one mapping with no ``_base_`` that :func:`load_config` loads to the config ``load_config(path,
    overrides)`` gives (``wsss config show --flat``: a preset to copy that needs none of its bases). The schema's
    defaults stay out of it (what :func:`dump_config` writes holds every key). Validate with load_config first."""
    data = read_preset(path)
    for text in overrides:
        keys, value = parse_override(text)
        set_dotted(data, keys, value)
    order = list(Config().to_dict())  # the schema's order of sections (method first), not the bases'
    return {k: data[k] for k in sorted(data, key=lambda k: order.index(k) if k in order else len(order))}
