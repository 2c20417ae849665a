"""PMM's pretended under-fitting of a per-pixel loss (``pretended_underfitting``): the DeepLab stage's
``options.pus`` (docs/methods/deeplab.md)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

PUS_MODES = ("clamp", "pow", "ignore")


def pretended_underfitting(
    pixel_loss: torch.Tensor, labelled: torch.Tensor, mode: str, beta: float, k: float
) -> torch.Tensor:
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
