"""Image / mask transforms for training and inference (docs/methods/seco.md#data), numpy + PIL based.

Every random transform takes an explicit ``rng: np.random.Generator``: nothing touches a global
random state, so a sample's augmentation is a pure function of its generator.

Images are (H, W, 3) uint8 arrays, masks (H, W) uint8 class-index maps (255 = ignore).

Training pipeline (``TrainAugment``, ToCo/SeCo ``VOC12ClsDataset`` stage train):
1. ``random_scale``: ratio ~ U(0.5, 2.0) of the whole image, PIL bilinear (nearest for masks);
2. ``random_hflip`` with p = 0.5;
3. (optional, off by default) ``color_jitter`` (ToCo's global view; SeCo's main input has none);
4. ``random_crop``: pad to at least the crop size with 0 (black) at a random offset, take a random
   window, return ``img_box = [h0, h1, w0, w1]``, the valid (non-pad) region of the crop;
5. ``normalize``: ToTensor + ImageNet mean / std.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_MEAN = np.asarray(IMAGENET_MEAN, dtype=np.float32)
_STD = np.asarray(IMAGENET_STD, dtype=np.float32)

_INTERP = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def _check_image(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {img.dtype} {img.shape}")
    return img


def _check_mask(mask: np.ndarray | None, img: np.ndarray) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.shape != img.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {img.shape[:2]}")
    return mask


# --------------------------------------------------------------------------------------------------
# resizing
# --------------------------------------------------------------------------------------------------


def resize_to(img: np.ndarray, size: int | Sequence[int], *, interpolation: str = "bilinear") -> np.ndarray:
    """Resize an image (H, W, 3) or a mask (H, W) to ``size`` = (h, w) (or an int for a square).

    Images use PIL ``interpolation`` (bilinear by default); pass ``interpolation="nearest"`` for
    masks / label maps.
    """
    h, w = _pair(size)
    if h < 1 or w < 1:
        raise ValueError(f"target size must be positive, got {(h, w)}")
    arr = np.asarray(img)
    if arr.shape[:2] == (h, w):
        return arr.copy()
    if interpolation not in _INTERP:
        raise ValueError(f"unknown interpolation {interpolation!r}; use one of {sorted(_INTERP)}")
    out = Image.fromarray(arr).resize((w, h), _INTERP[interpolation])
    return np.asarray(out, dtype=arr.dtype).copy()


def resize_long_side(img: np.ndarray, long_side: int, *, interpolation: str = "bilinear") -> np.ndarray:
    """Resize keeping the aspect ratio so that max(H, W) == ``long_side`` (``infer.max_side``)."""
    h, w = np.asarray(img).shape[:2]
    scale = long_side / max(h, w)
    return resize_to(img, (max(1, round(h * scale)), max(1, round(w * scale))), interpolation=interpolation)


def fit_side(img: np.ndarray, max_side: int | None, *, interpolation: str = "bilinear") -> np.ndarray:
    """``img`` (an image, a map or a label map) shrunk to a longest side of ``max_side`` if it is longer (aspect
    kept), else as it is: the cap of what an inference path computes on (``infer.max_side``: the network's
    input in :func:`prepare_image`, everything ``wsss viz`` draws), so that its cost is bounded whatever the
    photo's size."""
    if max_side is None or max(np.asarray(img).shape[:2]) <= max_side:
        return img
    return resize_long_side(img, max_side, interpolation=interpolation)


# --------------------------------------------------------------------------------------------------
# random geometric transforms
# --------------------------------------------------------------------------------------------------


def random_scale(
    img: np.ndarray,
    mask: np.ndarray | None = None,
    scale_range: tuple[float, float] = (0.5, 2.0),
    *,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Rescale the whole image by a ratio ~ U(scale_range): PIL bilinear for the image, nearest
    for the mask. Returns ``(img, mask)`` (mask None if not given)."""
    img = _check_image(img)
    mask = _check_mask(mask, img)
    lo, hi = scale_range
    ratio = float(rng.uniform(lo, hi))
    h, w = img.shape[:2]
    size = (max(1, round(h * ratio)), max(1, round(w * ratio)))
    out = resize_to(img, size, interpolation="bilinear")
    out_mask = None if mask is None else resize_to(mask, size, interpolation="nearest")
    return out, out_mask


def random_hflip(
    img: np.ndarray,
    mask: np.ndarray | None = None,
    p: float = 0.5,
    *,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Mirror image (and mask) left-right with probability ``p``. Returns ``(img, mask)``."""
    flip = bool(rng.random() < p)
    if not flip:
        return img, mask
    img = np.ascontiguousarray(np.asarray(img)[:, ::-1])
    if mask is not None:
        mask = np.ascontiguousarray(np.asarray(mask)[:, ::-1])
    return img, mask


def random_crop(
    img: np.ndarray,
    mask: np.ndarray | None = None,
    crop_size: int | Sequence[int] = 448,
    *,
    rng: np.random.Generator,
    pad_value: int = 0,
    mask_pad: int = 255,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """ToCo's random crop: pad to at least ``crop_size`` (with ``pad_value``, the mask with
    ``mask_pad``) at a random offset, then take a random ``crop_size`` window.

    Returns ``(crop, mask_crop, img_box)`` where ``img_box = [h0, h1, w0, w1]`` (int64,
    end-exclusive) is the region of the crop covered by the image (not padding).
    """
    img = _check_image(img)
    mask = _check_mask(mask, img)
    ch, cw = _pair(crop_size)
    h, w = img.shape[:2]
    H, W = max(ch, h), max(cw, w)
    # offset of the image inside the padded canvas
    ph = int(rng.integers(0, H - h + 1))
    pw = int(rng.integers(0, W - w + 1))
    # window inside the canvas
    sh = int(rng.integers(0, H - ch + 1))
    sw = int(rng.integers(0, W - cw + 1))

    # image rows [ph, ph + h) of the canvas land at crop rows [ph - sh, ph + h - sh)
    h0, h1 = max(ph - sh, 0), min(ph + h - sh, ch)
    w0, w1 = max(pw - sw, 0), min(pw + w - sw, cw)
    # matching source region
    ih0, iw0 = h0 + sh - ph, w0 + sw - pw

    crop = np.full((ch, cw, 3), pad_value, dtype=np.uint8)
    crop[h0:h1, w0:w1] = img[ih0 : ih0 + (h1 - h0), iw0 : iw0 + (w1 - w0)]
    out_mask = None
    if mask is not None:
        out_mask = np.full((ch, cw), mask_pad, dtype=mask.dtype)
        out_mask[h0:h1, w0:w1] = mask[ih0 : ih0 + (h1 - h0), iw0 : iw0 + (w1 - w0)]
    return crop, out_mask, np.asarray([h0, h1, w0, w1], dtype=np.int64)


# --------------------------------------------------------------------------------------------------
# colour
# --------------------------------------------------------------------------------------------------


def _gray(x: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of a float (H, W, 3) image in [0, 1], as (H, W, 1)."""
    return (x[..., 0:1] * 0.299 + x[..., 1:2] * 0.587 + x[..., 2:3] * 0.114).astype(np.float32)


def color_jitter(
    img: np.ndarray,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.2,
    hue: float = 0.1,
    *,
    rng: np.random.Generator,
) -> np.ndarray:
    """torchvision-style ColorJitter on a uint8 image: brightness / contrast / saturation factors
    ~ U(1 - x, 1 + x), a hue shift ~ U(-hue, hue) (fraction of the colour wheel), applied in a
    random order."""
    img = _check_image(img)
    x = img.astype(np.float32) / 255.0
    for op in rng.permutation(4):
        if op == 0 and brightness > 0:
            x = x * float(rng.uniform(max(0.0, 1 - brightness), 1 + brightness))
        elif op == 1 and contrast > 0:
            f = float(rng.uniform(max(0.0, 1 - contrast), 1 + contrast))
            x = f * x + (1 - f) * float(_gray(x).mean())
        elif op == 2 and saturation > 0:
            f = float(rng.uniform(max(0.0, 1 - saturation), 1 + saturation))
            x = f * x + (1 - f) * _gray(x)
        elif op == 3 and hue > 0:
            shift = float(rng.uniform(-hue, hue))
            hsv = cv2.cvtColor(np.clip(x, 0, 1), cv2.COLOR_RGB2HSV)  # float: H in [0, 360)
            hsv[..., 0] = np.mod(hsv[..., 0] + shift * 360.0, 360.0)
            x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        x = np.clip(x, 0.0, 1.0)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def photometric(
    img: np.ndarray, rng: np.random.Generator, *, flip: bool, blur_p: float, solarize_p: float
) -> np.ndarray:
    """The photometric chain of SeCo's views (docs/methods/seco.md#data, 6a and 6b), also the DeepLab stage's strong
    view (``flip=False``: the pixels stay where they were): flip (p .5) -> colour jitter (0.4, 0.4, 0.2, 0.1; p .8)
    -> grayscale (p .2) -> Gaussian blur, radius ~ U(0.1, 2) (p ``blur_p``) -> solarisation at 128 (p
    ``solarize_p``)."""
    if flip and rng.random() < 0.5:
        img = np.ascontiguousarray(img[:, ::-1])
    if rng.random() < 0.8:
        img = color_jitter(img, 0.4, 0.4, 0.2, 0.1, rng=rng)
    if rng.random() < 0.2:
        gray = np.asarray(Image.fromarray(img).convert("L"))
        img = np.repeat(gray[..., None], 3, axis=2)
    pil = Image.fromarray(img)
    if rng.random() < blur_p:
        pil = pil.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.1, 2.0))))
    if rng.random() < solarize_p:
        pil = ImageOps.solarize(pil, threshold=128)
    return np.asarray(pil)


def normalize(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 tensor, scaled to [0, 1] then ImageNet-normalised."""
    img = _check_image(img)
    x = (img.astype(np.float32) / 255.0 - _MEAN) / _STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


# --------------------------------------------------------------------------------------------------
# the training pipeline
# --------------------------------------------------------------------------------------------------


class TrainAugment:
    """Classifier-training augmentation (docs/methods/seco.md#data): scale, flip, [colour jitter], crop,
    normalise.

    ``__call__(img, rng, mask=None)`` returns a dict with
    - ``image``: (3, S, S) float32 tensor (ImageNet-normalised),
    - ``img_box``: (4,) int64 array ``[h0, h1, w0, w1]``, the valid region of the crop,
    - ``crop``: the (S, S, 3) uint8 crop behind ``image`` (for extra views),
    - ``mask``: the (S, S) uint8 mask crop (padding = 255), only when a mask was given.

    ``color_jitter=True`` applies ToCo's ColorJitter(0.4, 0.4, 0.2, 0.1) with p = ``jitter_p``
    before cropping (so the padding stays black). Off by default: SeCo's main input has none.
    """

    def __init__(
        self,
        crop_size: int | Sequence[int],
        scale_range: tuple[float, float] | None = (0.5, 2.0),
        hflip: bool = True,
        color_jitter: bool = False,
        *,
        jitter_p: float = 0.8,
    ) -> None:
        self.crop_size = _pair(crop_size)
        self.scale_range = None if scale_range is None else (float(scale_range[0]), float(scale_range[1]))
        self.hflip = bool(hflip)
        self.color_jitter = bool(color_jitter)
        self.jitter_p = float(jitter_p)

    def __call__(self, img: np.ndarray, rng: np.random.Generator, mask: np.ndarray | None = None) -> dict:
        img = _check_image(img)
        mask = _check_mask(mask, img)
        if self.scale_range is not None:
            img, mask = random_scale(img, mask, self.scale_range, rng=rng)
        if self.hflip:
            img, mask = random_hflip(img, mask, rng=rng)
        if self.color_jitter and rng.random() < self.jitter_p:
            img = color_jitter(img, rng=rng)
        crop, mask_crop, img_box = random_crop(img, mask, self.crop_size, rng=rng)
        out = {"image": normalize(crop), "img_box": img_box, "crop": crop}
        if mask_crop is not None:
            out["mask"] = mask_crop
        return out

    def __repr__(self) -> str:
        return (
            f"TrainAugment(crop_size={self.crop_size}, scale_range={self.scale_range}, "
            f"hflip={self.hflip}, color_jitter={self.color_jitter})"
        )


def prepare_image(
    image: np.ndarray, size: int | None, device: torch.device, *, max_side: int | None = None
) -> torch.Tensor:
    """uint8 HWC -> normalised (1, 3, h, w) tensor, resized to a square first if ``size``, then shrunk
    (aspect kept) to a longest side of ``max_side`` if it is longer (``data.val_max_side``,
    ``infer.max_side``: the network's cost grows with the pixels; callers resize its maps to the image)."""
    if size is not None:
        image = resize_to(image, size)
    return normalize(fit_side(image, max_side)).unsqueeze(0).to(device)
