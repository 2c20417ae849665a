"""`wsss prepare coco` on a miniature COCO 2014 tree: polygons, uncompressed and compressed RLE, crowds
(docs/datasets.md#coco). Every output pixel is compared with a mask written out by hand below."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from wsss.cli import main
from wsss.core.errors import DataError
from wsss.data import check_dataset
from wsss.data.classes import COCO_CLASSES
from wsss.data.prepare.coco import prepare_coco
from wsss.data.voc import load_cls_labels, read_split
from wsss.utils.io import read_label_png

# The 80 COCO category ids: 1..90 without these ten.
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
PERSON, CAR, MOTORCYCLE, DOG, CHAIR, TOOTHBRUSH = 1, 3, 4, 18, 62, 90  # COCO category ids
# ... and their class indices in the masks (sorted category ids -> 1..80)
C_PERSON, C_CAR, C_MOTO, C_DOG, C_CHAIR, C_BRUSH = 1, 3, 4, 17, 57, 80

IM1, IM2, IM3 = "COCO_train2014_000000000001", "COCO_val2014_000000000002", "COCO_train2014_000000000003"
IM4, IM5 = "COCO_train2014_000000000004", "COCO_train2014_000000000005"


def _crle(mask: np.ndarray) -> dict:
    """Compressed RLE as stored in the json (counts a string)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _image(id_num: int, name: str, h: int, w: int) -> dict:
    return {"id": id_num, "file_name": f"{name}.jpg", "height": h, "width": w}


def _ann(id: int, image_id: int, cat: int, segm, crowd: int = 0) -> dict:
    return {
        "id": id,
        "image_id": image_id,
        "category_id": cat,
        "segmentation": segm,
        "iscrowd": crowd,
        "area": 0.0,
        "bbox": [0, 0, 1, 1],
    }


@pytest.fixture
def coco(tmp_path) -> Path:
    root = tmp_path / "coco"
    # Categories in a shuffled order: the class index must follow the sorted ids, not the json order.
    order = np.random.default_rng(0).permutation(len(COCO_IDS))
    cats = [{"id": COCO_IDS[i], "name": COCO_CLASSES[1 + i], "supercategory": "x"} for i in order]
    chair = np.zeros((6, 8), dtype=np.uint8)
    chair[1:3, 5:8] = 1
    train = {
        "images": [_image(1, IM1, 6, 8), _image(3, IM3, 5, 5), _image(4, IM4, 4, 4), _image(5, IM5, 3, 3)],
        "annotations": [
            # person: polygon rows 0-3, cols 0-3 (area 16), plus a degenerate 2-point part
            _ann(1, 1, PERSON, [[0, 0, 4, 0, 4, 4, 0, 4], [1, 1, 2, 2]]),
            # dog: uncompressed RLE (column-major counts), rows 2-4, cols 2-5 (area 12)
            _ann(2, 1, DOG, {"size": [6, 8], "counts": [14, 3, 3, 3, 3, 3, 3, 3, 13]}),
            # chair: compressed RLE, rows 1-2, cols 5-7 (area 6)
            _ann(3, 1, CHAIR, _crle(chair)),
            # crowd of people: uncompressed RLE, rows 4-5, cols 4-7
            _ann(4, 1, PERSON, {"size": [6, 8], "counts": [28, 2, 4, 2, 4, 2, 4, 2]}, crowd=1),
            # equal areas: the later annotation id (11, listed first) is on top
            _ann(11, 4, MOTORCYCLE, [[0, 1, 4, 1, 4, 3, 0, 3]]),
            _ann(10, 4, CAR, [[0, 0, 4, 0, 4, 2, 0, 2]]),
            # an image with a crowd only: column 0
            _ann(20, 5, PERSON, {"size": [3, 3], "counts": [0, 3, 6]}, crowd=1),
        ],
        "categories": cats,
    }
    val = {
        "images": [_image(2, IM2, 3, 4)],
        "annotations": [_ann(30, 2, TOOTHBRUSH, [[0, 0, 2, 0, 2, 3, 0, 3]])],
        "categories": cats,
    }
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_train2014.json").write_text(json.dumps(train))
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(val))
    for split, data in (("train", train), ("val", val)):
        for im in data["images"]:
            p = root / f"{split}2014" / im["file_name"]
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((im["height"], im["width"], 3), 100, np.uint8)).save(p)
    return root


EXPECTED = {
    IM1: [
        [C_PERSON] * 4 + [0] * 4,
        [C_PERSON] * 4 + [0] + [C_CHAIR] * 3,
        [C_PERSON] * 2 + [C_DOG] * 3 + [C_CHAIR] * 3,  # dog over person; chair (smaller) over dog
        [C_PERSON] * 2 + [C_DOG] * 4 + [0] * 2,
        [0] * 2 + [C_DOG] * 4 + [255] * 2,  # the dog keeps its pixels inside the crowd
        [0] * 4 + [255] * 4,
    ],
    IM4: [[C_CAR] * 4, [C_MOTO] * 4, [C_MOTO] * 4, [0] * 4],
    IM5: [[255, 0, 0]] * 3,
    IM2: [[C_BRUSH] * 2 + [0] * 2] * 3,
}


def _onehot(*classes: int) -> np.ndarray:
    v = np.zeros(80, dtype=np.float32)
    v[[c - 1 for c in classes]] = 1
    return v


def test_prepare_coco_outputs(coco, tmp_path):
    out = tmp_path / "out"
    summary = prepare_coco(coco, out, workers=2, val_part=1, progress=False)
    assert (out / "classes.txt").read_text().splitlines() == COCO_CLASSES
    assert read_split(out, "train") == [IM1, IM4, IM5]  # IM3 has no annotation
    assert read_split(out, "val") == [IM2]
    assert read_split(out, "val_part") == [IM2]
    assert sorted(p.stem for p in (out / "SegmentationClass").glob("*.png")) == sorted(EXPECTED)
    for id, rows in EXPECTED.items():
        np.testing.assert_array_equal(
            read_label_png(out / "SegmentationClass" / f"{id}.png"), np.array(rows), err_msg=id
        )
    labels = load_cls_labels(out, 81)
    assert sorted(labels) == sorted(EXPECTED)
    np.testing.assert_array_equal(labels[IM1], _onehot(C_PERSON, C_DOG, C_CHAIR))
    np.testing.assert_array_equal(labels[IM4], _onehot(C_CAR, C_MOTO))
    np.testing.assert_array_equal(labels[IM5], _onehot())  # a crowd only: 255 in the mask, no label
    np.testing.assert_array_equal(labels[IM2], _onehot(C_BRUSH))
    assert COCO_CLASSES[C_CHAIR] == "chair" and COCO_CLASSES[C_DOG] == "dog"
    assert check_dataset(out, "train", progress=False).ok  # labels and masks agree
    assert sorted(p.name for p in (out / "JPEGImages").iterdir()) == sorted(f"{i}.jpg" for i in EXPECTED)
    assert summary.counts["train_annotated_images"] == 3 and summary.counts["classes"] == 81
    assert any("official train2014 list has 82081" in w for w in summary.warnings)

    # Resume: existing masks are kept, missing ones are written again.
    (out / "SegmentationClass" / f"{IM4}.png").unlink()
    keep = (out / "SegmentationClass" / f"{IM1}.png").stat().st_mtime_ns
    prepare_coco(coco, out, workers=0, val_part=1, progress=False)
    assert (out / "SegmentationClass" / f"{IM1}.png").stat().st_mtime_ns == keep
    np.testing.assert_array_equal(read_label_png(out / "SegmentationClass" / f"{IM4}.png"), np.array(EXPECTED[IM4]))


def test_prepare_coco_cli_and_errors(coco, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["prepare", "coco", "--coco", str(coco), "--out", str(out), "--workers", "0", "--quiet"]) == 0
    assert "val_part" in capsys.readouterr().out

    data = json.loads((coco / "annotations" / "instances_val2014.json").read_text())
    data["annotations"].append(_ann(31, 2, DOG, {"size": [4, 4], "counts": [16]}))
    (coco / "annotations" / "instances_val2014.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"annotation 31: RLE size \[4, 4\] differs from the image size \[3, 4\]"):
        prepare_coco(coco, tmp_path / "o1", splits=("val",), workers=0, progress=False)

    (coco / f"train2014/{IM4}.jpg").unlink()
    with pytest.raises(DataError, match=f"1 annotated images are missing: .*{IM4}.jpg"):
        prepare_coco(coco, tmp_path / "o2", splits=("train",), workers=0, progress=False)
    assert main(["prepare", "coco", "--coco", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o3")]) == 1
    assert "instances_train2014.json: annotation file not found" in capsys.readouterr().err


def test_prepare_coco_refuses_file_names_that_leave_the_output(coco, tmp_path):
    path = coco / "annotations" / "instances_val2014.json"
    data = json.loads(path.read_text())
    data["images"][0]["file_name"] = "../../escaped.jpg"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"instances_val2014\.json: image \d+ has file_name '\.\./\.\./escaped\.jpg'"):
        prepare_coco(coco, tmp_path / "o", splits=("val",), workers=0, progress=False)
    assert not list(tmp_path.rglob("escaped*"))


def test_prepare_coco_refuses_another_dataset_without_overwrite(coco, tmp_path, capsys):
    """`wsss prepare coco --out mine` wrote over a user's dataset; refused now unless --overwrite (then replaced);
    COCO's own dataset is continued without it."""
    mine = tmp_path / "mine"
    (mine / "ImageSets/Segmentation").mkdir(parents=True)
    (mine / "classes.txt").write_text("background\ncat\n")
    (mine / "ImageSets/Segmentation/train.txt").write_text("x\n")
    args = ["prepare", "coco", "--coco", str(coco), "--out", str(mine), "--workers", "0", "--quiet"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"{mine}: holds files that `wsss prepare coco` did not prepare" in err
    assert "classes.txt, ImageSets/Segmentation/train.txt" in err
    assert (mine / "classes.txt").read_text() == "background\ncat\n"
    assert main([*args, "--overwrite"]) == 0
    assert (mine / "classes.txt").read_text().splitlines() == list(COCO_CLASSES)
    assert "x" not in read_split(mine, "train")
    assert main(args) == 0


@pytest.mark.parametrize(
    "segmentation, match",
    [
        ({"size": [3, 4], "counts": [2, 3]}, r": RLE counts sum to 5 pixels, the image has 3x4 = 12"),
        ([[0, 0, 1e9, 0, 2, 1e9]], r" polygon 1: point \(1e\+09, 0\) lies far outside the 4x3 image"),
    ],
)
def test_prepare_coco_checks_each_segmentation_before_decoding(coco, tmp_path, monkeypatch, segmentation, match):
    """`wsss prepare coco` decodes by the same checked path: counts that cover part of the image read uninitialised
    memory, a coordinate of 1e9 crashed pycocotools. Each is an error naming the image and the annotation, and
    pycocotools (made to fail here) never sees it."""

    def reached(*args, **kwargs):
        raise AssertionError("pycocotools was given the segmentation")

    for name in ("frPyObjects", "decode", "merge", "area"):
        monkeypatch.setattr(mask_utils, name, reached)
    path = coco / "annotations" / "instances_val2014.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["segmentation"] = segmentation
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=rf"image {IM2}: annotation 30{match}"):
        prepare_coco(coco, tmp_path / "o", splits=("val",), workers=0, progress=False)


def test_prepare_coco_refuses_a_malformed_file(coco, tmp_path):
    """Two images of one id, or a height that is no positive integer, were taken or a traceback."""
    path = coco / "annotations" / "instances_train2014.json"
    data = json.loads(path.read_text())
    data["images"][1]["id"] = data["images"][0]["id"]
    path.write_text(json.dumps(data))
    with pytest.raises(
        DataError,
        match=r"instances_train2014.json: images\[1\] \(id 1\): its id is also that of "
        r"images\[0\]",
    ):
        prepare_coco(coco, tmp_path / "o", splits=("train",), workers=0, progress=False)
