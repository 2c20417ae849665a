"""SeCo decomposition and tags (docs/methods/seco.md#decompose) against golden csc_tags.npz, plus hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from golden import load_golden
from wsss.cam.labels import cam_to_roi_mask
from wsss.methods.seco.decompose import assign_csc_tags, assign_tags, crop_patches, sample_patch_positions


@pytest.fixture(scope="module")
def g() -> dict[str, np.ndarray]:
    return load_golden("csc_tags")


def _settings(g: dict[str, np.ndarray]) -> tuple[int, int, float]:
    return int(g["crop_num"]), int(g["crop_size"]), float(g["threshold"])


# ----------------------------------------------------------------------------- golden parity
def test_roi_mask_golden(g):
    # Everything in this fixture is exact: the masks compare recorded f64 CAMs with the thresholds, the crops
    # are copies, the tags count integer areas (divided by a power of two), and the positions come from torch's
    # CPU generator (integers; ``torch.rand`` scales a 24-bit integer by 2^-24, exact on every kernel set).
    roi = cam_to_roi_mask(
        torch.from_numpy(g["cams"]),
        torch.from_numpy(g["cls_label"]),
        img_box=g["img_box"],
        ignore_mid=True,
        bkg_thre=float(g["bkg_thre"]),
        low_thre=float(g["low_thre"]),
        high_thre=float(g["high_thre"]),
    )
    np.testing.assert_array_equal(roi.numpy(), g["roi_mask"])


def test_positions_golden(g):
    crop_num, crop_size, _ = _settings(g)
    roi = torch.from_numpy(g["roi_mask"])
    top_left, n_cand, fallback = sample_patch_positions(roi, crop_num, crop_size)
    assert top_left.dtype == torch.long and top_left.shape == (4, crop_num, 2)
    np.testing.assert_array_equal(top_left.numpy(), g["top_left"])
    np.testing.assert_array_equal(n_cand.numpy(), g["n_candidates"])
    np.testing.assert_array_equal(fallback.numpy(), g["fallback_random"])
    # perm_first: the index of each chosen corner in the row-major candidate list
    m = crop_size // 2
    win = g["roi_mask"][:, m:-m, m:-m]
    for i in range(roi.shape[0]):
        cand = np.argwhere(win[i] < 0) if not g["fallback_random"][i] else np.argwhere(np.ones_like(win[i]))
        assert len(cand) == g["n_candidates"][i]
        np.testing.assert_array_equal(cand[g["perm_first"][i]], g["top_left"][i])
        gen = torch.Generator().manual_seed(0)
        perm = torch.randperm(int(g["n_candidates"][i]), generator=gen)[:crop_num]
        np.testing.assert_array_equal(perm.numpy(), g["perm_first"][i])


def test_crops_and_flags_golden(g):
    crop_num, crop_size, threshold = _settings(g)
    roi = torch.from_numpy(g["roi_mask"])
    top_left = torch.from_numpy(g["top_left"])
    for key in ("q", "k"):
        crops = crop_patches(torch.from_numpy(g[f"images_{key}"]), top_left, crop_size)
        assert isinstance(crops, list) and len(crops) == crop_num
        np.testing.assert_array_equal(torch.stack(crops).numpy(), g[f"crops_{key}"])
    flags = assign_tags(roi, top_left, crop_size, threshold=threshold)
    assert flags.dtype == torch.float32 and flags.shape == (4, 2 + crop_num)
    np.testing.assert_array_equal(flags.numpy(), g["flags"])


def test_assign_csc_tags_golden_and_rng_untouched(g):
    crop_num, crop_size, threshold = _settings(g)
    roi = torch.from_numpy(g["roi_mask"])
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        # the training order of the official calls: k view first, then q; positions drawn once
        crops_k, flags_k, top_left = assign_csc_tags(
            torch.from_numpy(g["images_k"]), roi, crop_num, crop_size, threshold, return_top_left=True
        )
        crops_q, flags_q = assign_csc_tags(
            torch.from_numpy(g["images_q"]), roi, crop_num, crop_size, threshold, top_left=top_left
        )
        crops_q2, _ = assign_csc_tags(torch.from_numpy(g["images_q"]), roi, crop_num, crop_size, threshold)
        after = torch.rand(4)
        torch.manual_seed(1234)
        fresh = torch.rand(4)
    assert torch.equal(after, fresh)  # the global RNG was not touched
    np.testing.assert_array_equal(top_left.numpy(), g["top_left"])
    np.testing.assert_array_equal(torch.stack(crops_k).numpy(), g["crops_k"])
    np.testing.assert_array_equal(torch.stack(crops_q).numpy(), g["crops_q"])
    np.testing.assert_array_equal(torch.stack(crops_q2).numpy(), g["crops_q"])
    np.testing.assert_array_equal(flags_q.numpy(), g["flags"])
    np.testing.assert_array_equal(flags_k.numpy(), g["flags"])


def test_golden_official_rng_quirk_documented(g):
    """rng_after = what the official global reseed leaves: seed 0 then one randperm (last image)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch.randperm(int(g["n_candidates"][-1]))
        np.testing.assert_array_equal(torch.rand(4).numpy(), g["rng_after"])


def test_golden_corrected_switches(g):
    """Corrected semantics on the golden masks: image 2 global -> -1, image 3 patch 2 -> 0."""
    crop_num, crop_size, threshold = _settings(g)
    flags = assign_tags(
        torch.from_numpy(g["roi_mask"]),
        torch.from_numpy(g["top_left"]),
        crop_size,
        threshold=threshold,
        no_class_global_tag=-1.0,
        area_weighted_by_class_id=False,
    )
    expected = g["flags"].copy()
    expected[2, :2] = -1
    expected[3, 2 + 2] = 0
    np.testing.assert_array_equal(flags.numpy(), expected)


# ----------------------------------------------------------------------------- positions
def test_positions_centred_on_uncertain_and_random_mode():
    gen = torch.Generator().manual_seed(5)
    roi = torch.randint(0, 3, (3, 40, 36), generator=gen) - 1  # {-1, 0, 1}
    roi[2] = 0
    roi[2, 20, 20] = -1  # a single uncertain pixel -> fallback
    k, s = 6, 8
    m = s // 2
    tl, n, fb = sample_patch_positions(roi, k, s)
    assert fb.tolist() == [False, False, True]
    assert int(n[2]) == (40 - 2 * m) * (36 - 2 * m)
    for i in range(2):
        centres = roi[i, tl[i, :, 0] + m, tl[i, :, 1] + m]
        assert (centres == -1).all()
        assert int(n[i]) == int((roi[i, m:-m, m:-m] == -1).sum())
        assert len({tuple(p) for p in tl[i].tolist()}) == k  # distinct candidates
    assert (tl[..., 0] <= 40 - 2 * m - 1).all() and (tl[..., 1] <= 36 - 2 * m - 1).all()
    # the official positions depend only on the candidate set
    tl2, _, _ = sample_patch_positions(roi.clone(), k, s)
    assert torch.equal(tl, tl2)
    # corrected mode: positions follow the given generator (and differ between draws)
    a, _, _ = sample_patch_positions(roi, k, s, generator=torch.Generator().manual_seed(1), official_seed=False)
    b, _, _ = sample_patch_positions(roi, k, s, generator=torch.Generator().manual_seed(1), official_seed=False)
    c, _, _ = sample_patch_positions(roi, k, s, generator=torch.Generator().manual_seed(2), official_seed=False)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (roi[0, a[0, :, 0] + m, a[0, :, 1] + m] == -1).all()
    with torch.random.fork_rng():  # generator=None -> the global RNG
        torch.manual_seed(3)
        d1, _, _ = sample_patch_positions(roi, k, s, official_seed=False)
        torch.manual_seed(3)
        d2, _, _ = sample_patch_positions(roi, k, s, official_seed=False)
    assert torch.equal(d1, d2)


def test_crop_patches_matches_slicing_and_is_differentiable():
    images = torch.randn(2, 3, 20, 24, dtype=torch.float64, requires_grad=True)
    tl = torch.tensor([[[0, 0], [12, 16], [5, 3]], [[3, 9], [12, 0], [0, 16]]])
    crops = crop_patches(images, tl, 8)
    assert len(crops) == 3 and crops[0].shape == (2, 3, 8, 8)
    for k in range(3):
        for i in range(2):
            h0, w0 = tl[i, k].tolist()
            assert torch.equal(crops[k][i], images[i, :, h0 : h0 + 8, w0 : w0 + 8])
    torch.stack(crops).sum().backward()
    assert images.grad.sum().item() == 2 * 3 * 3 * 64
    with pytest.raises(ValueError):
        crop_patches(images, torch.tensor([[[13, 0]] * 3, [[0, 0]] * 3]), 8)


# ----------------------------------------------------------------------------- hand-made tags
def _hand_roi() -> tuple[torch.Tensor, torch.Tensor]:
    """4 images 8x8, crop 4; patches [0:4,0:4], [0:4,4:8], [4:8,0:4], [4:8,4:8]."""
    roi = torch.zeros(4, 8, 8, dtype=torch.long)
    # image 0: classes 1 and 3 -> global -1
    roi[0, 0:2, 0:4] = 3  # patch 0: class 3 (+ uncertain, not filled: 2 classes) -> 3
    roi[0, 2, 0:4] = -1
    roi[0, 0:4, 4:8] = -1  # patch 1: only uncertain -> -1
    roi[0, 4:6, 0:2] = 1  # patch 2: classes 1 and 3 -> -1
    roi[0, 6:8, 2:4] = 3
    # patch 3: background -> 0
    # image 1: single class 2 -> global 2, uncertain filled with 2
    roi[1, 0, 0] = 2
    roi[1, 0:4, 4:8] = -1  # patch 1: uncertain only -> filled -> 2
    roi[1, 4:8, 0:4] = 255  # patch 2: ignore counts as bg -> 0
    roi[1, 4:8, 4:6] = -1  # patch 3: 8/16 uncertain, filled -> 2
    roi[1, 0:4, 0:4] = torch.tensor([[2, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, -1]])  # 2/16 -> 0
    # image 2: no confident class -> global 1 (official) / -1 (corrected)
    roi[2, 0, 0:3] = -1  # patch 0: 3/16 = 0.1875 <= 0.2 -> 0
    roi[2, 0, 4:8] = -1  # patch 1: 4/16 = 0.25 -> -1 (no class id)
    # image 3: class 5 on 3 pixels of patch 0: weighted 15/16 -> 5, unweighted 3/16 -> 0
    roi[3, 0, 0:3] = 5
    roi[3, 4:8, 4:8] = 5  # patch 3: full class 5 -> 5
    roi[3, 4:5, 0:4] = 255
    tl = torch.tensor([[0, 0], [0, 4], [4, 0], [4, 4]]).expand(4, 4, 2)
    return roi, tl


def test_hand_tags_official():
    roi, tl = _hand_roi()
    flags = assign_tags(roi, tl, 4)
    expected = torch.tensor(
        [
            [-1, -1, 3, -1, -1, 0],
            [2, 2, 0, 2, 0, 2],
            [1, 1, 0, -1, 0, 0],
            [5, 5, 5, 0, 0, 5],
        ],
        dtype=torch.float32,
    )
    assert torch.equal(flags, expected)


def test_hand_tags_corrected():
    roi, tl = _hand_roi()
    flags = assign_tags(roi, tl, 4, no_class_global_tag=-1.0, area_weighted_by_class_id=False)
    expected = torch.tensor(
        [
            [-1, -1, 3, -1, -1, 0],
            [2, 2, 0, 2, 0, 2],
            [-1, -1, 0, -1, 0, 0],
            [5, 5, 0, 0, 0, 5],
        ],
        dtype=torch.float32,
    )
    assert torch.equal(flags, expected)


def test_area_threshold_is_inclusive():
    roi = torch.zeros(1, 10, 10, dtype=torch.long)
    roi[0, 0, 0:5] = -1  # 5/25 = 0.2 exactly -> background (<=)
    roi[0, 5, 5:10] = -1
    roi[0, 6, 5] = -1  # 6/25 -> -1
    flags = assign_tags(roi, torch.tensor([[[0, 0], [5, 5]]]), 5)
    assert flags.tolist() == [[1.0, 1.0, 0.0, -1.0]]


def _slow_tags(roi_mask, top_left, s, threshold, no_class, weighted):
    """Literal per-image, per-patch transcription of docs/methods/seco.md#decompose (slow)."""
    roi_ = roi_mask.clone()
    roi_[roi_ == 255] = 0
    roi = roi_.clone()
    roi[roi == -1] = 0
    if weighted:
        roi_un = roi.clone()
        roi_un[roi_ == -1] += 1
    else:
        roi_un = (roi_ != 0).long()
    b, k = top_left.shape[:2]
    flags = torch.ones(b, 2 + k)
    for i in range(b):
        ids = [v for v in roi[i].unique().tolist() if v != 0]
        if len(ids) >= 2:
            flags[i, :2] = -1
        elif len(ids) == 1:
            flags[i, :2] = ids[0]
            roi[i][roi_[i] == -1] = ids[0]
        else:
            flags[i, :2] = no_class
        for j in range(k):
            h0, w0 = top_left[i, j].tolist()
            if roi_un[i, h0 : h0 + s, w0 : w0 + s].sum() / (s * s) <= threshold:
                flags[i, 2 + j] = 0
                continue
            ids = [v for v in roi[i, h0 : h0 + s, w0 : w0 + s].unique().tolist() if v != 0]
            flags[i, 2 + j] = ids[0] if len(ids) == 1 else -1
    return flags


@pytest.mark.parametrize(("no_class", "weighted"), [(1.0, True), (-1.0, False)])
def test_tags_match_slow_reference(no_class, weighted):
    gen = torch.Generator().manual_seed(11)
    b, h, w, s, k = 6, 32, 32, 4, 12
    vals = torch.tensor([-1, 0, 0, 0, 0, 0, 1, 4, 7, 255])
    roi = vals[torch.randint(0, len(vals), (b, h // 2, w // 2), generator=gen)]
    roi = roi.repeat_interleave(2, 1).repeat_interleave(2, 2)  # blocky masks, varied tag outcomes
    roi[3][roi[3] == -1] = 0  # no uncertain pixel -> uniform fallback positions
    roi[1][roi[1] > 0] = torch.where(roi[1][roi[1] > 0] == 255, 255, 4)  # single class
    roi[2][(roi[2] > 0) & (roi[2] < 255)] = 0  # no class
    tl, _, _ = sample_patch_positions(roi, k, s)
    fast = assign_tags(roi, tl, s, threshold=0.2, no_class_global_tag=no_class, area_weighted_by_class_id=weighted)
    slow = _slow_tags(roi, tl, s, 0.2, no_class, weighted)
    assert torch.equal(fast, slow)
    assert len(set(fast[:, 2:].unique().tolist()) & {-1.0, 0.0, 1.0, 4.0, 7.0}) >= 4  # every branch hit
