"""The ``KEY=VALUE`` words of a command line, parsed as YAML into dotted keys."""

from __future__ import annotations

from typing import Any

import yaml

from wsss.core.config.yaml_text import yaml_error_text, yaml_load
from wsss.core.errors import ConfigError


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a","b","c"], parsed value); the value is parsed as YAML (an error: one line naming the
    key, :func:`yaml_error_text`)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value")
    key, raw = text.split("=", 1)
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml_load(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        shown = text if len(text) <= 80 else f"{key}={raw[:20]}... ({len(raw)} characters)"
        raise ConfigError(f"override '{shown}': cannot parse the value of {key} ({yaml_error_text(e)})") from e
    return key.split("."), value


def set_dotted(data: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set ``data[k1][k2]...`` = ``value`` for ``keys`` = [k1, k2, ...], creating sections on the way."""
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"'{k}' is not a section")
    node[keys[-1]] = value
