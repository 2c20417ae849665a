"""Backbones from timm by name, behind one small interface.

Every backbone maps an image batch to a ``BackboneOutput``: the final feature map, an auxiliary
(intermediate) feature map and a global token. ViTs follow the ToCo/SeCo handling
(docs/methods/seco.md#backbone): the positional embedding is frozen and bicubically interpolated to any input
size, the final tokens are layer-normed, the auxiliary tokens are the raw output of block
``aux_layer`` (-3 = block 10 of 12). CNNs return their last two stages at ``output_stride`` and the
globally average-pooled final map in place of the class token.

Backbones are a registry of names (``models/registry.py``, as timm's ``_registry.py``): ResNet-38
(``resnet38d``, models/resnet38.py) and the dilated VGG-16 (``vgg16_dilated``, models/vgg.py) register
themselves; any other name is a timm model (``create_timm_backbone``). Every backbone takes images normalised by
ImageNet's mean and std (data/transforms.py); one whose weights were trained on another normalisation
(``INPUT_NORMS``: TensorFlow's EfficientNet-Lite) converts them first, inside the network. Weights come from a local
file (``models/weights.py``); no hub download is ever attempted (timm 1.x calls the ToCo/SeCo ViT weights
``vit_base_patch16_224.orig_in21k_ft_in1k``).
"""

from __future__ import annotations

import difflib

import timm
import torch
import torch.nn.functional as F
from torch import nn

# the non-timm backbones register their names on import (models/registry.py)
from wsss.core.errors import ConfigError
from wsss.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from wsss.models import resnet38, vgg  # noqa: F401
from wsss.models.registry import BACKBONES, BackboneOutput, backbone_factory, register_backbone
from wsss.models.weights import load_pretrained


class ViTBackbone(nn.Module):
    """A timm VisionTransformer run token by token, so that any input size works (docs/methods/seco.md#backbone)."""

    def __init__(self, vit: nn.Module, aux_layer: int = -3, freeze_pos_embed: bool = True):
        super().__init__()
        if not hasattr(vit, "blocks") or getattr(vit, "cls_token", None) is None:
            raise ValueError("ViTBackbone needs a timm VisionTransformer with a class token")
        self.vit = vit
        self.aux_index = aux_layer % len(vit.blocks)
        self.patch_size = vit.patch_embed.patch_size[0]
        self.stride = self.patch_size
        self.out_dim = vit.embed_dim
        self.aux_dim = vit.embed_dim
        self.cls_dim = vit.embed_dim
        # The positional embedding is frozen in the official code; weight decay on it is moot.
        vit.pos_embed.requires_grad_(not freeze_pos_embed)
        # Run the patch embedding on any size: it is a strided conv, the size check is timm's.
        vit.patch_embed.strict_img_size = False
        vit.patch_embed.dynamic_img_pad = False
        self._grid = vit.patch_embed.grid_size

    def interpolate_pos_embed(self, h: int, w: int) -> torch.Tensor:
        """(1, 1 + h*w, D): the class position kept, the patch grid resized bicubically."""
        pos = self.vit.pos_embed
        cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
        gh, gw = self._grid
        if (h, w) != (gh, gw):
            patch_pos = patch_pos.reshape(1, gh, gw, -1).permute(0, 3, 1, 2)
            patch_pos = F.interpolate(patch_pos, size=(h, w), mode="bicubic", align_corners=False)
            patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        b, _, H, W = x.shape
        p = self.patch_size
        if H % p or W % p:
            # The patch grid needs sides that are multiples of the patch: an image of another size (a 100x75
            # photo, a scale of 0.5 of it) is resized to the nearest multiples (at least one patch), which keeps
            # the maps aligned with the image, where padding would shift them. Callers resize the
            # maps to the size they need, so a map of round(H/p) x round(W/p) cells is what they expect.
            H, W = max(p, round(H / p) * p), max(p, round(W / p) * p)
            x = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)
        h, w = H // p, W // p
        tokens = self.vit.patch_embed(x)
        tokens = tokens.reshape(b, h * w, -1)  # NHWC or NLC -> NLC
        cls = self.vit.cls_token.expand(b, -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.interpolate_pos_embed(h, w)
        tokens = self.vit.pos_drop(tokens)
        aux = None
        for i, block in enumerate(self.vit.blocks):
            tokens = block(tokens)
            if i == self.aux_index:
                aux = tokens
        tokens = self.vit.norm(tokens)

        def to_map(t: torch.Tensor) -> torch.Tensor:
            return t[:, 1:].transpose(1, 2).reshape(b, -1, h, w)

        return BackboneOutput(final=to_map(tokens), aux=to_map(aux), cls=tokens[:, 0])


# timm names (prefixes) whose weights expect another input normalisation than ImageNet's mean / std, as
# (mean, std) of [0, 1] pixels: TensorFlow's EfficientNet-Lite files were trained on (x - 127) / 128 of 0-255 pixels
# (its efficientnet_lite_builder.py: "inception-style" for quantisation; timm's pretrained_cfg: 0.5 / 0.5).
INPUT_NORMS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "tf_efficientnet_lite": ((127 / 255,) * 3, (128 / 255,) * 3),
}


class Renormalize(nn.Module):
    """Images normalised by ImageNet's mean / std (the data pipeline's) to another ``mean`` / ``std``: an exact
    per-channel affine map, with no state in the checkpoint."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        m_in, s_in, m, s = (
            torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD, mean, std)
        )
        self.register_buffer("scale", s_in / s, persistent=False)
        self.register_buffer("shift", (m_in - m) / s, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)


def input_renorm(name: str) -> nn.Module:
    """The input conversion the timm model ``name`` needs (``INPUT_NORMS``), else an identity."""
    norm = next((v for prefix, v in INPUT_NORMS.items() if name.startswith(prefix)), None)
    return Renormalize(*norm) if norm else nn.Identity()


class CNNBackbone(nn.Module):
    """A timm CNN in ``features_only`` mode: the last two stages at ``output_stride``; ``renorm`` converts the
    ImageNet-normalised input to the one its weights expect (``input_renorm``)."""

    def __init__(self, net: nn.Module, renorm: nn.Module | None = None):
        super().__init__()
        self.renorm = renorm if renorm is not None else nn.Identity()
        self.net = net
        info = net.feature_info
        self.out_dim = info.channels()[-1]
        self.aux_dim = info.channels()[-2]
        self.cls_dim = self.out_dim
        self.stride = info.reduction()[-1]

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        aux, final = self.net(self.renorm(x))[-2:]
        if aux.shape[-2:] != final.shape[-2:]:
            aux = F.interpolate(aux, size=final.shape[-2:], mode="bilinear", align_corners=False)
        return BackboneOutput(final=final, aux=aux, cls=final.mean(dim=(2, 3)))


def is_vit(name: str) -> bool:
    return name.startswith(("vit_", "deit_", "eva", "beit"))


@register_backbone("timm")
def create_timm_backbone(
    name: str,
    *,
    pretrained: str | None = None,
    aux_layer: int = -3,
    freeze_pos_embed: bool = True,
    output_stride: int = 16,
    **kwargs,
) -> ViTBackbone | CNNBackbone:
    """Any timm model by name (the default of ``create_backbone``); ``pretrained`` is a local file or None. A name
    that is neither registered here nor timm's is a ConfigError naming ``model.backbone`` (timm's own was a
    RuntimeError traceback)."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, [*BACKBONES, *timm.list_models()], n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        own = ", ".join(sorted(k for k in BACKBONES if k != "timm"))
        raise ConfigError(
            f"model.backbone: no backbone {name!r}{hint}: a timm model name (timm.list_models()) or one of {own}"
        )
    if is_vit(name):
        vit = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
        if pretrained:
            load_pretrained(vit, pretrained)
        return ViTBackbone(vit, aux_layer=aux_layer, freeze_pos_embed=freeze_pos_embed)
    net = timm.create_model(
        name,
        pretrained=False,
        features_only=True,
        out_indices=(-2, -1),
        output_stride=output_stride,
        **kwargs,
    )
    if pretrained:
        load_pretrained(net, pretrained)
    return CNNBackbone(net, input_renorm(name))


def create_backbone(
    name: str,
    *,
    pretrained: str | None = None,
    aux_layer: int = -3,
    freeze_pos_embed: bool = True,
    output_stride: int = 16,
    **kwargs,
) -> nn.Module:
    """Build the backbone registered as ``name`` (``models/registry.py``), else timm's model ``name``;
    ``pretrained`` is a local state-dict file or None."""
    return backbone_factory(name)(
        name,
        pretrained=pretrained,
        aux_layer=aux_layer,
        freeze_pos_embed=freeze_pos_embed,
        output_stride=output_stride,
        **kwargs,
    )
