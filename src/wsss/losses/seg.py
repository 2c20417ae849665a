"""Segmentation losses: SeCo's balanced cross entropy on pseudo labels (docs/methods/seco.md#seg-loss; golden
``seg_energy.npz``), which the CAM baseline, SeCo and ExCEL train their segmentation heads with; and the CAMs'
pixel loss on a user's own masks (``cam_mask_loss``, docs/own-photos.md#how-many-masks); and the generalized cross
entropy that tolerates noisy labels (``generalized_ce_pixels``, docs/methods/deeplab.md#noisy-labels)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _count_plus_eps(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``count + 1e-6`` computed in float32 like the official code, returned in ``dtype``."""
    return (mask.sum().to(torch.float32) + 1e-6).to(dtype)


def balanced_seg_loss(logits: torch.Tensor, label: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Background/foreground-balanced cross-entropy (docs/methods/seco.md#seg-loss, SeCo ``get_seg_loss``).

    ``0.5 * (CE_sum(bg pixels) / (n_bg + 1e-6) + CE_sum(fg pixels) / (n_fg + 1e-6))`` where bg pixels
    have label 0, fg pixels any other label except ``ignore_index``, and ignored pixels count in
    neither term. An empty term is 0 (0 / 1e-6), so a label without foreground gives half the bg
    mean CE.

    As in the official code, each ``count + 1e-6`` is formed in float32 (there, a long count plus a
    Python float gives torch's default dtype), so for counts above ~16 the 1e-6 vanishes. The sums
    stay in the logits' dtype. This matches the golden f64 values to ~1e-16 instead of ~1e-9.

    Args:
        logits: (B, C, H, W) raw scores. They must already have the label's spatial size: the
            caller upsamples the decoder output (ToCo/SeCo: bilinear, align_corners=False).
        label: (B, H, W) class ids in [0, C) or ``ignore_index`` (any integer or float dtype).

    Returns:
        A 0-d tensor in the logits' dtype.
    """
    if (
        logits.dim() != 4
        or label.dim() != 3
        or logits.shape[0] != label.shape[0]
        or logits.shape[2:] != label.shape[1:]
    ):
        raise ValueError(
            f"balanced_seg_loss expects logits (B,C,H,W) and label (B,H,W) of the same size, got "
            f"{tuple(logits.shape)} and {tuple(label.shape)} (upsample the logits first)"
        )
    label = label.to(device=logits.device, dtype=torch.long)
    ce = F.cross_entropy(logits, label, ignore_index=ignore_index, reduction="none")  # 0 where ignored
    bg = label == 0
    fg = (label != 0) & (label != ignore_index)
    zero = ce.new_zeros(())
    bg_loss = torch.where(bg, ce, zero).sum() / _count_plus_eps(bg, ce.dtype)
    fg_loss = torch.where(fg, ce, zero).sum() / _count_plus_eps(fg, ce.dtype)
    return 0.5 * (bg_loss + fg_loss)


def cam_mask_loss(
    cam: torch.Tensor, target: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, ignore_index: int = 255
) -> torch.Tensor:
    """The classifier's CAMs taught the pixels of the photos that have a true mask (``data.true_masks`` on a
    classifier's training, docs/own-photos.md#how-many-masks).

    Each labelled class's CAM, upsampled to the mask (bilinear, as the CAMs are for the pseudo labels), is a
    per-pixel logit of "this pixel is the class": binary cross entropy against ``target == c`` over the mask's
    labelled pixels. Only the photo's labelled classes are taught, because the pseudo labels read those alone
    (``labelled_classes``); an absent class is the classification loss's. The loss is each photo's mean over its
    (pixel, labelled class) pairs, averaged over the photos with ``weight`` (0: no mask; ``data.true_mask_weight``
    otherwise); a batch without a masked photo gives 0, still attached to ``cam``.

    Args:
        cam: (B, C-1, h, w) raw class maps (``Method.cam_maps``, before any ReLU).
        target: (B, H, W) class ids, 0 the background, class c (1..C-1) the CAM channel c - 1, ``ignore_index``.
        labels: (B, C-1) the image labels (multi-hot).
        weight: (B,) each photo's weight.
    """
    if cam.dim() != 4 or target.dim() != 3 or labels.shape != cam.shape[:2] or weight.shape != cam.shape[:1]:
        raise ValueError(
            f"cam_mask_loss expects cam (B,C-1,h,w), target (B,H,W), labels (B,C-1), weight (B,), got "
            f"{tuple(cam.shape)}, {tuple(target.shape)}, {tuple(labels.shape)}, {tuple(weight.shape)}"
        )
    logits = F.interpolate(cam.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
    target = target.to(device=cam.device, dtype=torch.long)
    classes = torch.arange(1, cam.shape[1] + 1, device=cam.device).view(1, -1, 1, 1)
    truth = (target.unsqueeze(1) == classes).float()
    valid = ((target != ignore_index).unsqueeze(1) & (labels > 0.5).to(cam.device)[..., None, None]).float()
    bce = F.binary_cross_entropy_with_logits(logits, truth, reduction="none")
    count = valid.sum((1, 2, 3))
    per_photo = (bce * valid).sum((1, 2, 3)) / count.clamp(min=1)
    w = weight.to(device=cam.device, dtype=per_photo.dtype) * (count > 0)
    # no photo with a weight: 0 / 1e-12 = 0, still attached to ``cam``, without reading the sum on the host (a
    # CUDA sync per step)
    return (w * per_photo).sum() / w.sum().clamp(min=1e-12)


def generalized_ce_pixels(
    logits: torch.Tensor, target: torch.Tensor, q: float, ignore_index: int = 255
) -> torch.Tensor:
    """Per-pixel generalized cross entropy (Zhang & Sabuncu, NeurIPS 2018): ``(1 - p_y ** q) / q`` of the softmax
    probability ``p_y`` of each pixel's label, 0 where it is ``ignore_index``. ``q`` -> 0 is the cross entropy,
    ``q`` = 1 the mean absolute error, which a wrong label pulls on less: its gradient shrinks with ``p_y``.

    Args:
        logits: (B, C, H, W) raw scores at the label's size.
        target: (B, H, W) class ids in [0, C) or ``ignore_index``.
        q: in (0, 1].
    """
    labelled = target != ignore_index
    index = target.masked_fill(~labelled, 0).long()[:, None]
    p = logits.to(torch.promote_types(logits.dtype, torch.float32)).softmax(1).gather(1, index)[:, 0]
    return torch.where(labelled, (1 - p.clamp_min(1e-12) ** q) / q, torch.zeros_like(p))
