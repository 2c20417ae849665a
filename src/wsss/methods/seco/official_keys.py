"""SeCo's official checkpoint (github.com/zwyang6/SeCo ``model/model_seco.py``) -> our :class:`SeCo` keys
(golden ``seco_forward.npz: sd/*``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from wsss.models.official_keys import Rule, apply_rules, drop_key, rename_to

#: SeCo's network (ToCo's without the projection heads, queue and prototypes). Dropped: the unused
#: 1000-class ``head`` of both ViTs (our timm ViT is built with num_classes=0) and the DINO head's
#: weight-normed ``last_layer``, which the official forward never calls (no gradient, no effect).
SECO_RULES: list[Rule] = [
    (r"(encoder|encoder_k)\.head\.(weight|bias)", drop_key),
    (r"(proj_head|proj_head_t)\.last_layer\.(weight_g|weight_v|weight|bias)", drop_key),
    (r"encoder\.(.+)", rename_to(r"backbone.vit.\1")),
    (r"encoder_k\.(.+)", rename_to(r"encoder_k.vit.\1")),
    (r"(classifier|aux_classifier)\.weight", rename_to(r"\1.conv.weight")),
    (r"decoder\.c(\d+)\.(weight|bias)", rename_to(r"decoder.branches.\1.\2")),  # ASPP branches
    (r"(proj_head|proj_head_t)\.mlp\.(\d+)\.(weight|bias)", rename_to(r"\1.mlp.\2.\3")),
    (r"prototypes", rename_to("prototypes")),
    (r"queue", rename_to("queue")),
    (r"queue_label_flag", lambda m, v: ("queue_flags", v.reshape(-1))),  # (N, 1) -> (N,)
    (r"queue_ptr", lambda m, v: ("queue_ptr", v.reshape(()).long())),  # (1,) -> ()
]


def seco_state_from_official(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """An official SeCo ``state_dict`` (with or without ``module.``) -> our :class:`SeCo` state, dropped keys."""
    return apply_rules(state, SECO_RULES, "SeCo")
