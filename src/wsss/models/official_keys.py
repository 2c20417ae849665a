"""The machinery of official checkpoint key layouts -> ours (pure functions: no file access, no model building).

Each method keeps its own layout beside its code, timm's ``checkpoint_filter_fn`` style
(``wsss.methods.<name>.official_keys``: SeCo, ToCo for the CAM baseline, RCA, SC-CAM). A layout's
``*_state_from_official`` maps a state dict saved by an official code to the key names and shapes of the method's
module, and returns the mapped state plus the official keys it leaves out on purpose (parameters our modules do
not build because the official forward never uses them): a list of :data:`Rule` applied by
:func:`apply_rules`. A key that fits no rule raises :class:`OfficialKeyError`, naming it: a checkpoint of
another architecture is refused rather than half-loaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch

from wsss.models.weights import strip_module_prefix


class OfficialKeyError(KeyError):
    """An official checkpoint key that fits no rule of the layout."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


Rule = tuple[str, Callable[[re.Match[str], torch.Tensor], tuple[str, torch.Tensor] | None]]


def apply_rules(state: Mapping[str, torch.Tensor], rules: list[Rule], what: str) -> tuple[dict, list[str]]:
    """``state`` (``module.`` prefixes stripped) mapped by the first rule whose pattern fits each key: (the
    mapped state, the official keys a rule dropped); a key that fits none is an :class:`OfficialKeyError`."""
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in strip_module_prefix(state).items():
        for pattern, convert in rules:
            m = re.fullmatch(pattern, key)
            if m is None:
                continue
            mapped = convert(m, value)
            if mapped is None:
                dropped.append(key)
            else:
                out[mapped[0]] = mapped[1]
            break
        else:
            raise OfficialKeyError(f"{what}: official key {key!r} fits no rule of the {what} layout")
    return out, dropped


def rename_to(template: str) -> Callable[[re.Match[str], torch.Tensor], tuple[str, torch.Tensor]]:
    """A rule's conversion: the key renamed to ``template`` (``\\1``... the pattern's groups), the value kept."""
    return lambda m, v: (m.expand(template), v)


def drop_key(m: re.Match[str], v: torch.Tensor) -> None:
    """A rule's conversion: the official key is left out on purpose (listed as dropped)."""
    return None
