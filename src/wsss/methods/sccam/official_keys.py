"""SC-CAM's official classifier (github.com/Juliachang/SC-CAM ``network/resnet38_cls.py``) -> our :class:`SCCAM`
keys: the heads of golden ``sccam_heads_loss.npz``; the ResNet-38 trunk keeps PSA's ``resnet38d.py`` names.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from wsss.models.official_keys import Rule, apply_rules, rename_to

#: SC-CAM's / PSA's classifier heads (``network/resnet38_cls.py``): round 0 (PSA) has ``fc8``, round >= 1
#: ``fc8_20`` (parents) and ``fc8_200`` (the (C-1)*K sub-categories).
SCCAM_HEAD_RULES: list[Rule] = [
    (r"fc8(_20)?\.weight", rename_to("classifier.conv.weight")),
    (r"fc8_200\.weight", rename_to("sub_classifier.conv.weight")),
]


#: The whole SC-CAM / PSA classifier: the ResNet-38 trunk (PSA's ``network/resnet38d.py`` names, ours
#: under ``backbone.net.``) and the heads.
SCCAM_RULES: list[Rule] = [
    (r"((?:conv1a|b[2-7](?:_\d)?|bn7)\..+)", rename_to(r"backbone.net.\1")),
    *SCCAM_HEAD_RULES,
]


def sccam_state_from_official(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """An official SC-CAM classifier ``state_dict`` (round >= 1: ``fc8_20`` + ``fc8_200``; PSA's round-0
    ``res38_cls.pth``: ``fc8``) -> our :class:`SCCAM` state, and the official keys left out (none)."""
    return apply_rules(state, SCCAM_RULES, "SC-CAM")
