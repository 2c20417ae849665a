"""Segmentation networks of the multi-stage pipeline: DeepLab-v2 and DeepLab-v3+.

- ``DeepLabV2``: a dilated backbone (ResNet-101 at output stride 8 in RCA / SC-CAM, which train
  kazuto1011/deeplab-pytorch's ``DeepLabV2_ResNet101_MSC``; docs/methods/deeplab.md#deeplab) and the
  DeepLab-v2 ASPP classifier: four 3x3 convs with dilations 6/12/18/24 straight to the classes,
  outputs summed (``models.decoders.ASPP``, the one ASPP of the toolkit).
- ``DeepLabV3Plus``: the modern option (Chen et al. 2018): ASPP with a 1x1 branch, three atrous
  branches and image pooling (conv-BN-ReLU, 256 channels), projected, upsampled to the stride-4
  low-level features (reduced to 48 channels), two 3x3 convs and a 1x1 classifier.

Backbones are timm models by name (``resnet101`` has torchvision's key names, so a torchvision or
timm ImageNet state dict loads through ``models.backbones.load_pretrained``); DeepLab-v2 takes any
backbone of the toolkit (``backbone_from_config``, ViTs included).
"""

from __future__ import annotations

from collections.abc import Sequence

import timm
import torch
import torch.nn.functional as F
from torch import nn

from wsss.models.backbones import CNNBackbone, ViTBackbone, input_renorm, is_vit
from wsss.models.decoders import ASPP
from wsss.models.weights import load_pretrained


class DeepLabV2(nn.Module):
    """Backbone (its final map) -> DeepLab-v2 ASPP (dilations summed) -> (B, C, h, w) logits."""

    def __init__(
        self, backbone: ViTBackbone | CNNBackbone, num_classes: int, rates: Sequence[int] = (6, 12, 18, 24)
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = ASPP(backbone.out_dim, num_classes, tuple(rates))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x).final)


def _conv_bn_relu(cin: int, cout: int, k: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class ASPPv3(nn.Module):
    """DeepLab-v3 ASPP: 1x1, three atrous 3x3 and image pooling branches, concatenated, 1x1 projection."""

    def __init__(self, in_dim: int, dim: int = 256, rates: Sequence[int] = (12, 24, 36), dropout: float = 0.1):
        super().__init__()
        self.branches = nn.ModuleList(
            [_conv_bn_relu(in_dim, dim, 1)] + [_conv_bn_relu(in_dim, dim, 3, r) for r in rates]
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_dim, dim, 1, bias=False), nn.ReLU(inplace=True))
        self.project = nn.Sequential(_conv_bn_relu(dim * (len(rates) + 2), dim, 1), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(self.pool(x).expand(-1, -1, *x.shape[-2:]))
        return self.project(torch.cat(outs, dim=1))


class DeepLabV3Plus(nn.Module):
    """A timm CNN with stride-4 low-level features -> ASPPv3 -> decoder -> (B, C, H/4, W/4) logits."""

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        *,
        pretrained: str | None = None,
        output_stride: int = 16,
        rates: Sequence[int] = (6, 12, 18),
        dim: int = 256,
        low_dim: int = 48,
        **kwargs,
    ) -> None:
        super().__init__()
        if is_vit(backbone):
            raise ValueError(f"DeepLab-v3+ needs a CNN backbone with stride-4 features, got {backbone!r}")
        self.net = timm.create_model(
            backbone, pretrained=False, features_only=True, out_indices=(1, -1), output_stride=output_stride, **kwargs
        )
        if pretrained:
            load_pretrained(self.net, pretrained)
        self.renorm = input_renorm(backbone)  # the input normalisation its weights expect (models/backbones.py)
        low_ch, high_ch = self.net.feature_info.channels()
        self.aspp = ASPPv3(high_ch, dim, rates)
        self.low = _conv_bn_relu(low_ch, low_dim, 1)
        self.decoder = nn.Sequential(_conv_bn_relu(dim + low_dim, dim, 3), _conv_bn_relu(dim, dim, 3))
        self.classifier = nn.Conv2d(dim, num_classes, 1)

    def head_modules(self) -> list[nn.Module]:
        return [self.aspp, self.low, self.decoder]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.net(self.renorm(x))
        y = F.interpolate(self.aspp(high), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.decoder(torch.cat([y, self.low(low)], dim=1)))
