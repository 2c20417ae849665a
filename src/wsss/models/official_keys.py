"""Official checkpoint key layouts -> ours (pure functions: no file access, no model building).

Each ``*_state_from_official`` maps a state dict saved by an official code to the key names and
shapes of our method module, and returns the mapped state plus the official keys it leaves out on
purpose (parameters our modules do not build because the official forward never uses them). A key
that fits no rule raises :class:`OfficialKeyError`, naming it: a checkpoint of another
architecture is refused rather than half-loaded.

- SeCo (github.com/zwyang6/SeCo ``model/model_seco.py``): golden ``seco_forward.npz: sd/*``.
- ToCo (github.com/rulixiang/ToCo ``model/model_seg_neg.py``): the same ViT and classifiers, LargeFOV.
- RCA (github.com/maeve07/RCA ``models/rca.py``): golden ``rca_model.npz: sd.*``.
- SC-CAM (github.com/Juliachang/SC-CAM ``network/resnet38_cls.py``): the heads of golden
  ``sccam_heads_loss.npz``; the ResNet-38 trunk keeps PSA's ``resnet38d.py`` names.
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


def _apply(state: Mapping[str, torch.Tensor], rules: list[Rule], what: str) -> tuple[dict, list[str]]:
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


def _rename(template: str) -> Callable[[re.Match[str], torch.Tensor], tuple[str, torch.Tensor]]:
    return lambda m, v: (m.expand(template), v)


def _drop(m: re.Match[str], v: torch.Tensor) -> None:
    return None


#: SeCo's network (ToCo's without the projection heads, queue and prototypes). Dropped: the unused
#: 1000-class ``head`` of both ViTs (our timm ViT is built with num_classes=0) and the DINO head's
#: weight-normed ``last_layer``, which the official forward never calls (no gradient, no effect).
SECO_RULES: list[Rule] = [
    (r"(encoder|encoder_k)\.head\.(weight|bias)", _drop),
    (r"(proj_head|proj_head_t)\.last_layer\.(weight_g|weight_v|weight|bias)", _drop),
    (r"encoder\.(.+)", _rename(r"backbone.vit.\1")),
    (r"encoder_k\.(.+)", _rename(r"encoder_k.vit.\1")),
    (r"(classifier|aux_classifier)\.weight", _rename(r"\1.conv.weight")),
    (r"decoder\.c(\d+)\.(weight|bias)", _rename(r"decoder.branches.\1.\2")),  # ASPP branches
    (r"(proj_head|proj_head_t)\.mlp\.(\d+)\.(weight|bias)", _rename(r"\1.mlp.\2.\3")),
    (r"prototypes", _rename("prototypes")),
    (r"queue", _rename("queue")),
    (r"queue_label_flag", lambda m, v: ("queue_flags", v.reshape(-1))),  # (N, 1) -> (N,)
    (r"queue_ptr", lambda m, v: ("queue_ptr", v.reshape(()).long())),  # (1,) -> ()
]


def seco_state_from_official(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """An official SeCo ``state_dict`` (with or without ``module.``) -> our :class:`SeCo` state, dropped keys."""
    return _apply(state, SECO_RULES, "SeCo")


#: ToCo (github.com/rulixiang/ToCo ``model/model_seg_neg.py``) -> our CAM baseline with the LargeFOV head
#: (``model.decoder: largefov``): the same ViT and classifiers as SeCo, ``decoder.conv6/conv7/conv8`` =
#: LargeFOV's three bias-free convs. Dropped: the CTC projection heads (training only) and the ViT head.
TOCO_RULES: list[Rule] = [
    (r"encoder\.head\.(weight|bias)", _drop),
    (r"(proj_head|proj_head_t)\..+", _drop),
    (r"encoder\.(.+)", _rename(r"backbone.vit.\1")),
    (r"(classifier|aux_classifier)\.weight", _rename(r"\1.conv.weight")),
    (r"decoder\.conv6\.weight", _rename("decoder.body.0.weight")),
    (r"decoder\.conv7\.weight", _rename("decoder.body.2.weight")),
    (r"decoder\.conv8\.weight", _rename("decoder.body.4.weight")),
]


def toco_state_from_official(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """An official ToCo ``state_dict`` -> our :class:`CAMBaseline` state (LargeFOV decoder), dropped keys."""
    return _apply(state, TOCO_RULES, "ToCo")


#: SC-CAM's / PSA's classifier heads (``network/resnet38_cls.py``): round 0 (PSA) has ``fc8``, round >= 1
#: ``fc8_20`` (parents) and ``fc8_200`` (the (C-1)*K sub-categories).
SCCAM_HEAD_RULES: list[Rule] = [
    (r"fc8(_20)?\.weight", _rename("classifier.conv.weight")),
    (r"fc8_200\.weight", _rename("sub_classifier.conv.weight")),
]


#: The whole SC-CAM / PSA classifier: the ResNet-38 trunk (PSA's ``network/resnet38d.py`` names, ours
#: under ``backbone.net.``) and the heads.
SCCAM_RULES: list[Rule] = [
    (r"((?:conv1a|b[2-7](?:_\d)?|bn7)\..+)", _rename(r"backbone.net.\1")),
    *SCCAM_HEAD_RULES,
]


def sccam_state_from_official(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """An official SC-CAM classifier ``state_dict`` (round >= 1: ``fc8_20`` + ``fc8_200``; PSA's round-0
    ``res38_cls.pth``: ``fc8``) -> our :class:`SCCAM` state, and the official keys left out (none)."""
    return _apply(state, SCCAM_RULES, "SC-CAM")


#: RCA (``models/rca.py``): ``features`` = the VGG trunk, ``extra_convs`` = the coarse head, ``extra_F`` =
#: the embedding branch, ``Q/K/V/aggre/concat_project`` = the aggregation; the class-specific heads
#: ``extra_convs{i}.j`` are concatenated over i into our grouped :class:`ClassSpecificHeads`. The memory
#: (``queue{c}``, ``queue_ptr{c}``) and centroids (``cluter{c}``) are stacked per class.
RCA_RULES: list[Rule] = [
    (r"features\.(.+)", _rename(r"backbone.features.\1")),
    (r"extra_convs\.(\d+)\.(weight|bias)", _rename(r"coarse_head.\1.\2")),
    (r"extra_F\.(.+)", _rename(r"embed.\1")),
    (r"(Q|K|V|aggre|concat_project)\.(weight|bias)", _rename(r"aggregation.\1.\2")),
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
    out, dropped = _apply(plain, RCA_RULES, "RCA")
    for (layer, leaf), by_class in heads.items():
        if sorted(by_class) != list(range(len(by_class))):
            raise OfficialKeyError(f"RCA: class-specific heads extra_convs<i>.{layer}.{leaf} miss some i")
        out[f"class_heads.net.{layer}.{leaf}"] = torch.cat([by_class[i] for i in range(len(by_class))], dim=0)
    for name, by_class in per_class.items():
        if by_class:
            stacked = torch.stack([by_class[c].reshape(by_class[c].shape[-2:] if name != "queue_ptr" else ())
                                   for c in range(len(by_class))])  # fmt: skip
            out[name] = stacked.long() if name == "queue_ptr" else stacked
    return out, dropped
