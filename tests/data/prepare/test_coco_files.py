"""A COCO file given to `wsss prepare folder --masks / --labels` is hostile until checked (its structure when read,
each segmentation before pycocotools' C code decodes it, the declared size before a mask is drawn), and the COCO files
that labelling tools really write (CVAT, Roboflow) are read as their users mean them
(docs/datasets.md#masks-from-labelling-tools)."""

# ruff: noqa: F401, F811  (test_annotations' fixture ``folder``, imported, is each test's argument)

from __future__ import annotations

import os
import re
import threading
import tracemalloc

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from tests.data.prepare.test_annotations import (
    CLASSES,
    DOG_BITS,
    H,
    W,
    _box,
    _coco,
    _coco_example,
    _compressed_rle,
    _mask,
    _prepare,
    _uncompressed_rle,
    _write_coco,
    folder,
)
from wsss.core.errors import DataError
from wsss.data.prepare import annotations, coco
from wsss.data.prepare.annotations import CocoJson, open_masks, read_annotation_labels
from wsss.data.prepare.coco import annotation_mask, annotation_rle, rle_string_counts, semantic_mask
from wsss.data.voc import load_cls_labels
from wsss.utils import io
from wsss.utils.io import max_image_pixels

CAT_POLYGON = [[2, 3, 6, 3, 6, 8, 2, 8]]  # columns 2..5, rows 3..7


def _one(segmentation, crowd=0, size=(H, W)):
    """A CVAT-layout COCO file of photo a.jpg with one cat annotation."""
    return _coco([(1, "a.jpg", *size)], [(1, 1, 1, segmentation, crowd)])


def _refused(folder, data, match, out="out"):
    """``prepare folder --masks`` of ``data`` (a COCO dict, or the file's text) is refused with a DataError one line of
    which matches ``match`` (the problems met while checking the photos are listed one a line), nothing written."""
    path = _write_coco(folder, data) if not isinstance(data, str) else _write_text(folder, data)
    with pytest.raises(DataError) as e:
        _prepare(folder, path, out=out)
    assert any(re.search(match, line) for line in str(e.value).splitlines()), str(e.value)
    assert not (folder / out).exists()


def _write_text(folder, text):
    path = folder / "annotations" / "instances_default.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


# ---- polygons and RLE, checked before pycocotools reads them ---------------------------------------------------


@pytest.fixture
def no_pycocotools_decoding(monkeypatch):
    """pycocotools' readers, which crash the process or read uninitialised memory on the values checked here: a
    test that reaches them fails instead."""

    def reached(*args, **kwargs):
        raise AssertionError("pycocotools was given the segmentation")

    for name in ("frPyObjects", "decode", "merge", "area"):
        monkeypatch.setattr(mask_utils, name, reached)


@pytest.mark.parametrize(
    "polygon, match",
    [
        ([0, 0, 1e9, 0, 5, 1e9], r"polygon 2: point \(1e\+09, 0\) lies far outside the 12x10 image"),
        ([0, 0, 5, -11.5, 5, 5], r"polygon 2: point \(5, -11.5\) lies far outside"),
        ([0, 0, float("nan"), 0, 5, 5], r"polygon 2: coordinate nan is not a finite number"),
        ([0, 0, float("inf"), 0, 5, 5], r"polygon 2: coordinate inf is not a finite number"),
        (
            [0, 0, 24, 0, 24, 1, 0, 1] * 50,
            r"polygon 2: its edges run 2500 pixels, more than 100 times the image's height",
        ),
        ([0, 0, 25.5, 0, 5, 5], r"polygon 2: point \(25.5, 0\) lies far outside the 12x10 image \(more than its own"),
        ([0, 0, 4, 0, 4, 4, 0], r"polygon 2: not a list of x, y coordinates"),
        ([[0, 0], [4, 0], [4, 4]], r"polygon 2: not a list of x, y coordinates"),
        ([0, 0, "a", 0, 4, 4], r"polygon 2: not a list of x, y coordinates"),
    ],
)
def test_polygon_values_are_checked_before_pycocotools(folder, no_pycocotools_decoding, polygon, match):
    """A coordinate of 1e9 crashed the process inside pycocotools (its filler overflows C ints); NaN drew noise; a
    zigzag of a few thousand points took gigabytes (the filler allocates each point along the edges). Each is one
    error naming the file, the image and the annotation, and pycocotools never sees it."""
    _refused(
        folder, _one([CAT_POLYGON[0], polygon]), r"instances_default.json \(image 1, a.jpg\): annotation 1 " + match
    )


@pytest.mark.parametrize(
    "counts, match",
    [
        ([10, 20], r"RLE counts sum to 30 pixels, the image has 10x12 = 120"),
        ([100, 30], r"RLE counts sum to 130 pixels"),
        ([-10, 130], r"RLE count -10 is not a run length of 0..120 pixels"),
        ([2**70], r"RLE count 1180591620717411303424 is not a run length"),
        ([60, 60.0], r"RLE count 60.0 is not a run length"),
        ([60, True, 59], r"RLE count True is not a run length"),
        (120, r"RLE counts must be a list of run lengths or a compressed string, got int"),
        ("é", r"RLE counts hold 'é', which is no character of a compressed RLE"),
        ("0 ", r"RLE counts hold ' ', which is no character"),
        ("1P", r"RLE counts end inside a count"),  # 'P' (0x20 set): more characters were to follow
        ("PPPPPP0", r"RLE counts hold a count of more than 6 characters"),
        ("2", r"RLE counts sum to 2 pixels, the image has 10x12 = 120"),
    ],
)
def test_rle_counts_are_checked_before_pycocotools(folder, no_pycocotools_decoding, counts, match):
    """Counts summing to less than height x width decoded uninitialised memory (another mask each run), more wrote
    past the mask; negative, huge, non-integer and non-ASCII counts were OverflowError, TypeError or
    UnicodeEncodeError tracebacks, a garbage compressed string was taken. Each is one error naming the annotation."""
    _refused(folder, _one({"size": [H, W], "counts": counts}, crowd=1), r"\(image 1, a.jpg\): annotation 1: " + match)


def test_rle_string_counts_decode_as_pycocotools_encodes():
    """The pure-Python reading of a compressed RLE string gives the run lengths of the mask pycocotools encoded, for
    masks of many runs (counts past the third are stored as differences, some negative) and one of a single run."""
    rng = np.random.default_rng(0)
    masks = [rng.random((H, W)) < p for p in (0.1, 0.5, 0.9)] + [np.ones((H, W), bool), DOG_BITS]
    for bits in masks:
        assert rle_string_counts(_compressed_rle(bits)["counts"]) == _uncompressed_rle(bits)["counts"]


def test_checked_rle_decodes_as_before():
    """What passes the checks is decoded as pycocotools decodes it: compressed and uncompressed RLE, and polygons."""
    np.testing.assert_array_equal(annotation_mask(_compressed_rle(DOG_BITS), H, W), DOG_BITS)
    np.testing.assert_array_equal(annotation_mask(_uncompressed_rle(DOG_BITS), H, W), DOG_BITS)
    np.testing.assert_array_equal(annotation_mask(CAT_POLYGON, H, W), _box(2, 3, 6, 8, 1).astype(bool))
    assert annotation_rle([], H, W) is None and annotation_rle([[1, 1, 2, 2]], H, W) is None


def test_semantic_mask_holds_one_instance_mask_at_a_time():
    """A small file of many annotations on a large photo held every instance's full-size mask at once (the areas are
    now read off the RLEs); the class map is the same."""
    h, w, n = 300, 400, 40
    anns = [
        {"id": i, "cls": 1 + i % 3, "iscrowd": 0, "segmentation": [[0, 0, w - i, 0, w - i, h, 0, h]]} for i in range(n)
    ]
    semantic_mask(anns[:1], h, w)  # pycocotools' first-call setup outside the measure
    tracemalloc.start()
    try:
        out = semantic_mask(anns, h, w)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * h * w, f"peak {peak} bytes for {n} masks of {h * w} pixels"
    expected = np.zeros((h, w), np.uint8)
    for i in range(n):  # the largest first, so the smallest (last) is on top
        expected[:, : w - i] = 1 + i % 3
    np.testing.assert_array_equal(out, expected)


# ---- the declared size ----------------------------------------------------------------------------------------


def test_a_declared_size_beyond_the_pixel_limit_is_refused_when_the_file_is_opened(folder):
    """A small file declaring 30000x30000 made wsss allocate gigabytes before the size error (100000x100000: a
    MemoryError). The size is bounded when the file is read."""
    for h, w in ((30000, 30000), (100000, 100000)):
        _refused(
            folder,
            _one(CAT_POLYGON, size=(h, w)),
            rf"images\[0\] \(id 1\): {w}x{h} is more than the "
            rf"{max_image_pixels()} pixels an image may have",
        )


def test_a_declared_size_is_compared_with_the_photo_before_the_mask_is_drawn(folder, monkeypatch):
    """The mask was drawn at the declared size before that size was compared with the photo's: now the size error
    comes first, and no mask is drawn."""

    def drawn(*args, **kwargs):
        raise AssertionError("a mask was drawn")

    data = _one(CAT_POLYGON, size=(4000, 6000))
    path = _write_coco(folder, data)
    assert CocoJson(path, CLASSES).declared_size("a.jpg") == (4000, 6000)
    monkeypatch.setattr(annotations, "semantic_mask", drawn)
    _refused(
        folder,
        data,
        r"instances_default.json \(image 1, a.jpg\): mask size 6000x4000 differs from the image "
        r"\(12x10\)",
    )


# ---- the file's structure ---------------------------------------------------------------------------------------


def _mutated(change):
    data = _one(CAT_POLYGON)
    change(data)
    return data


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda d: d["categories"][0].pop("id"), r"categories\[0\]: no 'id'"),
        (lambda d: d["images"][0].pop("id"), r"images\[0\]: no 'id'"),
        (lambda d: d["images"][0].pop("file_name"), r"images\[0\] \(id 1\): no 'file_name'"),
        (lambda d: d["images"][0].pop("height"), r"images\[0\] \(id 1\): no 'height'"),
        (lambda d: d["annotations"][0].pop("segmentation"), r"annotations\[0\] \(id 1\): no 'segmentation'"),
        (lambda d: d.update(images=None), r"'images' must be a list, got NoneType"),
        (lambda d: d.update(images={"1": d["images"][0]}), r"'images' must be a list, got dict"),
        (lambda d: d["images"].append(5), r"images\[1\]: a JSON int, not an object"),
        (lambda d: d["annotations"][0].update(image_id="x"), r"annotations\[0\] \(id 1\): 'image_id' must be an int"),
        (lambda d: d["annotations"][0].update(iscrowd="yes"), r"annotations\[0\] \(id 1\): 'iscrowd' must be 0 or 1"),
        (lambda d: d["images"][0].update(height=-10), r"images\[0\] \(id 1\): 'height' must be a positive int"),
        (lambda d: d["images"][0].update(width=12.5), r"images\[0\] \(id 1\): 'width' must be a positive int"),
        (
            lambda d: d["annotations"][0].update(segmentation=[1, 2]),
            r"annotations\[0\] \(id 1\): 'segmentation' must be a list of polygons or an RLE object",
        ),
    ],
)
def test_a_malformed_file_is_one_error_naming_the_entry(folder, change, match):
    """Fields missing or of the wrong type were KeyError, TypeError or ValueError tracebacks (a negative height one
    from numpy): the structure is checked once, when the file is read."""
    _refused(folder, _mutated(change), r"instances_default.json: " + match)


def test_a_file_that_is_no_coco_object_is_one_error(folder):
    _refused(folder, "5", r"instances_default.json: not a COCO instances file \(a JSON int, not an object\)")
    _refused(
        folder,
        '{"a": ' * 100_000 + "0" + "}" * 100_000,
        r"instances_default.json: cannot read COCO json "
        r"\(nested too deeply\)",
    )
    # a list at the top is read as Label Studio's export, through the same reader
    _refused(
        folder,
        "[" * 100_000 + "]" * 100_000,
        r"instances_default.json: cannot read Label Studio JSON "
        r"\(nested too deeply\)",
    )


@pytest.mark.parametrize("what", ["images", "categories"])
def test_two_entries_of_one_id_are_refused(folder, what):
    """Two images of one id gave a photo another photo's mask and labels; two categories of one id made every horse
    a boat. Each is an error naming the file and the id."""
    data = _coco([(1, "a.jpg", H, W), (2, "b.png", H, W)], [(1, 1, 1, CAT_POLYGON, 0), (2, 2, 2, CAT_POLYGON, 0)])
    data[what][1]["id"] = data[what][0]["id"]
    _refused(folder, data, rf"instances_default.json: {what}\[1\] \(id 1\): its id is also that of {what}\[0\]")


def test_a_fifo_is_refused_not_waited_on(folder):
    """A FIFO named x.json in a LabelMe folder hung the command: only a regular file is read."""
    labelme = folder / "labelme"
    labelme.mkdir()
    fifo = labelme / "x.json"
    os.mkfifo(fifo)
    said: dict[str, str] = {}

    def read():
        try:
            open_masks(labelme, CLASSES)
        except DataError as e:
            said["error"] = str(e)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():  # blocked on the FIFO: a writer's end of file lets it go
        os.close(os.open(fifo, os.O_WRONLY))
        reader.join()
    assert said.get("error") == f"{fifo}: not a regular file, so not read as JSON"


def test_a_json_file_over_the_size_limit_is_refused(folder, monkeypatch):
    monkeypatch.setattr(io, "MAX_JSON_BYTES", 100)
    path = _write_coco(folder, _one(CAT_POLYGON))
    with pytest.raises(DataError, match=rf"{path}: {path.stat().st_size} bytes, more than the 100 a COCO json file"):
        CocoJson(path, CLASSES)


# ---- what labelling tools export --------------------------------------------------------------------------------


def _roboflow(names):
    """A COCO file as Roboflow exports it: category 0 'objects' (supercategory 'none') that no annotation uses, the
    classes under it, ids from 0, and each photo renamed NAME_ext.rf.HASH.ext."""
    return {
        "info": {"year": "2024", "version": "1", "description": "Exported from roboflow.com"},
        "licenses": [{"id": 1, "url": "https://creativecommons.org/licenses/by/4.0/", "name": "CC BY 4.0"}],
        "categories": [
            {"id": 0, "name": "objects", "supercategory": "none"},
            {"id": 1, "name": "cat", "supercategory": "objects"},
            {"id": 2, "name": "dog", "supercategory": "objects"},
        ],
        "images": [
            {
                "id": i,
                "license": 1,
                "file_name": n,
                "height": H,
                "width": W,
                "date_captured": "2024-01-01T00:00:00+00:00",
            }
            for i, n in enumerate(names)
        ],
        "annotations": [
            {
                "id": i,
                "image_id": i,
                "category_id": 1 + i % 2,
                "bbox": [2, 3, 4, 5],
                "area": 20,
                "segmentation": CAT_POLYGON,
                "iscrowd": 0,
            }
            for i in range(len(names))
        ],
    }


def test_a_roboflow_export_is_read(folder):
    """Roboflow's category 0 'objects', which no annotation uses, needs no class (it was 'unknown class'), and its
    renamed photos a_jpg.rf.HASH.jpg are the photos a.jpg (an empty dataset before): both as --masks and as
    --labels."""
    data = _roboflow(["a_jpg.rf.0f3c9e1d2b7a4c5e8f9a0b1c2d3e4f5a.jpg", "b_png.rf.77aa.png"])
    path = _write_coco(folder, data)
    s = _prepare(folder, path, labels=path)
    np.testing.assert_array_equal(_mask(folder, "a"), _box(2, 3, 6, 8, 1))
    np.testing.assert_array_equal(_mask(folder, "b"), _box(2, 3, 6, 8, 2))
    labels = load_cls_labels(folder / "out", 4)
    np.testing.assert_array_equal(labels["a"], [1, 0, 0])
    np.testing.assert_array_equal(labels["b"], [0, 1, 0])
    assert s.counts["masks"] == 2 and not any("skipped" in w for w in s.warnings)


def test_roboflow_names_match_only_unambiguously(folder):
    """Two Roboflow copies of a.jpg (its augmentations) match neither (said); a photo of the exact name is matched by
    it."""
    path = _write_coco(folder, _roboflow(["a_jpg.rf.1111.jpg", "a_jpg.rf.2222.jpg", "b.png"]))
    s = _prepare(folder, path)
    assert not (folder / "out/SegmentationClass/a.png").exists()
    np.testing.assert_array_equal(_mask(folder, "b"), _box(2, 3, 6, 8, 1))
    assert any(
        "1 photo(s) have two or more Roboflow names" in w and "a.jpg (a_jpg.rf.1111.jpg, a_jpg.rf.2222.jpg)" in w
        for w in s.warnings
    )


def test_no_photo_matched_is_an_error_saying_how_names_are_matched(folder):
    """A file none of whose images is a photo gave an empty dataset (--labels) or one without masks, exit 0."""
    path = _write_coco(folder, _coco([(1, "IMG_1.jpg", H, W)], [(1, 1, 1, CAT_POLYGON, 0)]))
    rule = r"\(each image is the photo of its file name, a path's folders aside \(Roboflow's NAME_jpg.rf.HASH.jpg is "
    with pytest.raises(DataError, match=rf"{path}: none of its 1 annotated images is a photo of .*images {rule}"):
        _prepare(folder, path)
    with pytest.raises(DataError, match=rf"{path}: none of its 1 labelled photos is in .*images {rule}.*: IMG_1.jpg"):
        _prepare(folder, None, labels=path)
    assert not (folder / "out").exists()


def test_boxes_draw_nothing_and_say_so(folder):
    """CVAT writes a rectangle as an empty segmentation and a bbox. One among shapes is named in a warning; a file of
    boxes only is an error as --masks (every mask would be all background), and labels the photos as --labels."""
    anns = [(1, 1, 1, CAT_POLYGON, 0), (2, 1, 2, [], 0)]
    s = _prepare(folder, _write_coco(folder, _coco([(1, "a.jpg", H, W)], anns)))
    np.testing.assert_array_equal(_mask(folder, "a"), _box(2, 3, 6, 8, 1))
    assert any(
        w.startswith("1 annotation(s) are boxes with no segmentation") and "(image 1, a.jpg) annotation 2" in w
        for w in s.warnings
    )
    boxes = _coco([(1, "a.jpg", H, W), (2, "b.png", H, W)], [(1, 1, 1, [], 0), (2, 2, 2, [], 0)])
    _refused(
        folder,
        boxes,
        r"instances_default.json: no annotation has an area .* every mask would be all "
        r"background; give the file as --labels only",
        out="o2",
    )
    table, _, _ = read_annotation_labels(_write_coco(folder, boxes), CLASSES)
    assert {k: v[0] for k, v in table.items()} == {"a.jpg": [1], "b.png": [2]}


def test_cvat_brush_masks_marked_crowd_are_their_classes(folder):
    """CVAT's COCO 1.0 export writes each brush mask as an uncompressed RLE with iscrowd 1: every one was 255 (void).
    A tool's crowd is pixels of its class, and a label; `wsss prepare coco` keeps 255 (tests/data/prepare/
    test_coco.py)."""
    anns = [
        (1, 1, 1, _uncompressed_rle(_box(2, 3, 6, 8, 1).astype(bool)), 1),
        (2, 1, 2, _uncompressed_rle(DOG_BITS), 1),
    ]
    path = _write_coco(folder, _coco([(1, "a.jpg", H, W)], anns))
    _prepare(folder, path, labels=path)
    np.testing.assert_array_equal(_mask(folder, "a"), _box(8, 0, 11, 5, 2, base=_box(2, 3, 6, 8, 1)))
    np.testing.assert_array_equal(load_cls_labels(folder / "out", 4)["a"], [1, 1, 0])


def test_skipped_photos_are_named_once(folder):
    """The same file as --masks and --labels warned twice about each photo it names that is not in --images, and
    twice about a category name taken for a class but for its case: each warning is given once."""
    data = _coco_example()
    data["categories"][0]["name"] = "Cat"
    path = _write_coco(folder, data)
    s = _prepare(folder, path, labels=path)
    assert [w for w in s.warnings if "x.jpg" in w] == [
        f"1 photo(s) of {path} are not in {folder / 'images'} and were skipped: x.jpg ({path} (image 4, x.jpg))"
    ]
    assert len([w for w in s.warnings if "'Cat' as 'cat'" in w]) == 1
