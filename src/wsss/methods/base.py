"""Building blocks that several methods share: the ViT parameter groups of docs/methods/seco.md#optim, the
backbone of a ``ModelConfig``, and the pseudo-label targets of the methods that train on ``data.pseudo_dir``
(DeepLab, AffinityNet). PSA's parameter groups (AffinityNet, SC-CAM) are ``wsss.methods.psa``; the online pseudo
label of ToCo/SeCo is ``wsss.cam.online_pseudo_label``.

The method contract itself (``Method``, ``register_method``) is ``wsss.methods.contract``.
"""

from __future__ import annotations

from torch import nn

from wsss.core.config import Config, ModelConfig, true_masks_of
from wsss.core.errors import ConfigError
from wsss.methods.contract import TrainContext
from wsss.models.backbones import CNNBackbone, ViTBackbone, create_backbone


def split_backbone_params(backbone: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Backbone parameters without / with "norm" in their name (groups 0 and 1 of docs/methods/seco.md#optim)."""
    plain, norm = [], []
    for name, p in backbone.named_parameters():
        if not p.requires_grad:
            continue
        (norm if "norm" in name else plain).append(p)
    return plain, norm


def backbone_from_config(m: ModelConfig) -> ViTBackbone | CNNBackbone:
    return create_backbone(
        m.backbone,
        pretrained=m.pretrained,
        aux_layer=m.aux_layer,
        freeze_pos_embed=m.freeze_pos_embed,
        output_stride=m.output_stride,
        **m.backbone_kwargs,
    )


def attach_pseudo_labels(ctx: TrainContext, cfg: Config, method_name: str) -> None:
    """Make the training samples load their segmentation target: ``data.pseudo_dir``'s label map, or the user's
    own mask where ``data.true_masks`` has one (docs/own-photos.md#how-many-masks): ``ctx.true_masks``, as the engine
    resolved it."""
    d = cfg.data
    if not d.pseudo_dir and not true_masks_of(d):
        raise ConfigError(
            f"method {method_name} trains on pseudo labels: set data.pseudo_dir=DIR (a directory of <id>.png "
            "label maps, 255 = ignore, e.g. RUN/pseudo/train from `wsss pseudo`), data.true_masks=auto (the "
            "data set's own masks) or both"
        )
    ctx.train_data.set_target_dir(d.pseudo_dir, true_masks=ctx.true_masks, true_mask_weight=d.true_mask_weight)
