"""Co-occurrence diagnostics: where a weakly supervised model leaks a class onto its context.

Image-level labels cannot tell a class from what habitually surrounds it (boat / water, train /
rails, horse / person), so WSSS predictions spread onto co-occurring background and onto
co-occurring objects. mIoU hides both; this meter measures them directly from the ground truth:

- **False-activation rate** of a foreground class ``c`` (FAR):
  ``(GT-background pixels predicted as c, in images labelled c) / (GT-background pixels of images
  labelled c)``. Only images that carry label ``c`` count, so this is the leak onto the context of
  ``c``, not a generic false-positive rate.
- **Pair confusion** for every ordered pair ``(a, b)`` of foreground classes that co-occur in an
  image's labels: ``(GT-a pixels predicted as b) / (GT-a pixels)``, both summed over the images
  labelled with both ``a`` and ``b``. The pairs seen are reported with their image counts, sorted
  by that share.

Pixels whose GT is ignored are not counted; a prediction equal to ``ignore_index`` (an undecided
pseudo-label pixel) counts as "not this class" (in denominators only). Counts of disjoint image
sets add, so meters merge by summing, like :class:`~wsss.evaluation.metrics.ConfusionMeter`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .metrics import _as_numpy, _hist, _nanmean

__all__ = ["CooccurrenceMeter"]


class CooccurrenceMeter:
    """Accumulates false-activation and pair-confusion counts over images.

    ``update(gt, pred, image_labels)`` takes one (H, W) GT map, the prediction of the same shape,
    and the image's (C-1,) multi-hot over the foreground classes (channel c is class c+1).
    """

    _FIELDS = ("far_hits", "far_pixels", "far_images", "pair_hits", "pair_pixels", "pair_images")

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        C = int(num_classes)
        if C < 2:
            raise ValueError(f"num_classes must be >= 2 (background + 1 class), got {num_classes}")
        self.num_classes = C
        self.ignore_index = ignore_index
        # All arrays are indexed by class id (0 = background, whose entries stay 0).
        self.far_hits = np.zeros(C, dtype=np.int64)
        self.far_pixels = np.zeros(C, dtype=np.int64)
        self.far_images = np.zeros(C, dtype=np.int64)
        self.pair_hits = np.zeros((C, C), dtype=np.int64)  # [a, b]: GT-a pixels predicted b
        self.pair_pixels = np.zeros((C, C), dtype=np.int64)  # [a, b]: GT-a pixels
        self.pair_images = np.zeros((C, C), dtype=np.int64)  # [a, b]: images labelled a and b
        self.n_images = 0

    def _present(self, image_labels: Any) -> np.ndarray:
        lab = np.asarray(_as_numpy(image_labels)).reshape(-1)
        if lab.shape[0] != self.num_classes - 1:
            raise ValueError(
                f"image labels must be a ({self.num_classes - 1},) multi-hot over the foreground "
                f"classes, got shape {lab.shape}"
            )
        present = np.zeros(self.num_classes, dtype=bool)
        present[1:] = lab > 0
        return present

    def update(self, gt: Any, pred: Any, image_labels: Any) -> CooccurrenceMeter:
        """Add one image."""
        ext = _hist(gt, pred, self.num_classes, self.ignore_index, pred_ignore_column=True)
        self.update_from_hist(ext, image_labels)
        return self

    def update_from_hist(self, hist: np.ndarray, image_labels: Any) -> None:
        """Add one image given its confusion matrix: ``(C, C)``, or ``(C, C+1)`` whose last column
        counts undecided predictions. Used by the evaluator to histogram each image only once."""
        C = self.num_classes
        if hist.ndim != 2 or hist.shape[0] != C or hist.shape[1] not in (C, C + 1):
            raise ValueError(f"per-image hist must be ({C}, {C}) or ({C}, {C + 1}), got {hist.shape}")
        present = self._present(image_labels)
        gt_pixels = hist.sum(axis=1)  # includes undecided predictions
        self.far_hits[present] += hist[0, :C][present]
        self.far_pixels[present] += gt_pixels[0]
        self.far_images[present] += 1
        pair = np.outer(present, present)
        np.fill_diagonal(pair, False)
        if pair.any():
            self.pair_hits += np.where(pair, hist[:, :C], 0)
            self.pair_pixels += np.where(pair, gt_pixels[:, None], 0)
            self.pair_images += pair
        self.n_images += 1

    def reset(self) -> None:
        for name in self._FIELDS:
            getattr(self, name)[...] = 0
        self.n_images = 0

    def _check_compatible(self, other: CooccurrenceMeter) -> None:
        if not isinstance(other, CooccurrenceMeter):
            raise TypeError(f"cannot merge CooccurrenceMeter with {type(other).__name__}")
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge meters of {self.num_classes} and {other.num_classes} classes")

    def merge(self, other: CooccurrenceMeter) -> CooccurrenceMeter:
        """Add ``other``'s counts into this meter (in place) and return it."""
        self._check_compatible(other)
        for name in self._FIELDS:
            getattr(self, name)[...] += getattr(other, name)
        self.n_images += other.n_images
        return self

    def __add__(self, other: CooccurrenceMeter) -> CooccurrenceMeter:
        self._check_compatible(other)
        out = CooccurrenceMeter(self.num_classes, self.ignore_index)
        return out.merge(self).merge(other)

    def __iadd__(self, other: CooccurrenceMeter) -> CooccurrenceMeter:
        return self.merge(other)

    def state(self) -> dict[str, np.ndarray]:
        """The raw counts, one array per field (e.g. to all-reduce across ranks)."""
        return {name: getattr(self, name).copy() for name in self._FIELDS} | {"n_images": np.int64(self.n_images)}

    def far(self) -> np.ndarray:
        """(C,) false-activation rate per class id; nan for background and for classes whose
        labelled images hold no GT-background pixel."""
        out = np.full(self.num_classes, np.nan)
        seen = self.far_pixels > 0
        seen[0] = False
        out[seen] = self.far_hits[seen] / self.far_pixels[seen]
        return out

    def result(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """The diagnostics as a dict.

        - ``far`` (C,) float64 per class id (nan for background / unseen classes), ``far_images``
          (C,) images labelled with each class, ``mean_far`` the mean FAR over the classes seen.
        - ``pairs``: one dict per ordered pair seen (``gt``, ``pred`` names, ``gt_id``,
          ``pred_id``, ``share``, ``confused_pixels``, ``gt_pixels``, ``images``), sorted by
          ``share`` (largest first; pairs without any GT-a pixel, share nan, last).
        """
        C = self.num_classes
        if class_names is None:
            class_names = [str(i) for i in range(C)]
        if len(class_names) != C:
            raise ValueError(f"{len(class_names)} class names for {C} classes")
        far = self.far()
        pairs = []
        for a, b in zip(*np.nonzero(self.pair_images)):
            hits, pix = int(self.pair_hits[a, b]), int(self.pair_pixels[a, b])
            pairs.append(
                {
                    "gt": class_names[a],
                    "pred": class_names[b],
                    "gt_id": int(a),
                    "pred_id": int(b),
                    "share": hits / pix if pix else float("nan"),
                    "confused_pixels": hits,
                    "gt_pixels": pix,
                    "images": int(self.pair_images[a, b]),
                }
            )
        pairs.sort(key=lambda p: (np.isnan(p["share"]), -np.nan_to_num(p["share"]), -p["images"]))
        return {
            "far": far,
            "far_images": self.far_images.copy(),
            "mean_far": _nanmean(far),
            "pairs": pairs,
            "n_images": self.n_images,
        }

    def __repr__(self) -> str:
        return f"CooccurrenceMeter(num_classes={self.num_classes}, images={self.n_images})"
