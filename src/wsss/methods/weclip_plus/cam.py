"""WeCLIP+'s online pseudo labels (docs/methods/weclip_plus.md#cam; official ``clip/clip_tool.py``
``perform_single_voc_cam`` and ``WeCLIP_Plus/model_attn_aff_voc.py``).

Per image: Grad-CAM of the labelled classes' text on the last CLIP block (``cam.clip_es.gradcam_of_labels``, the
CLIP-ES Grad-CAM), each map times the decoder's probability of its class, refined by the transition matrix of an
affinity: the CLIP attention maps of the last ``layers`` blocks that are closer to the decoder's ``attn_pred``
than the mean, averaged, times ``attn_pred`` (ExCEL's layer selection, ``cam.clip_refine``), normalised as
CLIP-ES's class-aware affinity (``cam.clip_es.caa_transition``). The maps are then scaled to the image, given a
background ``1 - max``, refined by PAR and their argmax taken (``cam.clip_refine``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from wsss.cam.clip_es import box_mask, caa_refine, caa_transition, gradcam_of_labels, scoremap_boxes
from wsss.cam.clip_refine import attention_affinity


@dataclass
class ImageCams:
    """One image's refined maps and what made them (the recorded intermediates)."""

    refined: torch.Tensor  # (k, h, w) float32, before scaling
    gradcam: np.ndarray  # (k, h, w) float32 in [0, 1]
    probs: np.ndarray  # (1, k_img + n_bg) the softmax Grad-CAM differentiates
    trans: torch.Tensor  # (hw, hw) transition matrix
    extra: dict[str, Any] = field(default_factory=dict)


def refined_cams(
    clip: nn.Module,
    cam_tokens: torch.Tensor,
    text: torch.Tensor,
    n_labels: int,
    grid: tuple[int, int],
    encoder_attn: torch.Tensor,
    seg_attn: torch.Tensor,
    seg_prob: torch.Tensor,
    classes: torch.Tensor,
    *,
    layers: int = 6,
    box_threshold: float = 0.4,
    box_masked: bool = False,
    out_proj_fp16: bool = True,
) -> ImageCams:
    """The refined CAMs of one image's ``n_labels`` classes (0-based foreground ``classes``).

    ``cam_tokens`` (1, 1 + hw, D): the tokens the last block reads; ``text`` (n_labels + n_bg, E): the labelled
    classes' text first, then every background text; ``encoder_attn`` (L-1, 1 + hw, 1 + hw): the encoder blocks'
    attention; ``seg_attn`` (hw, hw): the decoder's ``attn_pred``; ``seg_prob`` (C, h, w): the decoder's class
    probabilities. ``box_masked``: the transition matrix also keeps only the columns inside the boxes of each
    Grad-CAM at ``box_threshold`` of its maximum; the official code computes those boxes and then replaces the
    mask by ones when the decoder's probabilities weight the CAM (Q5), so False is the official behaviour.
    ``out_proj_fp16`` (Q1): the last block's attention output projection in float16."""
    cam = gradcam_of_labels(clip, cam_tokens, text, n_labels, grid, out_proj_fp16)
    attn = torch.cat([encoder_attn, torch.from_numpy(cam["attn_last"]).to(encoder_attn)], dim=0)
    affinity = attention_affinity(attn, layers, seg_attn)
    trans = caa_transition(affinity.detach())[-1].float()
    out = []
    for j in range(n_labels):
        gray = cam["cam"][j]
        weighted = gray * seg_prob[int(classes[j]) + 1].detach().float().cpu().numpy()
        t = trans
        if box_masked:
            boxes = scoremap_boxes(gray, box_threshold)
            t = trans * torch.from_numpy(box_mask(boxes, grid)).to(trans.device).view(1, -1)
        out.append(torch.from_numpy(caa_refine(t, weighted.astype(np.float32))))
    h, w = grid
    refined = torch.stack(out) if out else torch.zeros(0, h, w)
    return ImageCams(refined, cam["cam"], cam["probs"], trans, {"affinity": affinity, "attn": attn, **cam})
