"""Shared CAM machinery: PAR refinement, CAM -> labels, multi-scale inference, dense CRF.

See methods.md sections 2.5-2.8, 2.11 and 3.2.
"""

from .crf import CRFParams, CRFPool, crf_label, dense_crf
from .labels import (
    IMAGENET_MEAN_255,
    IMAGENET_STD_255,
    box_mask,
    cam_to_label,
    cam_to_roi_mask,
    denormalize_image,
    refine_cams_with_bkg,
    scale_img_box,
)
from .multiscale import minmax_normalize, multi_scale_cam, multi_scale_logits
from .par import PAR

__all__ = [
    "IMAGENET_MEAN_255",
    "IMAGENET_STD_255",
    "PAR",
    "CRFParams",
    "CRFPool",
    "box_mask",
    "cam_to_label",
    "cam_to_roi_mask",
    "crf_label",
    "dense_crf",
    "denormalize_image",
    "minmax_normalize",
    "multi_scale_cam",
    "multi_scale_logits",
    "refine_cams_with_bkg",
    "scale_img_box",
]
