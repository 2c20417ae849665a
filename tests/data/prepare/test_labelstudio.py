"""`wsss prepare folder --masks / --labels` from Label Studio's JSON export: polygon and brush regions drawn in their
order, photos matched by their name or the name after Label Studio's upload prefix, and the checks that come before
any decoding (docs/datasets.md#masks-from-labelling-tools). The RLE codec's bytes are Label Studio's own
(tests/interop/ checks them against label-studio-sdk's encoder and decoder on many masks)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from wsss.core.errors import DataError
from wsss.data.prepare.annotations import open_masks
from wsss.data.prepare.folder import prepare_folder
from wsss.data.prepare.labelstudio import decode_rle, encode_rle
from wsss.data.voc import load_cls_labels
from wsss.utils.io import read_label_png

CLASSES = ["background", "cat", "dog"]
H, W = 10, 20
# label_studio_sdk.converter.brush.encode_rle(np.repeat(mask.ravel(), 4)) of the 3x4 mask MASK_3X4 (255 = painted)
SDK_RLE_3X4 = [0, 0, 0, 48, 57, 27, 254, 19, 0, 159, 254, 248, 4, 127, 224]
MASK_3X4 = np.zeros((3, 4), np.uint8)
MASK_3X4[1, 1:3] = 255
MASK_3X4[2, 3] = 255


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ["a.jpg", "b.png", "c.jpg"]:
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(images / name)
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return tmp_path


def _brush(label, bits, h=H, w=W, **extra):
    rgba = np.repeat(bits.astype(np.uint8).ravel() * np.uint8(255), 4)
    return {
        "id": f"b{label}",
        "type": "brushlabels",
        "from_name": "tag",
        "to_name": "image",
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "value": {"format": "rle", "rle": encode_rle(rgba), "brushlabels": [label]},
        **extra,
    }


def _polygon(label, points_px, h=H, w=W):
    points = [[100.0 * x / w, 100.0 * y / h] for x, y in points_px]
    return {
        "id": f"p{label}",
        "type": "polygonlabels",
        "from_name": "poly",
        "to_name": "image",
        "original_width": w,
        "original_height": h,
        "value": {"points": points, "closed": True, "polygonlabels": [label]},
    }


def _task(image, *regions, id=1, annotations=None):
    anns = annotations if annotations is not None else [{"id": id, "result": list(regions), "was_cancelled": False}]
    return {"id": id, "data": {"image": image}, "annotations": anns, "predictions": []}


def _write(folder, tasks, name="project-1-at-2026.json"):
    path = folder / name
    path.write_text(json.dumps(tasks))
    return path


def _prepare(folder, masks, labels=None):
    return prepare_folder(
        folder / "images", labels, folder / "classes.txt", folder / "out", masks=masks, val_fraction=0.0, progress=False
    )


def test_the_rle_codec_writes_and_reads_label_studio_s_bytes():
    """The encoder writes the bytes label-studio-sdk writes for the same pixels, and the decoder reads them back."""
    rgba = np.repeat(MASK_3X4.ravel(), 4)
    assert encode_rle(rgba) == SDK_RLE_3X4
    np.testing.assert_array_equal(decode_rle(SDK_RLE_3X4, rgba.size, "x"), rgba)
    np.testing.assert_array_equal(decode_rle(SDK_RLE_3X4, rgba.size, "x", channel=3), MASK_3X4.ravel())
    long_run = np.zeros(3 * 65536 + 5, np.uint8)  # runs past 65,536 values are split, as Label Studio splits them
    long_run[70000:] = 255
    np.testing.assert_array_equal(decode_rle(encode_rle(long_run), long_run.size, "x"), long_run)


def test_polygons_and_brushes_are_drawn_in_order_and_photos_found_by_name_or_after_the_upload_prefix(folder):
    """Polygon points are percent of the photo; a polygon is filled with its outline (corners at pixel centres: the
    rectangle (2,3)-(6,8) covers columns 2..6 and rows 3..8); a brush paints where its alpha is not 0; a later region
    is on top. An uploaded photo's name (``3f2a1b9c-a.jpg``) finds ``a.jpg``; a local-files URL names its file; a task
    without an annotation (predictions only) has no mask."""
    dog = np.zeros((H, W), bool)
    dog[5:10, 4:12] = True
    tasks = [
        _task("/data/upload/1/3f2a1b9c-a.jpg", _polygon("cat", [(2, 3), (6, 3), (6, 8), (2, 8)]), _brush("dog", dog)),
        _task("/data/local-files/?d=photos%2Fb.png", _brush("Cat", dog), id=2),
        {"id": 3, "data": {"image": "/data/upload/1/0a0b0c0d-c.jpg"}, "annotations": [], "predictions": [{}]},
    ]
    path = _write(folder, tasks)
    s = _prepare(folder, path)
    expected = np.zeros((H, W), np.uint8)
    expected[3:9, 2:7] = 1
    expected[dog] = 2
    np.testing.assert_array_equal(read_label_png(folder / "out/SegmentationClass/a.png"), expected)
    np.testing.assert_array_equal(read_label_png(folder / "out/SegmentationClass/b.png"), dog.astype(np.uint8))
    assert not (folder / "out/SegmentationClass/c.png").exists()
    assert f"masks: {path} read as Label Studio JSON export" in s.notes
    assert any("case" in w and "Cat" in w for w in s.warnings + s.notes)


def test_labels_from_the_export_and_the_last_annotation_of_a_task(folder):
    """``--labels export.json``: each annotated photo is labelled with the classes its regions draw; of two
    annotations the last that was not cancelled is read, and said."""
    box = np.zeros((H, W), bool)
    box[1:4, 1:4] = True
    first = {"id": 1, "result": [_brush("dog", box)], "was_cancelled": False}
    last = {"id": 2, "result": [_brush("cat", box)], "was_cancelled": False}
    cancelled = {"id": 3, "result": [_brush("dog", box)], "was_cancelled": True}
    path = _write(folder, [_task("a.jpg", annotations=[first, last, cancelled]), _task("b.png", _brush("dog", box))])
    s = _prepare(folder, path, labels=path)
    labels = load_cls_labels(folder / "out", 3)
    np.testing.assert_array_equal(labels["a"], [1, 0])
    np.testing.assert_array_equal(labels["b"], [0, 1])
    assert any("more than one annotation; the last was read" in n for n in s.notes + s.warnings)


def test_a_coco_file_is_still_read_as_coco(folder):
    """A .json file whose top level is an object is COCO's, as before."""
    coco = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": H, "width": W}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [[2, 3, 6, 3, 6, 8, 2, 8]]}
        ],
        "categories": [{"id": 1, "name": "cat"}],
    }
    path = _write(folder, coco, name="instances.json")
    assert open_masks(path, CLASSES).kind == "COCO JSON"


@pytest.mark.parametrize(
    "region, message",
    [
        ({"original_width": 10**9}, "out of bounds"),
        ({"original_width": 0}, "out of bounds"),
        ({"original_width": 14_000, "original_height": 14_000}, "over the limit"),  # sides in bounds, pixels not
        (
            {"value": {"format": "rle", "rle": encode_rle(np.zeros(8, np.uint8)), "brushlabels": ["cat"]}},
            "the RLE holds 8 values, the photo's RGBA pixels are 800",
        ),
        (
            {"value": {"format": "rle", "rle": encode_rle(np.zeros(H * W * 4, np.uint8))[:-2], "brushlabels": ["cat"]}},
            "the RLE ends inside a value",
        ),
        ({"value": {"format": "rle", "rle": [1, 2, 300], "brushlabels": ["cat"]}}, "not a list of bytes"),
        ({"value": {"format": "png", "rle": [], "brushlabels": ["cat"]}}, "brush format 'png'"),
        ({"value": {"format": "rle", "rle": [0], "brushlabels": ["cat", "dog"]}}, "one class a region"),
        (
            {
                "type": "polygonlabels",
                "value": {"points": [[1, 1], [float("nan"), 2], [3, 3]], "polygonlabels": ["cat"]},
            },
            "not finite",
        ),
    ],
)
def test_a_hostile_or_broken_region_is_one_data_error_naming_the_file(folder, region, message):
    """The declared size (each side, and the pixels: PIL's bound on a photo) is bounded before any mask is allocated,
    the RLE's declared length must be the photo's RGBA pixels before any value is decoded, a cut RLE or a non-finite
    point is an error naming the file."""
    path = _write(folder, [_task("a.jpg", {**_brush("cat", np.ones((H, W), bool)), **region})])
    with pytest.raises(DataError, match=message) as e:
        source = open_masks(path, CLASSES)
        source.read(source.find(folder / "images" / "a.jpg"))
    assert str(path) in str(e.value)


def test_files_that_are_not_an_export_are_named(folder):
    """A list of something else, an unknown class, or no annotated task is one DataError naming the file."""
    for tasks, message in [
        ([1, 2], "not a Label Studio JSON export"),
        ([_task("a.jpg", _brush("horse", np.ones((H, W), bool)))], "horse"),
        ([_task("a.jpg", annotations=[])], "no task has an annotation"),
    ]:
        path = _write(folder, tasks)
        with pytest.raises(DataError, match=message) as e:
            open_masks(path, CLASSES)
        assert str(path) in str(e.value)
