"""Co-occurrence diagnostics on hand-built masks (wsss.evaluation.cooccurrence)."""

import numpy as np
import pytest

from wsss.data.classes import VOC_CLASSES
from wsss.evaluation.cooccurrence import CooccurrenceMeter

VOC = ["_background_", *VOC_CLASSES[1:]]
C = len(VOC)
BOAT, HORSE, PERSON, DOG = 4, 13, 15, 12

pytestmark = pytest.mark.filterwarnings("error")


def labels(*classes):
    lab = np.zeros(C - 1, dtype=np.float32)
    for c in classes:
        lab[c - 1] = 1
    return lab


def boat_image():
    gt = np.zeros((4, 4), dtype=np.uint8)
    gt[:2, :2] = BOAT  # 4 boat pixels, 12 background
    pred = gt.copy()
    pred[3, 0] = pred[3, 1] = pred[2, 3] = BOAT  # 3 background pixels leak into "boat"
    return gt, pred


def test_far_exact():
    gt, pred = boat_image()
    m = CooccurrenceMeter(C).update(gt, pred, labels(BOAT))
    r = m.result(VOC)
    n_bg = 12
    assert r["far"][BOAT] == 3 / n_bg
    assert r["far_images"][BOAT] == 1
    assert np.isnan(r["far"][0]) and np.isnan(r["far"][DOG])  # background / never labelled
    assert r["mean_far"] == 3 / n_bg
    assert r["pairs"] == []


def test_far_counts_only_images_labelled_with_the_class():
    gt, pred = boat_image()
    m = CooccurrenceMeter(C)
    m.update(gt, pred, labels(BOAT))
    # an image without the boat label: its boat predictions are not a boat FAR; its 16 background
    # pixels with 2 predicted dog do count for dog
    gt2 = np.zeros((4, 4), dtype=np.uint8)
    pred2 = np.full((4, 4), BOAT, dtype=np.uint8)
    pred2[0, :2] = DOG
    m.update(gt2, pred2, labels(DOG))
    r = m.result(VOC)
    assert r["far"][BOAT] == 3 / 12
    assert r["far"][DOG] == 2 / 16
    assert r["mean_far"] == pytest.approx((3 / 12 + 2 / 16) / 2)


def test_pair_share_exact():
    gt = np.zeros((4, 5), dtype=np.uint8)
    gt[0, :] = HORSE  # 5 horse pixels
    gt[2:, :] = PERSON  # 10 person pixels
    pred = gt.copy()
    pred[0, 1] = pred[0, 3] = PERSON  # 2 of the 5 horse pixels called person
    pred[3, 4] = HORSE  # 1 of 10 person pixels called horse
    m = CooccurrenceMeter(C).update(gt, pred, labels(HORSE, PERSON))
    r = m.result(VOC)
    pairs = {(p["gt"], p["pred"]): p for p in r["pairs"]}
    assert set(pairs) == {("horse", "person"), ("person", "horse")}
    hp = pairs[("horse", "person")]
    assert hp["share"] == 0.4 and hp["images"] == 1
    assert hp["confused_pixels"] == 2 and hp["gt_pixels"] == 5
    assert pairs[("person", "horse")]["share"] == 0.1
    assert [(p["gt"], p["pred"]) for p in r["pairs"]] == [("horse", "person"), ("person", "horse")]
    assert r["far"][HORSE] == 0 and r["far"][PERSON] == 0  # 5 bg pixels, none activated


def test_ignore_pixels():
    gt = np.array([[HORSE, HORSE, 255, 0], [PERSON, PERSON, 0, 0]], dtype=np.uint8)
    pred = np.array([[PERSON, 255, PERSON, 255], [PERSON, PERSON, HORSE, 0]], dtype=np.uint8)
    r = CooccurrenceMeter(C).update(gt, pred, labels(HORSE, PERSON)).result(VOC)
    pairs = {(p["gt"], p["pred"]): p for p in r["pairs"]}
    # GT 255 not counted; a 255 prediction is "not person" but still a horse pixel
    assert pairs[("horse", "person")]["share"] == 1 / 2
    assert r["far"][HORSE] == 1 / 3 and r["far"][PERSON] == 0


def _no_nan(pairs):
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in p.items()} for p in pairs]


def test_merge_equals_single_pass():
    rng = np.random.default_rng(0)
    images = []
    for _ in range(6):
        gt = rng.integers(0, C, (6, 7)).astype(np.uint8)
        gt[0] = 255
        pred = rng.integers(0, C, (6, 7))
        lab = (rng.random(C - 1) < 0.2).astype(np.float32)
        images.append((gt, pred, lab))
    whole, a, b = CooccurrenceMeter(C), CooccurrenceMeter(C), CooccurrenceMeter(C)
    for i, img in enumerate(images):
        whole.update(*img)
        (a if i < 3 else b).update(*img)
    ab = a + b
    a.merge(b)
    for m in (ab, a):
        r, w = m.result(VOC), whole.result(VOC)
        np.testing.assert_array_equal(r["far"], w["far"])
        assert _no_nan(r["pairs"]) == _no_nan(w["pairs"]) and r["n_images"] == 6
    shares = [p["share"] for p in whole.result(VOC)["pairs"] if np.isfinite(p["share"])]
    assert shares == sorted(shares, reverse=True)


def test_bad_inputs():
    m = CooccurrenceMeter(C)
    gt = np.zeros((2, 2), dtype=np.uint8)
    with pytest.raises(ValueError, match="multi-hot"):
        m.update(gt, gt, np.zeros(C))
    with pytest.raises(ValueError, match=r"\[40\]"):
        m.update(gt, np.full((2, 2), 40), labels(BOAT))
    with pytest.raises(ValueError):
        m.result(VOC[:-1])
    with pytest.raises(ValueError):
        m.merge(CooccurrenceMeter(C - 1))
