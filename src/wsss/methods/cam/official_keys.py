"""ToCo's official checkpoint (github.com/rulixiang/ToCo ``model/model_seg_neg.py``) -> our CAM baseline's keys:
the same ViT and classifiers as SeCo, the LargeFOV decoder.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from wsss.models.official_keys import Rule, apply_rules, drop_key, rename_to

#: ToCo (github.com/rulixiang/ToCo ``model/model_seg_neg.py``) -> our CAM baseline with the LargeFOV head
#: (``model.decoder: largefov``): the same ViT and classifiers as SeCo, ``decoder.conv6/conv7/conv8`` =
#: LargeFOV's three bias-free convs. Dropped: the CTC projection heads (training only) and the ViT head.
TOCO_RULES: list[Rule] = [
    (r"encoder\.head\.(weight|bias)", drop_key),
    (r"(proj_head|proj_head_t)\..+", drop_key),
    (r"encoder\.(.+)", rename_to(r"backbone.vit.\1")),
    (r"(classifier|aux_classifier)\.weight", rename_to(r"\1.conv.weight")),
    (r"decoder\.conv6\.weight", rename_to("decoder.body.0.weight")),
    (r"decoder\.conv7\.weight", rename_to("decoder.body.2.weight")),
    (r"decoder\.conv8\.weight", rename_to("decoder.body.4.weight")),
]


def toco_state_from_official(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """An official ToCo ``state_dict`` -> our :class:`CAMBaseline` state (LargeFOV decoder), dropped keys."""
    return apply_rules(state, TOCO_RULES, "ToCo")
