import numpy as np
import pytest
import torch

from wsss.cam import cam_to_label
from wsss.evaluation.bkg_sweep import LevelHistogram, seeds_at_thresholds, sweep_bkg_threshold, two_level_labels
from wsss.evaluation.metrics import ConfusionMeter, scores_from_hist


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
            torch.from_numpy(cam)[None],
            torch.from_numpy(labels)[None],
            ignore_mid=True,
            bkg_thre=h,
            high_thre=h,
            low_thre=lo,
        )
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


def _sweep_per_level(cams, masks, labels, thresholds, pairs):
    """The sweep as it was before the level histogram: a seed map and a confusion matrix per level and
    per pair, for every photo; the reference the histogram must equal count for count."""
    C = cams[0].shape[0] + 1
    meters = [ConfusionMeter(C) for _ in thresholds]
    pair_meters = [ConfusionMeter(C) for _ in pairs]
    decided, counted = np.zeros(len(pairs), np.int64), 0
    for cam, gt, lab in zip(cams, masks, labels):
        for meter, seed in zip(meters, seeds_at_thresholds(cam, lab, thresholds)):
            meter.update(gt, seed)
        counted += int((gt != 255).sum())
        for k, (meter, two) in enumerate(zip(pair_meters, two_level_labels(cam, lab, pairs))):
            where = (two != 255) & (gt != 255)
            meter.update(np.where(where, gt, 255), two)
            decided[k] += int(where.sum())
    return [m.hist for m in meters], [m.hist for m in pair_meters], decided, counted


def _random_photos(seed, n=6, C=6):
    """CAMs in float16 steps (as saved) holding the levels themselves (the <= edge), ties between classes, zeros and
    a few negative values, with the maps of some classes only (``classes``: the others zero, as a CAM file holds
    them; the first photo none, the second all); image labels with absent classes (one photo with none), not
    always the classes of the file; masks with 255 and a value >= C that is not 255."""
    rng = np.random.default_rng(seed)
    cams, masks, labels, in_file = [], [], [], []
    for i in range(n):
        h, w = rng.integers(5, 12, size=2)
        cam = rng.random((C - 1, h, w)).astype(np.float16).astype(np.float32)
        cam[rng.random(cam.shape) < 0.2] = np.float32(0.3)  # a level exactly, and ties between classes
        cam[rng.random(cam.shape) < 0.1] = np.float32(0.05)
        cam[rng.random(cam.shape) < 0.1] = 0.0
        cam[rng.random(cam.shape) < 0.05] = np.float32(-0.25)
        classes = np.flatnonzero(rng.random(C - 1) < 0.6) if i > 1 else np.arange(C - 1)[: (C - 1) * i]
        lab = (rng.random(C - 1) < 0.5).astype(np.float32) if i != 2 else np.zeros(C - 1, np.float32)
        if i == 3:  # every class labelled, two in the file, both below 0 on a row: the max is an absent class's 0
            classes, lab = np.array([1, 3]), np.ones(C - 1, np.float32)
            cam[:, 0] = np.float32(-0.25)
        cam[np.setdiff1d(np.arange(C - 1), classes)] = 0.0
        gt = rng.integers(0, C, size=(h, w)).astype(np.uint8)
        gt[rng.random((h, w)) < 0.15] = 255
        gt[rng.random((h, w)) < 0.05] = C + 2  # not a class, not the ignore value: out of the matrices
        cams.append(cam), masks.append(gt), labels.append(lab), in_file.append(classes)
    return cams, masks, labels, in_file


@pytest.mark.parametrize("labelled", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_level_histogram_equals_the_per_level_matrices(seed, labelled):
    cams, masks, labels, in_file = _random_photos(seed)
    thresholds = [0.3, 0.05, 0.5, 0.3, 0.9, 0.0, -0.1, -0.5]  # unsorted, one repeated, two below 0
    pairs = [(0.7, 0.25), (0.3, 0.05), (0.5, 0.5), (0.3, 0.3)]
    want_t, want_p, want_decided, want_counted = _sweep_per_level(cams, masks, labels, thresholds, pairs)
    hist = LevelHistogram([*thresholds, *(t for p in pairs for t in p)], cams[0].shape[0] + 1)
    for cam, gt, lab, classes in zip(cams, masks, labels, in_file):
        if labelled:  # the maps of the file's classes only; a ground truth of int64 (not a PNG's uint8) beside
            hist.add(cam[classes], lab, gt.astype(np.int64), classes)
        else:
            hist.add(cam, lab, gt)
    for t, want in zip(thresholds, want_t):
        np.testing.assert_array_equal(hist.threshold_hist(t), want)  # counts: equal, not close
    for (h, lo), want, d in zip(pairs, want_p, want_decided):
        got, decided = hist.pair_hist(h, lo)
        np.testing.assert_array_equal(got, want)
        assert decided == d
    assert hist.counted() == want_counted


class _Photos:
    def __init__(self, masks, labels):
        self.masks, self.lab = masks, labels

    def load_mask(self, id):
        return self.masks[int(id)]

    def labels(self, id):
        return self.lab[int(id)]


@pytest.mark.parametrize("ahead", [0, 3])
def test_sweep_scores_equal_the_per_level_scores(ahead):
    cams, masks, labels, in_file = _random_photos(3, n=7)
    thresholds, pairs = [0.05, 0.3, 0.6], [(0.7, 0.25), (0.3, 0.05)]
    want_t, want_p, want_decided, counted = _sweep_per_level(cams, masks, labels, thresholds, pairs)
    ids = [str(i) for i in range(len(cams))]
    res = sweep_bkg_threshold(
        lambda i: (in_file[int(i)], cams[int(i)][in_file[int(i)]]),
        _Photos(masks, labels),
        ids,
        thresholds,
        pairs=pairs,
        read_ahead=ahead,
    )
    assert res["miou"] == [scores_from_hist(h)["miou"] for h in want_t]
    assert [r["miou_decided"] for r in res["pairs"]] == [scores_from_hist(h)["miou"] for h in want_p]
    assert [r["decided"] for r in res["pairs"]] == [float(d / counted) for d in want_decided]
