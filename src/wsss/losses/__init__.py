"""Losses that several methods share: the balanced segmentation cross entropy of the CAM baseline, SeCo and
ExCEL (docs/methods/seco.md#seg-loss), and the CAMs' pixel loss on a user's own masks (every classifier's).
A loss that one method alone uses lives in its package (``wsss.methods.seco``: PTC, LIL / LIG, the dense
energy; ``wsss.methods.rca``: the region contrast)."""

from .seg import balanced_seg_loss, cam_mask_loss

__all__ = ["balanced_seg_loss", "cam_mask_loss"]
