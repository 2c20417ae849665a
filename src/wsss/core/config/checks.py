"""Conversion between plain dicts and the schema's dataclasses, with the one check of each value."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any

from wsss.core.config.rules import Valid
from wsss.core.config.schema import Config
from wsss.core.errors import ConfigError


def _suggest(key: str, valid: list[str], where: str = "") -> str:
    """The closest valid key, with its full dotted path (``train.max_iters``, not ``max_iters``)."""
    prefix = f"{where}." if where else ""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if close:
        return f" (did you mean '{prefix}{close[0]}'?)"
    return f" (valid keys in {where or 'the top level'}: {', '.join(sorted(valid))})"


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(typing.cast(type, tp), value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {list(value)}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], where) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {k: _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys, ill-typed values and values outside a field's
    :class:`Valid` raise ConfigError naming the dotted key."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise ConfigError(f"unknown config key '{path}'{_suggest(key, names, where)}")
        kwargs[key] = _check(_field_valid(cls, key), path, _coerce(value, hints[key], path))
    return cls(**kwargs)


def _field_valid(cls: type, name: str) -> Valid | None:
    """The :class:`Valid` of field ``name`` of dataclass ``cls`` (None: any value of its type)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("valid")
    return None


def check_value(key: str, value: Any) -> Any:
    """``value`` if it is valid for the setting ``key`` (a dotted key of :class:`Config`), else ConfigError
    ``"<key> must be ..., got <value>"``; a single value of a list setting is checked as one of its values.

    The one check of a setting against the :class:`Valid` its field declares (:func:`setting`), used by
    :func:`from_dict` (config files, runs' config.yaml, overrides), :func:`check_settings` and the command-line
    flags that set a setting directly (``wsss cam --bkg-thre``, ``wsss predict --scales``).
    """
    cls: Any = Config
    *sections, name = key.split(".")
    for section in sections:
        cls = typing.get_type_hints(cls)[section]
    valid = _field_valid(cls, name)
    if valid is not None and not isinstance(value, (list, tuple, dict)) and _is_collection(cls, name):
        if not valid.admits(value):  # one value of a list setting (``wsss sweep-bkg --thresholds``)
            raise ConfigError(f"{key} must be {valid.describe()}, got {_shown(value)}")
        return value
    return _check(valid, key, value)


def replace_setting(cfg: Config, key: str, value: Any) -> Config:
    """``cfg`` with the setting ``key`` (dotted) set to the typed ``value``, checked as a config's is
    (:func:`check_value`): a value reaches a config without becoming a word."""
    check_value(key, value)

    def replaced(section: Any, keys: list[str]) -> Any:
        inner = value if len(keys) == 1 else replaced(getattr(section, keys[0]), keys[1:])
        return dataclasses.replace(section, **{keys[0]: inner})

    return replaced(cfg, key.split("."))


def _is_collection(cls: type, name: str) -> bool:
    return typing.get_origin(_strip_optional(typing.get_type_hints(cls)[name])) in (list, tuple, dict)


def _strip_optional(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1 else tp


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(list(value) if isinstance(value, tuple) else value)


def _check(valid: Valid | None, key: str, value: Any) -> Any:
    """``value`` checked against ``valid`` (None, or a value None: "not set", allowed); ConfigError naming ``key``.
    A mapping's values are checked each, named ``key.<its key>`` (``loss.weights.cls``)."""
    if valid is None or value is None:
        return value
    if isinstance(value, dict):
        for k, v in value.items():
            _check(valid, f"{key}.{k}", v)
        return value
    if isinstance(value, (list, tuple)):
        ok = all(valid.admits(v) for v in value) and (bool(value) or not valid.nonempty)
        if ok and valid.ascending and len(value) == 2:
            ok = value[0] <= value[1]
    else:
        ok = valid.admits(value)
    if not ok:
        raise ConfigError(f"{key} must be {valid.describe()}, got {_shown(value)}")
    return value


def check_settings(cfg: Any, where: str = "") -> Any:
    """ConfigError naming the first setting of the dataclass ``cfg`` (a :class:`Config`, a section, a method's
    options) and of its sections that is not valid (:func:`check_value`); for a config built in code, which
    :func:`from_dict` did not check. Returns ``cfg``."""
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), f"{where}{f.name}"
        if dataclasses.is_dataclass(value):
            check_settings(value, f"{key}.")
        else:
            _check(f.metadata.get("valid"), key, value)
    return cfg
