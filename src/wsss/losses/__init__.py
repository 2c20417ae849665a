"""Losses shared by the methods (methods.md 2.9)."""

from .ptc import label_to_aff_mask, ptc_loss
from .seg import balanced_seg_loss

__all__ = ["balanced_seg_loss", "label_to_aff_mask", "ptc_loss"]
