"""SeCo's extra training views, ``SeCoViews``: the ``extra_views`` hook of ``ClsTrainDataset`` (a callable
returning a dict of tensors; docs/methods/seco.md#data, steps 6a and 6b):

- ``global_view``: SeCo's ``w_image`` = RandomResizedCrop(size, scale [0.4, 1], bicubic) of the
  *original* image + flip / colour jitter (p 0.8) / grayscale (p 0.2) + Gaussian blur (p 0.1) +
  solarisation (p 0.2) + normalisation.
- ``local_view``: SeCo's ``s_image`` = the training crop + flip / colour jitter / grayscale + blur
  (p 0.5) + normalisation. The local patches of the momentum teacher are cut from it. Its random
  flip is not tracked (the official behaviour, ``flip=True``): the teacher's patch then mirrors
  the student's half the time. ``flip=False`` keeps it aligned with the CAM tags.

Every random choice comes from the sample's ``rng`` (reproducible and resumable).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from wsss.data.transforms import normalize, photometric


def random_resized_crop(
    img: np.ndarray,
    size: int,
    *,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.4, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> np.ndarray:
    """torchvision's RandomResizedCrop semantics (10 tries, then a centre crop), bicubic."""
    h, w = img.shape[:2]
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            y = int(rng.integers(0, h - ch + 1))
            x = int(rng.integers(0, w - cw + 1))
            break
    else:  # centre crop at the closest allowed ratio
        in_ratio = w / h
        if in_ratio < ratio[0]:
            cw, ch = w, int(round(w / ratio[0]))
        elif in_ratio > ratio[1]:
            ch, cw = h, int(round(h * ratio[1]))
        else:
            cw, ch = w, h
        y, x = (h - ch) // 2, (w - cw) // 2
    crop = Image.fromarray(img[y : y + ch, x : x + cw])
    return np.asarray(crop.resize((size, size), Image.BICUBIC))


@dataclass
class SeCoViews:
    """The ``extra_views`` hook of ``ClsTrainDataset`` for SeCo: adds ``w_image`` and ``s_image``."""

    global_size: int
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_flip: bool = True  # official: the local view flips independently of the CAM tags

    def __call__(self, image: np.ndarray, crop: np.ndarray, *, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        g = random_resized_crop(image, self.global_size, rng=rng, scale=self.global_scale)
        w_image = photometric(g, rng, flip=True, blur_p=0.1, solarize_p=0.2)
        s_image = photometric(crop, rng, flip=self.local_flip, blur_p=0.5, solarize_p=0.0)
        return {"w_image": normalize(w_image), "s_image": normalize(s_image)}
