"""Shared CAM machinery: PAR refinement, CAM -> labels, multi-scale inference, dense CRF, PSA's affinity
walk, CLIP-ES's maps (which ExCEL builds on). A CAM piece that one method alone uses lives in its package
(``wsss.methods.<name>``).

See docs/methods/seco.md: #ms-cam, #cam2label, #par, #pseudo-label, #inference. The names are
imported lazily (PEP 562), so a CRF worker process that imports ``wsss.cam.crf`` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "PAR": "par",
    "IMAGENET_MEAN_255": "labels",
    "IMAGENET_STD_255": "labels",
    "box_mask": "labels",
    "cam_to_label": "labels",
    "cam_to_roi_mask": "labels",
    "denormalize_image": "labels",
    "label_to_aff_mask": "labels",
    "labelled_cam_to_label": "labels",
    "online_pseudo_label": "labels",
    "refine_cams_with_bkg": "labels",
    "scale_img_box": "labels",
    "labelled_classes": "multiscale",
    "minmax_normalize": "multiscale",
    "CamPasses": "multiscale",
    "multi_scale_logits": "multiscale",
    "resize_long": "multiscale",
    "resize_maps": "multiscale",
    "CRFParams": "crf",
    "CRFPool": "crf",
    "crf_label": "crf",
    "crf_label_two_levels": "crf",
    "crf_label_psa": "crf",
    "dense_crf": "crf",
}

__all__ = [
    "IMAGENET_MEAN_255",
    "IMAGENET_STD_255",
    "PAR",
    "CRFParams",
    "CRFPool",
    "CamPasses",
    "box_mask",
    "cam_to_label",
    "cam_to_roi_mask",
    "crf_label",
    "crf_label_two_levels",
    "crf_label_psa",
    "dense_crf",
    "denormalize_image",
    "label_to_aff_mask",
    "labelled_cam_to_label",
    "labelled_classes",
    "minmax_normalize",
    "multi_scale_logits",
    "online_pseudo_label",
    "refine_cams_with_bkg",
    "resize_long",
    "resize_maps",
    "scale_img_box",
]
assert set(__all__) == set(_EXPORTS)

if TYPE_CHECKING:
    from .crf import CRFParams, CRFPool, crf_label, crf_label_psa, crf_label_two_levels, dense_crf
    from .labels import (
        IMAGENET_MEAN_255,
        IMAGENET_STD_255,
        box_mask,
        cam_to_label,
        cam_to_roi_mask,
        denormalize_image,
        labelled_cam_to_label,
        online_pseudo_label,
        refine_cams_with_bkg,
        scale_img_box,
    )
    from .multiscale import (
        CamPasses,
        labelled_classes,
        minmax_normalize,
        multi_scale_logits,
        resize_long,
        resize_maps,
    )
    from .par import PAR


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
