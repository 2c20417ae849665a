"""The DeepLab stage's extra training views, ``DeepLabViews`` (docs/methods/deeplab.md#consistency): the
``extra_views`` hook of ``ClsTrainDataset`` that gives each training sample a photo the stage does not learn
from, in two views of the same geometry, for the consistency term of its mean teacher.

Every random choice comes from the sample's ``rng`` (reproducible and resumable): which photo, its crop, its
photometric change. The photos' masks are never read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from wsss.core.errors import DataError
from wsss.data.transforms import TrainAugment, normalize, photometric
from wsss.data.voc import VOCDataset

WEAK, STRONG, BOX = "unlabelled_weak", "unlabelled_strong", "unlabelled_box"


class DeepLabViews:
    """Adds ``unlabelled_weak`` (3, S, S): a photo of ``splits`` drawn at random, scaled, flipped and cropped as
    the training crop is (``augment``, the weak view: geometry only); ``unlabelled_strong``: the same crop after
    :func:`~wsss.data.transforms.photometric` (no flip: each pixel stays where it was), and ``unlabelled_box``
    (4,) ``[h0, h1, w0, w1]``, the crop's region that is photo, not padding."""

    def __init__(self, root: str, splits: Sequence[str], augment: TrainAugment) -> None:
        self.photos: list[tuple[VOCDataset, str]] = []
        seen: set[str] = set()
        for split in splits:
            ds = VOCDataset(root, split)  # the photos' list only: no mask is looked up
            self.photos += [(ds, i) for i in ds.ids if i not in seen]
            seen.update(ds.ids)
        if not self.photos:
            raise DataError(f"{root}: the splits {', '.join(splits)} of options.consistency_splits hold no photo")
        self.augment = augment

    def __call__(self, image: np.ndarray, crop: np.ndarray, *, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        ds, id = self.photos[int(rng.integers(len(self.photos)))]
        weak = self.augment(ds.load_image(id), rng)
        strong = photometric(weak["crop"], rng, flip=False, blur_p=0.5, solarize_p=0.0)
        return {WEAK: weak["image"], STRONG: normalize(strong), BOX: torch.as_tensor(weak["img_box"])}
