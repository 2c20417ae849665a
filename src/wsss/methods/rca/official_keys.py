"""RCA's official checkpoint (github.com/maeve07/RCA ``models/rca.py``) -> our :class:`RCA` keys (golden
``rca_model.npz: sd.*``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from wsss.models.official_keys import OfficialKeyError, Rule, apply_rules, rename_to
from wsss.models.weights import strip_module_prefix

#: RCA (``models/rca.py``): ``features`` = the VGG trunk, ``extra_convs`` = the coarse head, ``extra_F`` =
#: the embedding branch, ``Q/K/V/aggre/concat_project`` = the aggregation; the class-specific heads
#: ``extra_convs{i}.j`` are concatenated over i into our grouped :class:`ClassSpecificHeads`. The memory
#: (``queue{c}``, ``queue_ptr{c}``) and centroids (``cluter{c}``) are stacked per class.
RCA_RULES: list[Rule] = [
    (r"features\.(.+)", rename_to(r"backbone.features.\1")),
    (r"extra_convs\.(\d+)\.(weight|bias)", rename_to(r"coarse_head.\1.\2")),
    (r"extra_F\.(.+)", rename_to(r"embed.\1")),
    (r"(Q|K|V|aggre|concat_project)\.(weight|bias)", rename_to(r"aggregation.\1.\2")),
]
_RCA_STACKED = re.compile(r"(extra_convs(\d+)\.(\d+)\.(weight|bias)|queue(\d+)|queue_ptr(\d+)|cluter(\d+))")


def rca_state_from_official(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """An official RCA ``state_dict`` -> our :class:`RCA` state (the memory and centroids included when
    present), and the official keys left out (none)."""
    plain: dict[str, torch.Tensor] = {}
    heads: dict[tuple[int, str], dict[int, torch.Tensor]] = {}
    per_class: dict[str, dict[int, torch.Tensor]] = {"queue": {}, "queue_ptr": {}, "centroids": {}}
    for key, value in strip_module_prefix(state).items():
        m = _RCA_STACKED.fullmatch(key)
        if m is None:
            plain[key] = value
        elif m.group(2) is not None:
            heads.setdefault((int(m.group(3)), m.group(4)), {})[int(m.group(2))] = value
        elif m.group(5) is not None:
            per_class["queue"][int(m.group(5))] = value
        elif m.group(6) is not None:
            per_class["queue_ptr"][int(m.group(6))] = value
        else:
            per_class["centroids"][int(m.group(7))] = value
    out, dropped = apply_rules(plain, RCA_RULES, "RCA")
    for (layer, leaf), by_class in heads.items():
        if sorted(by_class) != list(range(len(by_class))):
            raise OfficialKeyError(f"RCA: class-specific heads extra_convs<i>.{layer}.{leaf} miss some i")
        out[f"class_heads.net.{layer}.{leaf}"] = torch.cat([by_class[i] for i in range(len(by_class))], dim=0)
    for name, by_class in per_class.items():
        if by_class:
            stacked = torch.stack(
                [
                    by_class[c].reshape(by_class[c].shape[-2:] if name != "queue_ptr" else ())
                    for c in range(len(by_class))
                ]
            )
            out[name] = stacked.long() if name == "queue_ptr" else stacked
    return out, dropped
