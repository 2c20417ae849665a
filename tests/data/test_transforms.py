"""Transforms of the training / inference pipeline (docs/methods/seco.md#data), each tested alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss.cam.labels import denormalize_image
from wsss.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TrainAugment,
    color_jitter,
    normalize,
    random_crop,
    random_hflip,
    random_scale,
    resize_to,
)


def coord_image(h: int, w: int) -> np.ndarray:
    """Pixels encode their own position: R = row, G = col, B = 255 (never the pad value 0)."""
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = np.arange(h)[:, None] % 256
    img[..., 1] = np.arange(w)[None, :] % 256
    img[..., 2] = 255
    return img


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---- random_scale -------------------------------------------------------------------------------


def test_random_scale_range_and_mask_nearest():
    img = coord_image(60, 80)
    mask = np.zeros((60, 80), np.uint8)
    mask[10:30, 20:50] = 7
    mask[40:, :] = 255
    ratios = []
    for seed in range(40):
        out, m = random_scale(img, mask, (0.5, 2.0), rng=rng(seed))
        assert out.dtype == np.uint8 and out.shape[2] == 3
        assert m.shape == out.shape[:2]
        rh, rw = out.shape[0] / 60, out.shape[1] / 80
        assert 0.5 - 0.02 <= rh <= 2.0 + 0.02 and abs(rh - rw) < 0.03  # aspect ratio kept
        assert set(np.unique(m)) <= {0, 7, 255}  # nearest: no interpolated labels
        ratios.append(rh)
    assert min(ratios) < 0.8 and max(ratios) > 1.6  # the range is actually explored


def test_random_scale_fixed_ratio_and_determinism():
    img = coord_image(50, 40)
    out, m = random_scale(img, None, (1.5, 1.5), rng=rng(1))
    assert out.shape == (75, 60, 3) and m is None
    a, _ = random_scale(img, scale_range=(0.5, 2.0), rng=rng(3))
    b, _ = random_scale(img, scale_range=(0.5, 2.0), rng=rng(3))
    assert np.array_equal(a, b)


# ---- random_hflip -------------------------------------------------------------------------------


def test_hflip_is_an_involution_and_keeps_mask_aligned():
    img = coord_image(20, 30)
    mask = (np.arange(30)[None, :] * np.ones((20, 1), int) % 5).astype(np.uint8)
    f, fm = random_hflip(img, mask, p=1.0, rng=rng(0))
    assert np.array_equal(f, img[:, ::-1]) and np.array_equal(fm, mask[:, ::-1])
    ff, ffm = random_hflip(f, fm, p=1.0, rng=rng(0))
    assert np.array_equal(ff, img) and np.array_equal(ffm, mask)
    same, same_m = random_hflip(img, mask, p=0.0, rng=rng(0))
    assert np.array_equal(same, img) and np.array_equal(same_m, mask)


def test_hflip_probability():
    img = coord_image(4, 6)
    g = rng(5)
    flips = sum(not np.array_equal(random_hflip(img, p=0.5, rng=g)[0], img) for _ in range(400))
    assert 150 < flips < 250


# ---- random_crop --------------------------------------------------------------------------------


def _check_crop(img, mask, crop, mcrop, box, size, pad_value=0, mask_pad=255):
    h0, h1, w0, w1 = (int(v) for v in box)
    assert crop.shape == (size, size, 3) and mcrop.shape == (size, size)
    assert 0 <= h0 < h1 <= size and 0 <= w0 < w1 <= size
    inside = crop[h0:h1, w0:w1]
    # the valid region is a contiguous window of the image: its coordinates tell where from
    r0, c0 = int(inside[0, 0, 0]), int(inside[0, 0, 1])
    assert np.array_equal(inside, img[r0 : r0 + h1 - h0, c0 : c0 + w1 - w0])
    assert np.array_equal(mcrop[h0:h1, w0:w1], mask[r0 : r0 + h1 - h0, c0 : c0 + w1 - w0])
    outside = np.ones((size, size), bool)
    outside[h0:h1, w0:w1] = False
    assert (crop[outside] == pad_value).all() and (mcrop[outside] == mask_pad).all()
    return h0, h1, w0, w1


def test_random_crop_large_image_has_full_box():
    img = coord_image(100, 120)
    mask = img[..., 0] % 21
    for seed in range(10):
        crop, mcrop, box = random_crop(img, mask, 64, rng=rng(seed))
        assert box.dtype == np.int64 and box.shape == (4,)
        assert box.tolist() == [0, 64, 0, 64]
        _check_crop(img, mask, crop, mcrop, box, 64)


def test_random_crop_pads_small_image_at_random_offsets():
    img = coord_image(30, 40)
    mask = np.full((30, 40), 3, np.uint8)
    offsets = set()
    for seed in range(30):
        crop, mcrop, box = random_crop(img, mask, 64, rng=rng(seed))
        h0, h1, w0, w1 = _check_crop(img, mask, crop, mcrop, box, 64)
        assert (h1 - h0, w1 - w0) == (30, 40)  # the whole image is inside the crop
        assert np.array_equal(crop[h0:h1, w0:w1], img)
        offsets.add((h0, w0))
    assert len(offsets) > 10  # the image is placed at random offsets


def test_random_crop_mixed_dims_and_custom_pad():
    img = coord_image(20, 200)  # shorter than the crop in h, longer in w
    mask = np.zeros((20, 200), np.uint8)
    crop, mcrop, box = random_crop(img, mask, 50, rng=rng(2), pad_value=7, mask_pad=254)
    h0, h1, w0, w1 = _check_crop(img, mask, crop, mcrop, box, 50, pad_value=7, mask_pad=254)
    assert h1 - h0 == 20 and (w0, w1) == (0, 50)


def test_random_crop_rectangular_size_without_mask_and_determinism():
    img = coord_image(40, 40)
    crop, m, box = random_crop(img, None, (32, 48), rng=rng(0))
    assert crop.shape == (32, 48, 3) and m is None
    assert box[1] - box[0] == 32 and box[3] - box[2] == 40
    a = random_crop(img, None, 24, rng=rng(9))
    b = random_crop(img, None, 24, rng=rng(9))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[2], b[2])


# ---- colour -------------------------------------------------------------------------------------


def test_color_jitter_identity_when_disabled_and_deterministic():
    g = rng(0)
    img = g.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    same = color_jitter(img, 0, 0, 0, 0, rng=rng(1))
    assert np.array_equal(same, img)
    a = color_jitter(img, rng=rng(4))
    b = color_jitter(img, rng=rng(4))
    assert a.dtype == np.uint8 and a.shape == img.shape and np.array_equal(a, b)
    assert not np.array_equal(a, img)


def test_color_jitter_components():
    grey = np.full((8, 8, 3), 100, np.uint8)
    # hue and saturation changes leave a grey image grey
    out = color_jitter(grey, 0, 0, 0.5, 0.5, rng=rng(0))
    assert np.abs(out.astype(int) - 100).max() <= 1
    # brightness scales values within the factor range
    img = np.full((4, 4, 3), 100, np.uint8)
    for seed in range(10):
        v = int(color_jitter(img, 0.4, 0, 0, 0, rng=rng(seed))[0, 0, 0])
        assert 60 <= v <= 140
    # a hue shift changes a saturated colour's hue
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 200
    shifted = color_jitter(red, 0, 0, 0, 0.5, rng=rng(3))
    assert shifted[..., 1:].max() > 10 or shifted[..., 0].max() < 190


# ---- normalisation ------------------------------------------------------------------------------


def test_normalize_denormalize_round_trip():
    img = rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    t = normalize(img)
    assert t.dtype == torch.float32 and t.shape == (3, 10, 12)
    expected = (img[3, 4, 1] / 255.0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1]
    assert abs(float(t[1, 3, 4]) - expected) < 1e-5
    # the pipeline's inverse (cam/labels.py, used by PAR) gives the pixels back to well under half a step
    back = denormalize_image(t[None], truncate_uint8=False)[0].permute(1, 2, 0).numpy() * 255.0
    assert np.array_equal(np.rint(back).astype(np.uint8), img)
    assert len(IMAGENET_MEAN) == len(IMAGENET_STD) == 3 and max(IMAGENET_MEAN) < 1


# ---- resizing -----------------------------------------------------------------------------------


def test_resize_helpers():
    img = coord_image(30, 60)
    assert resize_to(img, (15, 20)).shape == (15, 20, 3)
    assert resize_to(img, 32).shape == (32, 32, 3)
    mask = np.zeros((30, 60), np.uint8)
    mask[:, 30:] = 255
    small = resize_to(mask, (10, 10), interpolation="nearest")
    assert small.shape == (10, 10) and set(np.unique(small)) == {0, 255}
    with pytest.raises(ValueError):
        resize_to(img, (8, 8), interpolation="lanczos9")


# ---- the pipeline -------------------------------------------------------------------------------


def test_train_augment_outputs_and_determinism():
    img = coord_image(50, 70)
    mask = np.ones((50, 70), np.uint8)
    aug = TrainAugment(64, scale_range=(0.5, 2.0), hflip=True)
    out = aug(img, rng(0), mask=mask)
    assert set(out) == {"image", "img_box", "crop", "mask"}
    assert out["image"].shape == (3, 64, 64) and out["image"].dtype == torch.float32
    assert out["crop"].shape == (64, 64, 3) and out["crop"].dtype == np.uint8
    assert torch.equal(out["image"], normalize(out["crop"]))
    h0, h1, w0, w1 = out["img_box"].tolist()
    assert (out["mask"][h0:h1, w0:w1] == 1).all()
    assert (out["mask"] == 255).sum() == 64 * 64 - (h1 - h0) * (w1 - w0)
    again = aug(img, rng(0), mask=mask)
    assert torch.equal(out["image"], again["image"]) and np.array_equal(out["img_box"], again["img_box"])
    other = aug(img, rng(1))
    assert "mask" not in other and not torch.equal(other["image"], out["image"])


def test_train_augment_without_scaling_or_flip_is_a_plain_crop():
    img = coord_image(80, 80)
    out = TrainAugment(32, scale_range=None, hflip=False)(img, rng(0))
    crop = out["crop"]
    r0, c0 = int(crop[0, 0, 0]), int(crop[0, 0, 1])
    assert np.array_equal(crop, img[r0 : r0 + 32, c0 : c0 + 32])
    jitter = TrainAugment(32, color_jitter=True, jitter_p=1.0)(img, rng(0))
    assert jitter["image"].shape == (3, 32, 32)
