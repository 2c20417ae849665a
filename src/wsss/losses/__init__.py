"""Losses shared by the methods (docs/methods/seco.md: #ptc, #seg-loss, #reg-loss, #lil, #lig)."""

from .contrast import lig_loss, lil_loss
from .energy import dense_energy_loss, energy_loss_from_logits
from .ptc import label_to_aff_mask, ptc_loss
from .seg import balanced_seg_loss

__all__ = [
    "balanced_seg_loss",
    "dense_energy_loss",
    "energy_loss_from_logits",
    "label_to_aff_mask",
    "lig_loss",
    "lil_loss",
    "ptc_loss",
]
