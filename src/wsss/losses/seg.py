"""Segmentation losses on pseudo labels: SeCo's balanced cross entropy (docs/methods/seco.md#seg-loss; golden
``seg_energy.npz``) and PMM's pretended under-fitting of a per-pixel loss (``pretended_underfitting``)."""

from __future__ import annotations

from dataclasses import dataclass

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


PUS_MODES = ("clamp", "pow", "ignore")


def pretended_underfitting(pixel_loss: torch.Tensor, labelled: torch.Tensor, mode: str, beta: float,
                           k: float) -> torch.Tensor:  # fmt: skip
    """PMM's pretended under-fitting strategy (Li et al., "Pseudo-mask Matters in Weakly-supervised Semantic
    Segmentation", ICCV 2021; its official mmseg ``cross_entropy``): once the network fits its labels on average, the
    pixels it still contradicts most, a label's likely errors, stop pulling it.

    When the mean of ``pixel_loss`` over the ``labelled`` pixels is below ``beta`` (else the loss is returned as
    it is), each pixel's loss becomes: ``clamp``, ``min(loss, k)`` (a pixel above ``k`` gives no gradient; PMM's
    configs: k = beta = 0.5 on VOC, 0.8 on COCO); ``pow``, ``(loss + 1e-9) ** k``; ``ignore``, the loss where it is
    at most ``k``, else 0. The official trigger averages over every pixel, the ignored ones counting 0 (mmseg's
    reduction); here over the labelled ones, the mean the loss reports.

    Args:
        pixel_loss: per-pixel losses, any shape (``F.cross_entropy(..., reduction="none")``).
        labelled: a boolean mask of the same shape, False where the label is ignored.
    """
    if mode not in PUS_MODES:
        raise ValueError(f"pretended under-fitting mode must be one of {PUS_MODES}, got {mode!r}")
    n = labelled.sum()
    if n == 0 or float(torch.where(labelled, pixel_loss, 0.0).sum() / n) >= beta:
        return pixel_loss
    if mode == "clamp":
        return pixel_loss.clamp(max=k)  # PMM: clamp(loss, 0, k); a cross entropy is never below 0
    if mode == "pow":
        return (pixel_loss + 1e-9).pow(k)
    return pixel_loss * (pixel_loss <= k).to(pixel_loss.dtype)


@dataclass(frozen=True)
class PretendedUnderfitting:
    """``pretended_underfitting`` with its settings (the DeepLab stage's ``options.pus``, ``pus_beta``, ``pus_k``)."""

    mode: str
    beta: float
    k: float

    def __call__(self, pixel_loss: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
        return pretended_underfitting(pixel_loss, labelled, self.mode, self.beta, self.k)
