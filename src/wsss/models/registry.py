"""The backbone registry (as timm's ``models/_registry.py``): a backbone factory registers by name, and
``create_backbone`` (models/backbones.py) builds by name, with no special case per backbone.

A factory is called as ``factory(name, *, pretrained, aux_layer, freeze_pos_embed, output_stride, **kwargs)``
and returns a module mapping an image batch to a ``BackboneOutput`` with ``out_dim``, ``aux_dim``,
``cls_dim`` and ``stride`` attributes. A name that is not registered is built by the ``timm`` factory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

BACKBONES: dict[str, Callable[..., nn.Module]] = {}


@dataclass
class BackboneOutput:
    final: torch.Tensor  # (B, D, h, w)
    aux: torch.Tensor  # (B, D_aux, h, w)
    cls: torch.Tensor  # (B, D): ViT class token, or pooled features for a CNN


def register_backbone(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: make a backbone factory available as ``model.backbone: <name>``."""

    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a backbone needs a non-empty name, got {name!r}")

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        held = BACKBONES.get(name)
        if held is not None and held is not factory:
            raise ValueError(f"backbone {name!r} is already registered (by {held.__module__}); pick another name")
        BACKBONES[name] = factory
        return factory

    return deco


def backbone_factory(name: str) -> Callable[..., nn.Module]:
    """The factory registered as ``name``, else the ``timm`` one (any timm model name)."""
    return BACKBONES.get(name) or BACKBONES["timm"]
