"""Wider ResNet-38 ("model A1" of Wu et al., ademxapp) as ported to PyTorch by PSA and used by SC-CAM
(docs/methods/sccam.md#resnet38), written in plain PyTorch, timm style: one architecture, ``resnet38d()`` registered
with timm, a ``checkpoint_filter_fn`` for converted weights, and the toolkit backbone wrapper.

Architecture (pre-activation blocks, BN-ReLU-conv; all convolutions bias-free):

    conv1a  3x3 3->64                                   stride 1
    b2, b2_1, b2_2        ResBlock 128 ch                stride 2   (the first block)
    b3, b3_1, b3_2        ResBlock 256 ch                stride 4
    b4, b4_1 .. b4_5      ResBlock 512 ch                stride 8
    b5, b5_1, b5_2        ResBlock 512 -> 1024 ch, dilation 2 (b5's first conv: dilation 1)
    b6                    bottleneck 1024 -> 2048, dilation 4, Dropout2d 0.3
    b7                    bottleneck 2048 -> 4096, dilation 4, Dropout2d 0.5
    bn7 + ReLU            -> "conv6" (B, 4096, H/8, W/8)

Frozen as in the official ``Net.train`` override: every BatchNorm layer stays in eval mode with its
weight and bias frozen, and conv1a, b2, b2_1, b2_2 are frozen (``not_training``).

Weights: ``ilsvrc-cls_rna-a1_cls1000_ep-0001.params`` (MXNet, ademxapp) converted to a torch state
dict by PSA/SC-CAM's ``convert_mxnet_to_torch`` (it needs mxnet; save its output with
``torch.save(d, "resnet38d_ilsvrc.pth")``). The converted keys are exactly this module's names::

    conv1a.weight                                   (64, 3, 3, 3)
    b2.bn_branch2a.{weight,bias,running_mean,running_var}
    b2.conv_branch2a.weight, b2.bn_branch2b1.*, b2.conv_branch2b1.weight, b2.conv_branch1.weight
    b2_1.*, b2_2.*, b3*.*, b4*.*, b5*.*             (ResBlock: bn_branch2a, conv_branch2a,
                                                     bn_branch2b1, conv_branch2b1[, conv_branch1])
    b6.*, b7.*                                      (bottleneck: bn_branch2a, conv_branch2a,
                                                     bn_branch2b1, conv_branch2b1, bn_branch2b2,
                                                     conv_branch2b2, conv_branch1)
    bn7.{weight,bias,running_mean,running_var}

(no ``num_batches_tracked``; the 1000-class ``linear1000`` is dropped by the converter). A trained
PSA / SC-CAM classifier (``res38_cls.pth``) has the same keys plus ``fc8.weight`` (or ``fc8_20`` /
``fc8_200``), possibly under ``module.``: ``checkpoint_filter_fn`` strips the prefix and the heads and
fills the missing ``num_batches_tracked`` buffers.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from wsss.core.errors import UsageError
from wsss.models.registry import BackboneOutput, register_backbone
from wsss.models.weights import check_state_dict, read_state_dict

__all__ = ["ResNet38d", "ResNet38Backbone", "checkpoint_filter_fn", "resnet38d", "create_resnet38d_backbone"]


class ResBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 (+ 1x1 projection shortcut)."""

    def __init__(
        self,
        in_ch: int,
        mid_ch: int,
        out_ch: int,
        stride: int = 1,
        first_dilation: int | None = None,
        dilation: int = 1,
    ):
        super().__init__()
        first_dilation = dilation if first_dilation is None else first_dilation
        self.same_shape = in_ch == out_ch and stride == 1
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(
            in_ch, mid_ch, 3, stride, padding=first_dilation, dilation=first_dilation, bias=False
        )
        self.bn_branch2b1 = nn.BatchNorm2d(mid_ch)
        self.conv_branch2b1 = nn.Conv2d(mid_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=False)
        self.conv_branch1 = None if self.same_shape else nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (output, the block's BN-ReLU'd input)."""
        pre = F.relu(self.bn_branch2a(x))
        shortcut = x if self.conv_branch1 is None else self.conv_branch1(pre)
        y = self.conv_branch2a(pre)
        y = self.conv_branch2b1(F.relu(self.bn_branch2b1(y)))
        return shortcut + y, pre


class BottleneckBlock(nn.Module):
    """Pre-activation bottleneck of b6 / b7: 1x1 (out/4) - 3x3 dilated (out/2) - 1x1 (out), with
    Dropout2d before the two last convolutions, and a 1x1 projection shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1, dropout: float = 0.0):
        super().__init__()
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, out_ch // 4, 1, stride, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(out_ch // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(out_ch // 4, out_ch // 2, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn_branch2b2 = nn.BatchNorm2d(out_ch // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(out_ch // 2, out_ch, 1, bias=False)
        self.conv_branch1 = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre = F.relu(self.bn_branch2a(x))
        shortcut = self.conv_branch1(pre)
        y = self.conv_branch2a(pre)
        y = self.conv_branch2b1(self.dropout_2b1(F.relu(self.bn_branch2b1(y))))
        y = self.conv_branch2b2(self.dropout_2b2(F.relu(self.bn_branch2b2(y))))
        return shortcut + y, pre


class ResNet38d(nn.Module):
    """The ResNet-38 trunk; ``forward`` returns conv6 (B, 4096, H/8, W/8), ``forward_features`` all
    three taps of the official ``forward_as_dict`` (conv4: b5's pre-activation, 512 ch; conv5: b6's,
    1024 ch; conv6)."""

    frozen_prefixes = ("conv1a", "b2.", "b2_1.", "b2_2.")  # docs/methods/sccam.md#resnet38 (`not_training`)

    def __init__(
        self,
        *,
        freeze_bn: bool = True,
        freeze_stem: bool = True,
        width: float = 1.0,
        drop_b6: float = 0.3,
        drop_b7: float = 0.5,
    ):
        """``width`` < 1 scales every channel count (a small variant for tests only)."""
        super().__init__()

        def c(n: int) -> int:
            return max(4, int(round(n * width)))

        self.conv1a = nn.Conv2d(3, c(64), 3, padding=1, bias=False)
        self.b2 = ResBlock(c(64), c(128), c(128), stride=2)
        self.b2_1 = ResBlock(c(128), c(128), c(128))
        self.b2_2 = ResBlock(c(128), c(128), c(128))
        self.b3 = ResBlock(c(128), c(256), c(256), stride=2)
        self.b3_1 = ResBlock(c(256), c(256), c(256))
        self.b3_2 = ResBlock(c(256), c(256), c(256))
        self.b4 = ResBlock(c(256), c(512), c(512), stride=2)
        for i in range(1, 6):
            setattr(self, f"b4_{i}", ResBlock(c(512), c(512), c(512)))
        self.b5 = ResBlock(c(512), c(512), c(1024), first_dilation=1, dilation=2)
        self.b5_1 = ResBlock(c(1024), c(512), c(1024), dilation=2)
        self.b5_2 = ResBlock(c(1024), c(512), c(1024), dilation=2)
        self.b6 = BottleneckBlock(c(1024), c(2048), dilation=4, dropout=drop_b6)
        self.b7 = BottleneckBlock(c(2048), c(4096), dilation=4, dropout=drop_b7)
        self.bn7 = nn.BatchNorm2d(c(4096))
        self.num_features = c(4096)
        self.feature_channels = (c(512), c(1024), c(4096))
        self.stride = 8
        self.freeze_bn = freeze_bn
        if freeze_stem:
            for name, p in self.named_parameters():
                if name.startswith(self.frozen_prefixes):
                    p.requires_grad_(False)
        if freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.requires_grad_(False)
                    m.bias.requires_grad_(False)

    def train(self, mode: bool = True) -> ResNet38d:
        """BatchNorm layers stay in eval mode (running statistics frozen) when ``freeze_bn``."""
        super().train(mode)
        if self.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.conv1a(x)
        for name in ("b2", "b2_1", "b2_2", "b3", "b3_1", "b3_2", "b4", "b4_1", "b4_2", "b4_3", "b4_4", "b4_5"):
            x, _ = getattr(self, name)(x)
        x, conv4 = self.b5(x)
        x, _ = self.b5_1(x)
        x, _ = self.b5_2(x)
        x, conv5 = self.b6(x)
        x, _ = self.b7(x)
        return {"conv4": conv4, "conv5": conv5, "conv6": F.relu(self.bn7(x))}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)["conv6"]


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: ResNet38d) -> dict[str, torch.Tensor]:
    """A converted ResNet-38 state dict (module docstring) -> this model's keys.

    Strips ``module.`` / ``backbone.`` prefixes, drops classifier heads (``fc8*``, ``linear1000*``) and
    the affinity / other heads of PSA models that are not part of the trunk, and adds the
    ``num_batches_tracked`` buffers the MXNet conversion does not have.
    """
    out: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        for prefix in ("module.", "backbone.net.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
        if k.startswith(("fc8", "linear1000", "dropout7")):
            continue
        out[k] = v
    own = model.state_dict()
    for k, v in own.items():
        if k.endswith("num_batches_tracked") and k not in out:
            out[k] = v.clone()
    return out


def load_resnet38d_weights(model: ResNet38d, path: str | Path) -> None:
    """Load a converted state dict (module docstring); WeightLoadError lists missing / unexpected keys."""
    path = Path(path)
    state = checkpoint_filter_fn(read_state_dict(path), model)
    check_state_dict(
        state, model.state_dict(), f"{path}: weights do not fit ResNet-38 (docs/methods/sccam.md#resnet38)"
    )
    model.load_state_dict(state, strict=True)


def _register(fn):  # timm's registry, so that timm.create_model("resnet38d") builds the trunk too
    try:
        from timm.models import register_model

        return register_model(fn)
    except Exception:  # noqa: BLE001 - registration is a convenience; the toolkit path does not need it
        return fn


@_register
def resnet38d(pretrained: bool = False, **kwargs) -> ResNet38d:
    """timm entry point. ``pretrained`` must be False (no download); use ``pretrained_file=PATH``."""
    if pretrained:
        raise ValueError("resnet38d has no downloadable weights: pass pretrained_file=<converted .pth>")
    path = kwargs.pop("pretrained_file", None)
    for key in ("num_classes", "global_pool", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    model = ResNet38d(**kwargs)
    if path:
        load_resnet38d_weights(model, path)
    return model


class ResNet38Backbone(nn.Module):
    """The toolkit's backbone interface over ResNet-38: final = conv6 (4096 ch, stride 8), aux = conv5
    (b6's pre-activation, 1024 ch), cls = the GAP of conv6."""

    def __init__(self, net: ResNet38d):
        super().__init__()
        self.net = net
        self.out_dim = net.num_features
        self.aux_dim = net.feature_channels[1]
        self.cls_dim = self.out_dim
        self.stride = net.stride

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        f = self.net.forward_features(x)
        return BackboneOutput(final=f["conv6"], aux=f["conv5"], cls=f["conv6"].mean(dim=(2, 3)))


def create_resnet38d_backbone(pretrained: str | None = None, output_stride: int = 8, **kwargs) -> ResNet38Backbone:
    """``model.backbone: resnet38d`` (``models.backbones.create_backbone``); kwargs: freeze_bn,
    freeze_stem, width, drop_b6, drop_b7. The stride is fixed at 8 (dilated b5-b7, docs/methods/sccam.md#resnet38)."""
    if output_stride != 8:
        raise UsageError(
            f"resnet38d has output stride 8 (docs/methods/sccam.md#resnet38); set model.output_stride: 8, "
            f"got {output_stride}"
        )
    net = ResNet38d(**kwargs)
    if pretrained:
        load_resnet38d_weights(net, pretrained)
    return ResNet38Backbone(net)


@register_backbone("resnet38d")  # SC-CAM's wider ResNet-38 (docs/methods/sccam.md#resnet38)
def _build_resnet38d(
    name: str, *, pretrained: str | None, output_stride: int, aux_layer: int, freeze_pos_embed: bool, **kwargs
) -> ResNet38Backbone:
    return create_resnet38d_backbone(pretrained, output_stride, **kwargs)
