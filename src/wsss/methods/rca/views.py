"""RCA's extra training view, ``RCAViews`` (docs/methods/rca.md#training): the ``extra_views`` hook of
``ClsTrainDataset``: a box of the original image squashed to a square, maybe flipped, colour-jittered; with the
box and flip that map its attention back to the image.

Every random choice comes from the sample's ``rng`` (reproducible and resumable).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from wsss.data.transforms import color_jitter, normalize, resize_to


class RCAViews:
    """The ``extra_views`` hook of ``ClsTrainDataset`` for RCA: its training input (docs/methods/rca.md#training), a box
    of the original image (the whole image by default) squashed to a ``size`` square, maybe flipped,
    colour-jittered, normalised.

    Returns ``rca_image`` (3, S, S), ``rca_box`` (4,) float32 ``[y0, y1, x0, x1]`` as fractions of the
    original image, ``rca_flip`` (bool): what the attention accumulation needs to map maps back.
    """

    def __init__(
        self,
        size: int,
        crop_scale: tuple[float, float] = (1.0, 1.0),
        hflip: bool = False,
        jitter: tuple[float, float, float, float] | None = (0.3, 0.3, 0.3, 0.1),
    ):
        self.size, self.crop_scale, self.hflip, self.jitter = int(size), crop_scale, hflip, jitter

    def __call__(self, image: np.ndarray, crop: np.ndarray, *, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        h, w = image.shape[:2]
        y0, y1, x0, x1 = 0, h, 0, w
        lo, hi = self.crop_scale
        if lo < 1.0 or hi < 1.0:
            side = math.sqrt(float(rng.uniform(lo, hi)))
            ch, cw = max(1, round(side * h)), max(1, round(side * w))
            y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            y1, x1 = y0 + ch, x0 + cw
        img = resize_to(image[y0:y1, x0:x1], self.size)
        flip = bool(self.hflip and rng.random() < 0.5)
        if flip:
            img = np.ascontiguousarray(img[:, ::-1])
        if self.jitter is not None and any(self.jitter):
            img = color_jitter(img, *self.jitter, rng=rng)
        box = np.asarray([y0 / h, y1 / h, x0 / w, x1 / w], dtype=np.float32)
        return {"rca_image": normalize(img), "rca_box": torch.from_numpy(box), "rca_flip": torch.tensor(flip)}
