"""`wsss eval PRED --masks M --classes C`: predictions scored against masks in any form --masks takes, by name."""

import json

import numpy as np
import pytest

from wsss.cli import main
from wsss.core.errors import DataError
from wsss.evaluation.by_name import evaluate_by_name
from wsss.evaluation.evaluator import evaluate_arrays
from wsss.utils.io import save_label_png

NAMES = ["background", "cat", "dog"]


def _classes(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("\n".join(NAMES) + "\n")
    return path


def _random(seed, shape=(12, 16)):
    return np.random.default_rng(seed).integers(0, len(NAMES), shape).astype(np.uint8)


def test_png_masks_are_matched_by_stem_and_scored_as_the_evaluator_scores(tmp_path):
    pred, masks = tmp_path / "pred", tmp_path / "masks"
    pred.mkdir(), masks.mkdir()
    gts = {s: _random(i) for i, s in enumerate(["a", "b.1", "c"])}
    preds = {s: _random(10 + i) for i, s in enumerate(["a", "b.1", "d"])}
    for s, m in gts.items():
        save_label_png(masks / f"{s}.png", m)
    for s, p in preds.items():
        save_label_png(pred / f"{s}.png", p)
    result = evaluate_by_name(pred, masks, _classes(tmp_path))
    expected = evaluate_arrays([gts["a"], gts["b.1"]], [preds["a"], preds["b.1"]], class_names=NAMES)
    assert result.n_images == 2
    assert result.miou == pytest.approx(expected.miou)
    assert result.meta["predictions"] == 3
    assert result.meta["unmasked"] == ["d.png"] and result.meta["unpredicted"] == ["c"]


def test_labelme_masks_match_the_photos_stem(tmp_path):
    masks, pred = tmp_path / "labelme", tmp_path / "pred"
    masks.mkdir(), pred.mkdir()
    shape = {"label": "dog", "shape_type": "rectangle", "points": [[2, 2], [9, 7]]}
    doc = {"shapes": [shape], "imagePath": "../photos/dog1.jpg", "imageHeight": 10, "imageWidth": 12}
    (masks / "dog1.json").write_text(json.dumps(doc))
    truth = np.zeros((10, 12), np.uint8)
    truth[2:8, 2:10] = 2  # the rectangle, outline included
    save_label_png(pred / "dog1.png", truth)
    result = evaluate_by_name(pred, masks, _classes(tmp_path))
    assert result.n_images == 1
    assert result.per_class[2]["iou"] == pytest.approx(1.0)


def test_coco_masks_and_no_match_is_one_error(tmp_path):
    coco = {
        "images": [{"id": 1, "file_name": "x.jpg", "height": 8, "width": 8}],
        "categories": [{"id": 5, "name": "cat"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 5,
                "iscrowd": 0,
                "segmentation": [[0, 0, 8, 0, 8, 8, 0, 8]],
                "area": 64,
                "bbox": [0, 0, 8, 8],
            }
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    pred = tmp_path / "pred"
    pred.mkdir()
    save_label_png(pred / "y.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="has a mask of its name"):
        evaluate_by_name(pred, tmp_path / "ann.json", _classes(tmp_path))
    save_label_png(pred / "x.png", np.ones((8, 8), np.uint8))
    result = evaluate_by_name(pred, tmp_path / "ann.json", _classes(tmp_path))
    assert result.n_images == 1 and result.meta["unmasked"] == ["y.png"]


def test_cli_prints_how_many_were_scored_and_refuses_a_half_given_source(tmp_path, capsys):
    pred, masks = tmp_path / "pred", tmp_path / "masks"
    pred.mkdir(), masks.mkdir()
    save_label_png(masks / "a.png", _random(0))
    for s in ("a", "b"):
        save_label_png(pred / f"{s}.png", _random(1))
    assert main(["eval", str(pred), "--masks", str(masks), "--classes", str(_classes(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "scored 1 of 2 predictions" in out and "mIoU" in out
    assert main(["eval", str(pred), "--masks", str(masks)]) == 1
    assert "--classes" in capsys.readouterr().err
    assert main(["eval", str(pred)]) == 1
