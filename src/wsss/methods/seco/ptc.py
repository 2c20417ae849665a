"""Patch token contrast, PTC (docs/methods/seco.md#ptc; golden ``ptc.npz``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ptc_loss(fmap: torch.Tensor, aff_mask: torch.Tensor) -> torch.Tensor:
    """Masked patch-token contrast loss (docs/methods/seco.md#ptc, ``get_masked_ptc_loss``).

    With ``cos`` the **absolute** cosine similarity between the L2-normalised tokens
    (``F.normalize`` eps 1e-8) of ``fmap`` (B, D, h, w), and ``aff_mask`` (B, hw, hw) from
    :func:`wsss.cam.label_to_aff_mask` (1 positive, 0 negative, anything else ignored):
    ``0.5 * (1 - sum_pos cos / (n_pos + 1)) + 0.5 * sum_neg cos / (n_neg + 1)``, the sums and counts
    running over the whole batch. Returns a 0-d tensor.
    """
    b, d = fmap.shape[:2]
    x = F.normalize(fmap.reshape(b, d, -1), p=2, dim=1, eps=1e-8)
    cos = torch.abs(torch.bmm(x.transpose(1, 2), x))  # (B, hw, hw)
    if aff_mask.shape != cos.shape:
        raise ValueError(f"ptc_loss: aff_mask is {tuple(aff_mask.shape)} but the token pairs are {tuple(cos.shape)}")
    pos = aff_mask == 1
    neg = aff_mask == 0
    zero = cos.new_zeros(())
    pos_term = torch.where(pos, cos, zero).sum() / (pos.sum().to(cos.dtype) + 1)
    neg_term = torch.where(neg, cos, zero).sum() / (neg.sum().to(cos.dtype) + 1)
    return 0.5 * (1 - pos_term) + 0.5 * neg_term
