"""VGG-16 with dilated last block, output stride 8: RCA's backbone (docs/methods/rca.md#backbone).

Layer list 'D1' of the official ``make_layers``: VGG-16's 13 convolutions (3x3, ReLU, no BN) with
three 2x2 max-pools, then a 3x3 stride-1 max-pool in place of the fourth, and the last three
convolutions dilated 2 (padding 2); no fifth pool. The output has 512 channels at stride 8 (a
368x368 input gives 46x46 maps).

The module holds a single ``features`` ``nn.Sequential`` whose indices are those of torchvision's
``vgg16().features`` (the stride-1 pool sits where torchvision has its fourth pool), so the
ImageNet file ``vgg16-397923af.pth`` loads key for key (``features.N.weight``/``bias``; its
``classifier.*`` keys are dropped), with :func:`wsss.models.backbones.load_pretrained` reporting any
missing or unexpected key. ``width`` scales every layer's channels and ``batch_norm`` adds a BN after
each convolution (torchvision's ``vgg16_bn`` layout): small from-scratch variants for CPU presets (the
paper's network is ``width=1``, no BN).

Use it as ``model.backbone: vgg16_dilated`` (``create_backbone``); ``model.backbone_kwargs`` may set
``width``, ``batch_norm`` and ``layers`` (the width of every layer, D1-shaped).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from wsss.core.errors import UsageError
from wsss.models.registry import BackboneOutput, register_backbone
from wsss.models.weights import load_pretrained

# docs/methods/rca.md#backbone: 'M' = MaxPool 2x2/2, 'N' = MaxPool 3x3/1 pad 1; convolutions after index 13 dilated 2
CFG_D1: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "N", 512, 512, 512)


def check_d1_layout(layers: Sequence[int | str]) -> tuple[int | str, ...]:
    """A layer list with the 'D1' layout (``CFG_D1``: the pools at the same positions) and its own widths,
    like the official ``make_layers(cfg)`` takes (golden ``rca_model.npz: cfg_features``)."""
    cfg = tuple(v if v in ("M", "N") else int(v) for v in layers)
    shape = tuple(v if v in ("M", "N") else 0 for v in cfg)
    if len(cfg) != len(CFG_D1) or shape != tuple(v if v in ("M", "N") else 0 for v in CFG_D1):
        raise UsageError(f"vgg16_dilated: layers {list(layers)} do not have the D1 layout {list(CFG_D1)}")
    return cfg


class VGG16Dilated(nn.Module):
    """VGG-16 'D1' (docs/methods/rca.md#backbone) returning a ``BackboneOutput`` (optionally with BN:
    torchvision's ``vgg16_bn``).

    ``final``: the last ReLU (B, 512*width, H/8, W/8); ``aux``: conv4_3 after its ReLU, same size;
    ``cls``: the global average of ``final``. ``layers``: the widths per layer, a D1-shaped list
    (``check_d1_layout``) in place of ``CFG_D1`` (then scaled by ``width``).
    """

    stride = 8

    def __init__(
        self, width: float = 1.0, in_chans: int = 3, batch_norm: bool = False, layers: Sequence[int | str] | None = None
    ):
        super().__init__()
        cfg = CFG_D1 if layers is None else check_d1_layout(layers)
        modules: list[nn.Module] = []
        c_in = in_chans
        for i, v in enumerate(cfg):
            if v == "M":
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
            elif v == "N":
                self.aux_index = len(modules) - 1  # the ReLU after conv4_3, before the stride-1 pool
                modules.append(nn.MaxPool2d(kernel_size=3, stride=1, padding=1))
            else:
                c_out = max(1, round(int(v) * width))
                dil = 2 if i > 13 else 1
                modules.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=dil, dilation=dil))
                if batch_norm:
                    modules.append(nn.BatchNorm2d(c_out))
                modules.append(nn.ReLU(inplace=True))
                c_in = c_out
        self.features = nn.Sequential(*modules)
        self.out_dim = self.aux_dim = self.cls_dim = c_in
        for m in self.modules():  # torchvision's VGG init (used when training from scratch)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        aux = x
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i == self.aux_index:
                aux = x
        return BackboneOutput(final=x, aux=aux, cls=x.mean(dim=(2, 3)))


def vgg16_dilated(
    *,
    pretrained: str | Path | None = None,
    width: float = 1.0,
    batch_norm: bool = False,
    layers: Sequence[int | str] | None = None,
    **kwargs,
) -> VGG16Dilated:
    """The 'D1' VGG-16; ``pretrained``: a local torchvision ``vgg16`` state dict (``vgg16-397923af.pth``,
    or ``vgg16_bn-6c64b313.pth`` with ``batch_norm=True``).

    ``kwargs`` that only concern timm backbones (``output_stride``, ``aux_layer``...) are not accepted:
    the stride is fixed at 8 by the architecture.
    """
    if kwargs:
        raise TypeError(
            f"vgg16_dilated: unexpected arguments {sorted(kwargs)} (only 'width', 'batch_norm', 'layers', 'pretrained')"
        )
    net = VGG16Dilated(width=width, batch_norm=batch_norm, layers=layers)
    if pretrained:
        load_pretrained(net, pretrained)
    return net


@register_backbone("vgg16_dilated")  # RCA's VGG-16 'D1', stride 8 by construction (docs/methods/rca.md#backbone)
def _build_vgg16_dilated(
    name: str, *, pretrained: str | None, output_stride: int, aux_layer: int, freeze_pos_embed: bool, **kwargs
) -> VGG16Dilated:
    return vgg16_dilated(pretrained=pretrained, **kwargs)
