"""What the CLIP methods that refine CAMs by attention and train a decoder on them share (ExCEL, WeCLIP+;
docs/methods/excel.md#refinement, #par, #losses; docs/methods/weclip_plus.md#cam, #training-step): the layer
selection of CLIP's attention against the decoder's affinity, the maps scaled to the image with a ``1 - max``
background and PAR, and the affinity target and loss of the decoder's attention."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from wsss.cam.clip_es import scale_cam
from wsss.cam.labels import label_to_aff_mask
from wsss.cam.par import PAR


def layer_selection(maps: torch.Tensor, seg_attn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which attention layers (L, N, N) the trained route keeps: (each layer's summed difference to the decoder's
    attention ``seg_attn`` (N, N), their mean, the mask (L,) of the layers at most that mean)."""
    diff = (seg_attn - maps).flatten(1).sum(dim=1)
    threshold = diff.mean()
    return diff, threshold, (diff <= threshold).to(maps.dtype)


def attention_affinity(attn: torch.Tensor, layers: int = 6, seg_attn: torch.Tensor | None = None) -> torch.Tensor:
    """The patch affinity (N, N) of ``refine_cams_with_aff`` from one image's attention (L, 1+N, 1+N): the mean of
    the last ``layers`` maps without CLS, or, with the decoder's attention ``seg_attn`` (N, N) (the trained route
    from LVC on), the mean of the layers :func:`layer_selection` keeps, times ``seg_attn``."""
    maps = attn[:, 1:, 1:][-layers:]
    if seg_attn is None:
        return maps.mean(dim=0)
    keep = layer_selection(maps, seg_attn)[2].view(-1, 1, 1)
    return (keep * maps).sum(dim=0) / (keep.sum() + 1e-5) * seg_attn


def scaled_maps(refined: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``generate_cam_label``: each refined map (k, h, w) min-max scaled and resized (cv2, bilinear) to ``size``
    (H, W) -> (k, H, W) float32 in [0, 1]."""
    h, w = size
    maps = [scale_cam(m, (w, h)) for m in refined.detach().cpu().numpy().astype(np.float32)]
    return torch.from_numpy(np.stack(maps)) if maps else torch.zeros(0, h, w)


def with_background(maps: torch.Tensor) -> torch.Tensor:
    """(1 + k, H, W): the background ``1 - max`` (power 1, no threshold) before the maps (k, H, W)."""
    maps = maps.float()
    bg = 1 - maps.amax(dim=0, keepdim=True) if len(maps) else torch.ones(1, *maps.shape[-2:], device=maps.device)
    return torch.cat([bg, maps])


def par_refine(scores: torch.Tensor, guide: torch.Tensor, par: PAR) -> torch.Tensor:
    """PAR of the scores (K, H, W) on ``guide`` (3, h', w'), which ExCEL's PAR first resizes (bilinear,
    align_corners) to (H, W) (the shared PAR resizes the scores to the image instead) -> (K, H, W)."""
    h, w = scores.shape[-2:]
    image = guide.float()[None].to(scores.device)
    if tuple(image.shape[-2:]) != (h, w):
        image = F.interpolate(image, size=(h, w), mode="bilinear", align_corners=True)
    with torch.no_grad():
        return par(image, scores.float()[None])[0]


def radius_mask(h: int, w: int, radius: int) -> torch.Tensor:
    """``get_mask_by_radius``: (hw, hw) uint8, 1 where two tokens of an (h, w) grid are within ``radius`` in both
    rows and columns (a square window; the diagonal included)."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    near = ((ys[:, None] - ys[None]).abs() <= radius) & ((xs[:, None] - xs[None]).abs() <= radius)
    return near.to(torch.uint8)


def affinity_label(
    label: torch.Tensor,
    grid: tuple[int, int],
    mask: torch.Tensor,
    *,
    ignore_diag: bool = False,
    ignore_index: int = 255,
) -> torch.Tensor:
    """``cams_to_affinity_label`` (the second, effective definition): labels (B, H, W) nearest-downsampled to
    ``grid``, 1 for a pair of tokens with the same label, 0 otherwise; ``ignore_index`` outside ``mask`` (hw, hw)
    and for pairs with an ignored token. ``ignore_diag``: the diagonal ignored too (the first definition; the
    effective one keeps it, Q20). (B, hw, hw) int64."""
    small = F.interpolate(label[:, None].float(), size=grid, mode="nearest")[:, 0].long()
    aff = label_to_aff_mask(small, ignore_index, ignore_diagonal=ignore_diag)
    aff = aff.masked_fill(mask.to(aff.device)[None] == 0, ignore_index)
    return aff


def attention_affinity_loss(attn_pred: torch.Tensor, aff_label: torch.Tensor) -> torch.Tensor:
    """``get_aff_loss``: ``0.5 sum_pos(1 - p) / (n_pos + 1) + 0.5 sum_neg p / (n_neg + 1)`` of the decoder's
    attention ``attn_pred`` (B, hw, hw) in [0, 1] against :func:`affinity_label` (1 positive, 0 negative)."""
    pos = (aff_label == 1).to(attn_pred.dtype)
    neg = (aff_label == 0).to(attn_pred.dtype)
    pos_loss = (pos * (1 - attn_pred)).sum() / (pos.sum() + 1)
    neg_loss = (neg * attn_pred).sum() / (neg.sum() + 1)
    return 0.5 * pos_loss + 0.5 * neg_loss
