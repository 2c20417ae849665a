import numpy as np
import pytest
import torch

from wsss.cam import cam_to_label
from wsss.evaluation.bkg_sweep import seeds_at_thresholds, sweep_bkg_threshold, two_level_labels


def test_seeds_at_thresholds_equal_cam_to_label():
    rng = np.random.default_rng(0)
    cam = rng.random((4, 9, 11)).astype(np.float32)
    labels = np.array([1, 0, 1, 0], dtype=np.float32)
    thresholds = [0.0, 0.2, 0.55, 0.9, 1.0]
    for t, seed in zip(thresholds, seeds_at_thresholds(cam, labels, thresholds)):
        _, want = cam_to_label(torch.from_numpy(cam)[None], torch.from_numpy(labels)[None], bkg_thre=t)
        np.testing.assert_array_equal(seed, want[0].numpy())


class _Toy:
    """Two images of one class whose CAM is 0.8 on the object, 0.3 on a halo and 0.1 elsewhere."""

    def __init__(self):
        self.mask = np.zeros((8, 8), dtype=np.uint8)
        self.mask[2:6, 2:6] = 1
        self.cam = np.full((2, 8, 8), 0.1, dtype=np.float32)
        self.cam[0, 1:7, 1:7] = 0.3
        self.cam[0, 2:6, 2:6] = 0.8

    def load_mask(self, id):
        return self.mask

    def labels(self, id):
        return np.array([1.0, 0.0])


def test_sweep_finds_the_level_between_halo_and_object():
    toy = _Toy()
    res = sweep_bkg_threshold(lambda i: toy.cam, toy, ["a", "b"], [0.05, 0.2, 0.5, 0.9])
    assert res["best_thre"] == 0.5 and res["best_miou"] == pytest.approx(1.0)
    # 0.05: every pixel is the class (bkg IoU 0, class 16/64); 0.2: the halo too (20 background pixels left)
    assert res["miou"][0] == pytest.approx((0 + 16 / 64) / 2)
    assert res["miou"][1] == pytest.approx((28 / 48 + 16 / 36) / 2)
    assert res["miou"][3] == pytest.approx((48 / 64 + 0) / 2)


def test_sweep_rejects_a_cam_of_the_wrong_size():
    toy = _Toy()
    with pytest.raises(ValueError, match="ground-truth"):
        sweep_bkg_threshold(lambda i: toy.cam[:, :4], toy, ["a"], [0.5])


def test_two_level_labels_equal_cam_to_label_with_ignore_mid():
    rng = np.random.default_rng(1)
    cam = rng.random((3, 7, 9)).astype(np.float32)
    labels = np.array([0, 1, 1], dtype=np.float32)
    pairs = [(0.7, 0.25), (0.35, 0.1), (0.5, 0.5)]
    for (h, lo), lab in zip(pairs, two_level_labels(cam, labels, pairs)):
        # bkg_thre <= high_thre: the background level has no effect on a two-level label
        _, want = cam_to_label(
            torch.from_numpy(cam)[None], torch.from_numpy(labels)[None], ignore_mid=True, bkg_thre=h, high_thre=h,
            low_thre=lo,
        )  # fmt: skip
        np.testing.assert_array_equal(lab, want[0].numpy())
    with pytest.raises(ValueError, match="low <= high"):
        two_level_labels(cam, labels, [(0.2, 0.3)])


def test_pair_scores_where_decided_and_decided_share():
    toy = _Toy()  # object 16 px at 0.8, halo 20 px at 0.3, 28 px at 0.1
    res = sweep_bkg_threshold(lambda i: toy.cam, toy, ["a", "b"], [0.5], pairs=[(0.5, 0.2), (0.2, 0.05)])
    tight, loose = res["pairs"]
    # 0.5 / 0.2: object -> class, halo undecided, the rest background: all 44 decided pixels right
    assert (tight["high"], tight["low"]) == (0.5, 0.2)
    assert tight["miou_decided"] == pytest.approx(1.0) and tight["decided"] == pytest.approx(44 / 64)
    # 0.2 / 0.05: object and halo -> class, the rest undecided; the decided background (the halo) is all wrong
    assert loose["decided"] == pytest.approx(36 / 64)
    assert loose["miou_decided"] == pytest.approx((0 + 16 / 36) / 2)
    assert "pairs" not in sweep_bkg_threshold(lambda i: toy.cam, toy, ["a"], [0.5])
