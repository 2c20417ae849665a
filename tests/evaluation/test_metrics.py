"""Confusion matrix, mIoU and pseudo-label scores (wsss.evaluation.metrics)."""

import numpy as np
import pytest

from golden import load_golden
from wsss.evaluation.metrics import ConfusionMeter, confusion_matrix, pseudo_label_scores, scores_from_hist

pytestmark = pytest.mark.filterwarnings("error")  # no divide / empty-slice warnings may escape


def _golden_scores():
    return load_golden("scores")  # tests/golden/README.md#scores; a missing file fails with its path


# Integer counts divided in f64, then means over <= 21 classes: measured identical; 1e-14 relative (45 ulps)
# covers another summation order of the means.
def assert_same(actual, expected, rtol=1e-14, atol=1e-15, what=""):
    """Equal up to ~1e-15, with nan and +-inf in the same places."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, what
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=f"{what}: nan places")
    np.testing.assert_array_equal(np.isposinf(actual), np.isposinf(expected), err_msg=f"{what}: inf places")
    np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected), err_msg=f"{what}: -inf places")
    fin = np.isfinite(expected)
    np.testing.assert_allclose(actual[fin], expected[fin], rtol=rtol, atol=atol, err_msg=what)


def test_golden_scores():
    g = _golden_scores()
    C = int(g["num_classes"])
    gts = [g[f"gt_{i}"] for i in range(3)]
    preds = [g[f"pred_{i}"] for i in range(3)]
    meter = ConfusionMeter(C)
    for gt, pred in zip(gts, preds):
        meter.update(gt, pred)
    np.testing.assert_array_equal(meter.hist, g["hist"])
    assert meter.hist.dtype == np.int64
    s = scores_from_hist(meter.hist)
    for key in ("pAcc", "mAcc", "miou", "iou", "confusion", "precision", "recall"):
        assert_same(s[key], g[key], what=key)
    # the fixture's documented special cases
    assert s["iou"][7] == 0 and np.isnan(s["recall"][7]) and not s["valid"][7]
    assert s["iou"][19] == 0 and np.isnan(s["precision"][19])
    assert np.isnan(s["iou"][20])
    # the official printed tables' plain mean is nan here (class 20 absent everywhere)
    assert np.isnan(s["miou_all"])


def test_golden_pseudo_scores():
    g = _golden_scores()
    C = int(g["num_classes"])
    gts = [g[f"gt_{i}"] for i in range(3)]
    pseudo = [g[f"pseudo_pred_{i}"] for i in range(3)]
    s = pseudo_label_scores(gts, pseudo, C)
    for key in ("pAcc", "mAcc", "miou", "iou"):
        assert_same(s[f"pseudo_{key}"], g[f"pseudo_{key}"], what=f"pseudo_{key}")
    # the strict (headline) convention equals scoring with 255 replaced by background
    strict = ConfusionMeter(C)
    for gt, p in zip(gts, pseudo):
        strict.update(gt, np.where(p == 255, 0, p))
    np.testing.assert_array_equal(s["hist"], strict.hist)
    assert s["miou"] == scores_from_hist(strict.hist)["miou"]
    # undecided share over valid-GT pixels
    valid = np.concatenate([(gt < C).ravel() for gt in gts])
    undecided = np.concatenate([(p == 255).ravel() for p in pseudo])
    assert s["ignored_share"] == pytest.approx(undecided[valid].mean(), rel=1e-15)


def _loop_confusion(gt, pred, C):
    hist = np.zeros((C, C), dtype=np.int64)
    for t, p in zip(gt.ravel(), pred.ravel()):
        if 0 <= t < C:
            hist[t, p] += 1
    return hist


@pytest.mark.parametrize("shape", [(1, 1), (7, 9), (16, 5)])
def test_confusion_matrix_matches_loop(shape):
    rng = np.random.default_rng(sum(shape))
    C = 6
    gt = rng.integers(0, C, shape).astype(np.uint8)
    gt[rng.random(shape) < 0.2] = 255
    pred = rng.integers(0, C, shape)
    hist = confusion_matrix(gt, pred, C)
    assert hist.shape == (C, C) and hist.dtype == np.int64
    np.testing.assert_array_equal(hist, _loop_confusion(gt.astype(int), pred, C))


def test_out_of_range_gt_ignored_and_row_is_gt():
    gt = np.array([[0, 1, 2, 255, 30]], dtype=np.uint8)
    pred = np.array([[1, 1, 0, 7, 99]])  # bad values only where the GT is ignored: fine
    hist = confusion_matrix(gt, pred, 3)
    expected = np.zeros((3, 3), np.int64)
    expected[0, 1] = expected[1, 1] = expected[2, 0] = 1
    np.testing.assert_array_equal(hist, expected)


def test_out_of_range_prediction_is_an_error():
    gt = np.zeros((2, 3), dtype=np.uint8)
    pred = np.array([[0, 5, 1], [255, 0, -1]])
    with pytest.raises(ValueError, match=r"\[-1, 5, 255\]"):
        confusion_matrix(gt, pred, 3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(gt, pred[:, :2], 3)


def test_meter_merge_and_add():
    rng = np.random.default_rng(1)
    C = 4
    pairs = [(rng.integers(0, C, (5, 6)), rng.integers(0, C, (5, 6))) for _ in range(4)]
    whole, a, b = ConfusionMeter(C), ConfusionMeter(C), ConfusionMeter(C)
    for i, (gt, pred) in enumerate(pairs):
        whole.update(gt, pred)
        (a if i % 2 else b).update(gt, pred)
    total = a + b
    np.testing.assert_array_equal(total.hist, whole.hist)
    np.testing.assert_array_equal(a.hist + b.hist, whole.hist)  # + did not mutate a
    a.merge(b)
    np.testing.assert_array_equal(a.hist, whole.hist)
    np.testing.assert_array_equal(ConfusionMeter.from_hist(whole.hist).hist, whole.hist)
    assert total.scores()["miou"] == whole.scores()["miou"]
    with pytest.raises(ValueError):
        a.merge(ConfusionMeter(C + 1))


def test_hand_computed_scores():
    # 3 classes; class 2 absent from the GT but predicted once
    hist = np.array([[3, 1, 0], [0, 2, 1], [0, 0, 0]])
    s = scores_from_hist(hist)
    assert s["pAcc"] == pytest.approx(5 / 7)
    np.testing.assert_allclose(s["iou"], [3 / 4, 2 / 4, 0.0])
    assert s["miou"] == pytest.approx((3 / 4 + 2 / 4) / 2)  # class 2 not in the GT: excluded
    assert s["miou_all"] == pytest.approx((3 / 4 + 2 / 4 + 0) / 3)  # the official tables' mean
    np.testing.assert_allclose(s["precision"], [1.0, 2 / 3, 0.0])
    assert_same(s["recall"], [3 / 4, 2 / 3, np.nan])
    assert_same(s["confusion"], [0.0, 0.5, np.inf])
    assert s["mAcc"] == pytest.approx((3 / 4 + 2 / 3) / 2)


def test_empty_hist_gives_nan_without_warnings():
    s = scores_from_hist(np.zeros((3, 3), np.int64))
    assert np.isnan(s["miou"]) and np.isnan(s["pAcc"]) and np.isnan(s["mAcc"])
    assert np.isnan(s["miou_background_only"])


@pytest.mark.parametrize("seed", range(5))
def test_the_background_only_floor_is_the_miou_of_masks_of_background(seed):
    """The floor of any ground truth (random, with absent classes, without background) equals the mIoU that masks
    of background alone score on it, and does not depend on the masks scored."""
    rng = np.random.default_rng(seed)
    C = 6
    gt = rng.choice([0, 1, 3, 255] if seed != 4 else [2, 5], size=(2, 17, 13)).astype(np.uint8)
    pred = rng.integers(0, C, size=gt.shape)
    floor = scores_from_hist(confusion_matrix(gt, pred, C))["miou_background_only"]
    background = scores_from_hist(confusion_matrix(gt, np.zeros_like(pred), C))
    assert floor == pytest.approx(background["miou"], rel=1e-14)  # f64 divisions of counts in another order
    assert background["miou_background_only"] == floor
    if seed == 4:  # no background in the ground truth: no mask scores less
        assert floor == 0.0


def test_pseudo_conventions_by_hand():
    gt = np.array([[0, 1, 1, 2, 0, 255]], dtype=np.uint8)
    pl = np.array([[255, 1, 255, 2, 0, 255]])
    s = pseudo_label_scores([gt], [pl], 3)
    # covered: the two undecided valid pixels are dropped -> everything left is right
    np.testing.assert_allclose(s["pseudo_iou"], [1.0, 1.0, 1.0])
    assert s["pseudo_miou"] == 1.0 and s["pseudo_pAcc"] == 1.0
    # strict: undecided -> background: the class-1 pixel becomes a bg false positive
    np.testing.assert_allclose(s["iou"], [2 / 3, 1 / 2, 1.0])
    assert s["pAcc"] == pytest.approx(4 / 5)
    assert s["ignored_share"] == pytest.approx(2 / 5)
    np.testing.assert_allclose(s["ignored_share_per_class"], [0.5, 0.5, 0.0])
    assert s["recall"][1] == 0.5 and s["pseudo_recall"][1] == 1.0
    assert "pseudo_mprecision" in s and "pseudo_mrecall" in s
    with pytest.raises(ValueError, match=r"\[7\]"):
        pseudo_label_scores([gt], [np.where(pl == 2, 7, pl)], 3)


def test_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    gt = torch.tensor([[0, 1], [2, 255]], dtype=torch.uint8)
    pred = torch.tensor([[0, 1], [1, 0]])
    np.testing.assert_array_equal(confusion_matrix(gt, pred, 3), confusion_matrix(gt.numpy(), pred.numpy(), 3))
