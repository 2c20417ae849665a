"""The evaluator behind `wsss eval` (wsss.evaluation.evaluator), on a small fake dataset."""

import json

import numpy as np
import pytest

from wsss.core.errors import DataError
from wsss.evaluation.evaluator import EvalResult, evaluate, evaluate_arrays
from wsss.utils.io import save_label_png

NAMES = ["_background_", "cat", "dog", "horse", "person"]
C = len(NAMES)
SHAPES = [(13, 17), (32, 24), (5, 60), (1, 1), (40, 40)]


class FakeDataset:
    """The dataset protocol evaluate() relies on (ids, class_names, num_classes, load_mask, labels)."""

    def __init__(self, masks: dict[str, np.ndarray], class_names=NAMES):
        self._masks = masks
        self.ids = list(masks)
        self.class_names = list(class_names)
        self.num_classes = len(class_names)

    def load_mask(self, id):
        if id not in self._masks:
            raise DataError(f"{id}.png: mask file not found")
        return self._masks[id]

    def labels(self, id):
        m = self._masks[id]
        return np.array([(m == c).any() for c in range(1, self.num_classes)], dtype=np.float32)


def random_case(seed=0, shapes=SHAPES, absent=()):
    rng = np.random.default_rng(seed)
    gts, preds = {}, {}
    for i, shape in enumerate(shapes):
        gt = rng.integers(0, C, shape).astype(np.uint8)
        gt[rng.random(shape) < 0.1] = 255
        for c in absent:
            gt[gt == c] = 0
        pred = np.where(rng.random(shape) < 0.6, gt, rng.integers(0, C, shape)).astype(np.uint8)
        pred[pred == 255] = 0
        gts[f"img_{i:03d}"] = gt
        preds[f"img_{i:03d}"] = pred
    return gts, preds


def write_preds(pred_dir, preds):
    for image_id, pred in preds.items():
        save_label_png(pred_dir / f"{image_id}.png", pred)


def reference_iou(gts, preds):
    """Per-class IoU counted class by class with boolean masks (no confusion matrix, no bincount)."""
    inter = np.zeros(C)
    union = np.zeros(C)
    present = np.zeros(C, dtype=bool)
    for gt, pred in zip(gts, preds):
        valid = gt != 255
        for c in range(C):
            g = (gt == c) & valid
            p = (pred == c) & valid
            inter[c] += np.count_nonzero(g & p)
            union[c] += np.count_nonzero(g | p)
            present[c] |= g.any()
    iou = np.divide(inter, union, out=np.full(C, np.nan), where=union > 0)
    return iou, float(np.mean(iou[present]))


def test_evaluate_matches_independent_reference(tmp_path):
    gts, preds = random_case(0)
    write_preds(tmp_path, preds)
    res = evaluate(tmp_path, "fake-root", "val", dataset=FakeDataset(gts))
    assert isinstance(res, EvalResult) and res.n_images == len(SHAPES)
    iou, miou = reference_iou(gts.values(), preds.values())
    assert abs(res.miou - miou) < 0.01
    np.testing.assert_allclose(res.scores["iou"], iou, rtol=1e-12)
    assert [row["name"] for row in res.per_class] == NAMES
    np.testing.assert_allclose([row["iou"] for row in res.per_class], iou, rtol=1e-12)
    # the in-memory path gives the very same numbers
    res2 = evaluate_arrays(list(gts.values()), list(preds.values()), [FakeDataset(gts).labels(i) for i in gts], NAMES)
    np.testing.assert_array_equal(res2.scores["hist"], res.scores["hist"])
    assert res2.to_json()["cooccurrence"] == res.to_json()["cooccurrence"]
    assert res.scores["ignored_share"] == 0


def test_absent_class_and_json_round_trip(tmp_path):
    gts, preds = random_case(1, absent=(3,))
    for p in preds.values():
        p[p == 3] = 0  # class 3 absent from both GT and prediction: IoU nan
    write_preds(tmp_path, preds)
    res = evaluate(tmp_path, None, "val", dataset=FakeDataset(gts))
    assert np.isnan(res.scores["iou"][3])
    _, miou = reference_iou(gts.values(), preds.values())
    assert abs(res.miou - miou) < 0.01
    j = res.to_json()
    text = json.dumps(j, allow_nan=False)  # nan / inf became null
    back = json.loads(text)
    assert back == j
    assert back["per_class"][3]["iou"] is None
    assert back["miou"] == pytest.approx(res.miou)
    assert back["class_names"] == NAMES
    assert len(back["scores"]["hist"]) == C


def test_format_table(tmp_path):
    gts, preds = random_case(2)
    write_preds(tmp_path, preds)
    res = evaluate(tmp_path, None, "val", dataset=FakeDataset(gts))
    table = res.format_table()
    for name in NAMES:
        assert name in table
    assert "mIoU" in table and "pixel acc" in table and f"{100 * res.miou:.2f}" in table
    floor = res.to_json()["miou_background_only"]
    assert 0 < floor < res.miou and f"bkg only         {100 * floor:.2f}" in table  # the floor, in the JSON too
    assert "->" in table  # random predictions confuse co-occurring classes


def test_missing_prediction_file(tmp_path):
    gts, preds = random_case(3)
    del preds["img_002"]
    write_preds(tmp_path, preds)
    with pytest.raises(DataError, match="img_002.png"):
        evaluate(tmp_path, None, "val", dataset=FakeDataset(gts))
    with pytest.raises(DataError, match="directory"):
        evaluate(tmp_path / "nope", None, "val", dataset=FakeDataset(gts))


def test_wrong_shape(tmp_path):
    gts, preds = random_case(4)
    preds["img_001"] = preds["img_001"][:, :-1]
    write_preds(tmp_path, preds)
    with pytest.raises(DataError, match=r"img_001\.png.*shape"):
        evaluate(tmp_path, None, "val", dataset=FakeDataset(gts))


def test_out_of_range_value(tmp_path):
    gts, preds = random_case(5)
    preds["img_004"][3, 3] = 17
    write_preds(tmp_path, preds)
    with pytest.raises(DataError, match=r"img_004\.png.*\[17\]"):
        evaluate(tmp_path, None, "val", dataset=FakeDataset(gts))
    # 255 is the only legal value outside the classes
    preds["img_004"][3, 3] = 255
    write_preds(tmp_path, preds)
    res = evaluate(tmp_path, None, "val", dataset=FakeDataset(gts))
    assert res.scores["ignored_share"] > 0


def test_pseudo_mode(tmp_path):
    gts, preds = random_case(6)
    rng = np.random.default_rng(6)
    for p in preds.values():
        p[rng.random(p.shape) < 0.2] = 255
    write_preds(tmp_path, preds)
    res = evaluate(tmp_path, None, "train", dataset=FakeDataset(gts), pseudo=True)
    s = res.scores
    assert s["convention"].startswith("strict")
    assert 0.1 < s["ignored_share"] < 0.3
    assert s["pseudo_miou"] > s["miou"]  # undecided pixels cost only under the strict convention
    assert "iou_covered" in res.per_class[1]
    assert "mIoU cov" in res.format_table()
    json.dumps(res.to_json(), allow_nan=False)


def test_evaluate_arrays_derives_labels_and_names_errors():
    gt = np.zeros((4, 4), dtype=np.uint8)
    gt[:2, :2] = 1
    pred = gt.copy()
    pred[3, 3] = 1
    res = evaluate_arrays([gt], [pred], None, NAMES)
    assert res.cooccurrence["far"][1] == 1 / 12
    with pytest.raises(DataError, match=r"prediction 0 \(id a\).*shape"):
        evaluate_arrays([gt], [pred[:3]], None, NAMES, ids=["a"])


def _both_routes(gts, preds, labels=None, pseudo=True):
    """(the uint8 maps' result, the same maps as int64: the general path of a dozen passes)."""
    ids = list(gts)
    lab = None if labels is None else [labels[i] for i in ids]
    fast = evaluate_arrays([gts[i] for i in ids], [preds[i] for i in ids], lab, NAMES, pseudo=pseudo)
    wide = evaluate_arrays(
        [gts[i].astype(np.int64) for i in ids], [preds[i].astype(np.int64) for i in ids], lab, NAMES, pseudo=pseudo
    )
    return fast, wide


@pytest.mark.parametrize("derive_labels", [False, True])
def test_uint8_maps_count_what_the_general_path_counts(derive_labels):
    gts, preds = random_case(7, absent=(3,))
    rng = np.random.default_rng(7)
    for p in preds.values():
        p[rng.random(p.shape) < 0.2] = 255  # undecided pixels: the (C, C+1) histogram's last column
    labels = None if derive_labels else {i: FakeDataset(gts).labels(i) for i in gts}
    fast, wide = _both_routes(gts, preds, labels)
    for key in ("hist", "pseudo_hist"):
        np.testing.assert_array_equal(fast.scores[key], wide.scores[key])  # counts: equal, not close
    assert fast.to_json() == wide.to_json()  # every score, per-class row and co-occurrence figure


def test_uint8_maps_name_the_same_bad_values():
    gts, preds = random_case(8)
    preds["img_002"][0, :3] = [17, 200, 17]
    messages = []
    for route in ("uint8", "int64"):
        dtype = np.uint8 if route == "uint8" else np.int64
        with pytest.raises(DataError) as err:
            evaluate_arrays(
                [g.astype(dtype) for g in gts.values()],
                [p.astype(dtype) for p in preds.values()],
                None,
                NAMES,
                ids=list(gts),
            )
        messages.append(str(err.value))
    assert messages[0] == messages[1] and "[17, 200]" in messages[0] and "3 pixels" in messages[0]


@pytest.mark.parametrize("ahead", [1, 3])
def test_read_ahead_scores_the_same_and_raises_the_same_first_error(tmp_path, ahead):
    gts, preds = random_case(9)
    write_preds(tmp_path, preds)
    plain = evaluate(tmp_path, None, "val", dataset=FakeDataset(gts), read_ahead=0)
    assert evaluate(tmp_path, None, "val", dataset=FakeDataset(gts), read_ahead=ahead).to_json() == plain.to_json()
    (tmp_path / "img_001.png").write_bytes(b"not a png")  # the first bad file in order, read ahead or not
    preds["img_003"][0, 0] = 17
    write_preds(tmp_path, {"img_003": preds["img_003"]})
    with pytest.raises(DataError, match=r"img_001\.png"):
        evaluate(tmp_path, None, "val", dataset=FakeDataset(gts), read_ahead=ahead)
