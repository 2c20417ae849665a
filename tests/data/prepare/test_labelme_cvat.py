"""LabelMe and CVAT exports given to `wsss prepare folder`: hostile files (sizes, points, picture sizes, label map
lines) are one DataError naming the file before anything of their size is made, and what real exports hold
(labelme's ``__ignore__``, ``oriented_rectangle``, an ``imagePath`` naming no photo, a CVAT export without a labels
file) is read as the tools mean it (docs/datasets.md#masks-from-labelling-tools). LabelMe files are written in
labelme 5's layout (``labelme/_label_file.py``), CVAT exports as "Segmentation mask 1.1" is laid out."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from wsss.core.errors import DataError
from wsss.data import check_dataset
from wsss.data.prepare.annotations import CvatMasks, LabelmeFolder, open_masks
from wsss.data.prepare.folder import prepare_folder
from wsss.data.voc import load_cls_labels
from wsss.utils.io import check_image_pixels, read_label_png

CLASSES = ["background", "cat", "dog"]
H, W = 10, 12
CVAT = {"background": (0, 0, 0), "cat": (250, 50, 83), "dog": (51, 221, 255)}


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ["a.jpg", "b.jpg"]:
        Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(tmp_path / "images" / name)
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return tmp_path


def _prepare(folder, masks, labels=None, out="out"):
    return prepare_folder(
        folder / "images", labels, folder / "classes.txt", folder / out, masks=masks, val_fraction=0.0, progress=False
    )


def _shape(label, points, shape_type="polygon", mask=None):
    return {
        "label": label,
        "points": points,
        "group_id": None,
        "description": "",
        "shape_type": shape_type,
        "flags": {},
        "mask": mask,
    }


def _labelme(root, stem, shapes, image_path=None, h=H, w=W):
    """``root/<stem>.json`` as labelme 5 saves it, ``imagePath`` by default the photo ``../images/<stem>.jpg``."""
    root.mkdir(exist_ok=True)
    data = {
        "version": "5.5.0",
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path or f"../images/{stem}.jpg",
        "imageData": None,
        "imageHeight": h,
        "imageWidth": w,
    }
    (root / f"{stem}.json").write_text(json.dumps(data))
    return root


def _png_b64(bits):
    buf = io.BytesIO()
    Image.fromarray(np.asarray(bits, bool)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _cvat(folder, maps, lines=None):
    root = folder / "cvat"
    (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
    lines = lines or ["# label:color_rgb:parts:actions"] + [f"{n}:{r},{g},{b}::" for n, (r, g, b) in CVAT.items()]
    (root / "labelmap.txt").write_text("\n".join(lines) + "\n")
    for stem, index in maps.items():
        rgb = np.zeros((*index.shape, 3), np.uint8)
        for k, colour in enumerate(CVAT.values()):
            rgb[index == k] = colour
        Image.fromarray(rgb).save(root / "SegmentationClass" / f"{stem}.png")
    return root


# ---- hostile files ---------------------------------------------------------------------------------------------


def test_labelme_declared_size_is_checked_when_opened_and_given_without_a_mask(folder):
    """imageHeight x imageWidth past the pixel limit, or not positive, is one error at open time (the mask was
    allocated at that size before its photo's size was compared); a sane file declares its size, no mask made."""
    root = _labelme(folder / "lm", "a", [_shape("cat", [[1, 1], [5, 1], [5, 5]])], h=100000, w=100000)
    with pytest.raises(
        DataError,
        match=r"a.json: imageWidth x imageHeight of 100000x100000 \(10000000000 pixels\) "
        r"is over the limit of \d+ pixels",
    ):
        LabelmeFolder(root, CLASSES)
    for h in (0, -5):
        _labelme(root, "a", [_shape("cat", [[1, 1], [5, 1], [5, 5]])], h=h)
        with pytest.raises(DataError, match=rf"a.json: imageHeight {h} and imageWidth {W} must both be positive"):
            LabelmeFolder(root, CLASSES)
    _labelme(root, "a", [_shape("cat", [[1, 1], [5, 1], [5, 5]])], h=H + 3)
    assert LabelmeFolder(root, CLASSES).declared_size("a.jpg") == (H + 3, W)


def test_cvat_declared_size_is_the_png_header_s(folder):
    root = _cvat(folder, {"a": np.zeros((H + 4, W + 1), np.uint8)})
    source = CvatMasks(root, CLASSES)
    assert source.declared_size("a") == (H + 4, W + 1)


def test_an_image_past_the_pixel_limit_is_one_error_naming_the_file(folder, monkeypatch):
    """Pillow's limit lowered so that a 100x100 picture is past it: a CVAT mask and a LabelMe ``mask`` shape's PNG
    were read with Pillow's DecompressionBombError as a traceback; each is now one DataError naming its file."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40 * 40)
    root = _cvat(folder, {"a": np.zeros((100, 100), np.uint8)})
    with pytest.raises(DataError, match=r"SegmentationClass/a.png: cannot read mask \(Image size \(10000 pixels\)"):
        CvatMasks(root, CLASSES).read("a")
    big = _png_b64(np.ones((100, 100)))
    lm = _labelme(folder / "lm", "a", [_shape("cat", [[0, 0], [9, 9]], "mask", mask=big)])
    with pytest.raises(DataError, match=r"a.json shape 1: cannot read mask \(Image size \(10000 pixels\)"):
        LabelmeFolder(lm, CLASSES).read("a.jpg")
    with pytest.raises(
        DataError,
        match=r"a.json: imageWidth x imageHeight of 60x70 \(4200 pixels\) is over the "
        r"limit of 3200 pixels",
    ):
        LabelmeFolder(_labelme(folder / "lm", "a", [], h=70, w=60), CLASSES)


def test_the_pixel_limit_leaves_large_photos_alone():
    check_image_pixels("photo.jpg", 6000, 8000)  # 48 MP: a phone's photo
    with pytest.raises(DataError, match=r"photo.jpg: image of 20000x20000 \(400000000 pixels\) is over the limit"):
        check_image_pixels("photo.jpg", 20000, 20000)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        (_shape("cat", [[1, 1], [float("nan"), 4], [6, 6]]), r"shape 2: point \(nan, 4.0\) is not a finite number"),
        (
            _shape("cat", [[1, 1], [2**31 + 5, 2**31 + 5]], "rectangle"),
            r"shape 2: point .* lies far outside the "
            r"12x10 photo",
        ),
        (_shape("cat", [[5, 5], [-(2**31), 5]], "circle"), r"shape 2: point .* lies far outside"),
        (
            _shape("cat", [[float("inf"), 0], [2, 2]], "mask", mask=_png_b64(np.ones((3, 3)))),
            r"shape 2: point \(inf, 0.0\) is not a finite number",
        ),
    ],
)
def test_labelme_points_that_cannot_be_drawn_are_one_error(folder, shape, message):
    """A NaN point drew noise, a rectangle or circle past PIL's integer range drew a pixel or nothing under the
    warning "cut at its edge", a mask shape at an inf point was a traceback: each is now one error naming the file
    and the shape, listed with the other problems."""
    root = _labelme(folder / "lm", "a", [_shape("dog", [[0, 0], [3, 0], [3, 3]]), shape])
    with pytest.raises(DataError, match=r"a.json " + message):
        _prepare(folder, root)
    assert not (folder / "out").exists()


def test_a_long_label_map_line_is_quoted_short_and_a_large_label_map_refused(folder):
    root = _cvat(folder, {"a": np.zeros((H, W), np.uint8)}, lines=["cat:" + "9" * 20000 + "::"])
    with pytest.raises(DataError) as e:
        CvatMasks(root, CLASSES)
    assert "labelmap.txt:1: not a label map line" in str(e.value) and str(e.value).endswith("...'")
    assert len(str(e.value)) < 300
    (root / "labelmap.txt").write_text("# a comment\n" * 100000)  # 1.2 MB: no label map is that long
    with pytest.raises(DataError, match=r"labelmap.txt: more than 1048576 bytes, too long for label map"):
        CvatMasks(root, CLASSES)


# ---- real exports ----------------------------------------------------------------------------------------------


def test_labelme_ignore_label_is_255_and_no_label(folder):
    """labelme's examples label pixels ``__ignore__`` (labelme2voc writes 255 there): 255 in the mask, no class."""
    root = _labelme(
        folder / "lm",
        "a",
        [_shape("cat", [[0, 0], [6, 6]], "rectangle"), _shape("__ignore__", [[4, 4], [8, 8]], "rectangle")],
    )
    _prepare(folder, root, labels=root)
    expected = np.zeros((H, W), np.uint8)
    expected[0:7, 0:7] = 1
    expected[4:9, 4:9] = 255
    np.testing.assert_array_equal(read_label_png(folder / "out/SegmentationClass/a.png"), expected)
    np.testing.assert_array_equal(load_cls_labels(folder / "out", 3)["a"], [1, 0])


def test_labelme_image_path_naming_no_photo_is_matched_by_the_json_name(folder):
    """labelme's tutorial file names itself as its imagePath (its converters take the JSON's name and the embedded
    picture): the photo of the JSON file's stem is its photo, for the masks and the labels. An imagePath that names
    a photo beside it still wins."""
    root = _labelme(folder / "lm", "a", [_shape("dog", [[0, 0], [3, 0], [3, 3]])], image_path="a.json")
    _labelme(root, "b", [_shape("cat", [[0, 0], [2, 2]], "rectangle")], image_path="../../elsewhere/b.jpg")
    s = _prepare(folder, root, labels=root)
    assert s.counts["masks"] == 2
    assert read_label_png(folder / "out/SegmentationClass/a.png")[1, 2] == 2
    assert read_label_png(folder / "out/SegmentationClass/b.png")[1, 1] == 1
    np.testing.assert_array_equal(load_cls_labels(folder / "out", 3)["a"], [0, 1])
    _labelme(root, "b", [_shape("cat", [[0, 0], [2, 2]], "rectangle")], image_path="../images/a.jpg")
    (root / "a.json").unlink()
    assert LabelmeFolder(root, CLASSES).find(folder / "images" / "b.jpg") is None  # b.json is a.jpg's


def test_labelme_oriented_rectangle_and_mask_placement_follow_labelme(folder):
    """``oriented_rectangle``: the polygon of its 4 corners (labelme's shape_to_mask); a ``mask`` shape lies at its
    first point rounded (labelme rounds, int() cut 2.6 to 2)."""
    bits = np.ones((2, 2), bool)
    tilted = _shape("cat", [[1, 1], [5, 1], [5, 4], [1, 4]], "oriented_rectangle")
    root = _labelme(folder / "lm", "a", [tilted, _shape("dog", [[7.6, 5.4], [9.2, 6.9]], "mask", mask=_png_b64(bits))])
    mask = LabelmeFolder(root, CLASSES).read("a.jpg")
    expected = np.zeros((H, W), np.uint8)
    expected[1:5, 1:6] = 1
    expected[5:7, 8:10] = 2
    np.testing.assert_array_equal(mask, expected)


def test_cvat_export_without_labels_labels_each_photo_by_its_mask(folder):
    """Without --labels every photo had no class, and check-data then refused the dataset its masks showed cats in;
    the classes in each CVAT mask are now its photo's labels, said in a note."""
    ma = np.zeros((H, W), np.uint8)
    ma[2:5, 2:5], ma[6:8, 6:9] = 1, 2
    mb = np.zeros((H, W), np.uint8)
    mb[0:3, :] = 2
    root = _cvat(folder, {"a": ma, "b": mb})
    s = _prepare(folder, root)
    labels = load_cls_labels(folder / "out", 3)
    np.testing.assert_array_equal(labels["a"], [1, 1])
    np.testing.assert_array_equal(labels["b"], [0, 1])
    assert any("labelled with the classes in its mask" in n for n in s.notes)
    assert check_dataset(folder / "out", "train", progress=False).ok


def test_labelme_json_beside_its_photos_is_not_called_left_out(folder):
    _labelme(folder / "images", "a", [_shape("cat", [[2, 3], [6, 3], [6, 8]])], image_path="a.jpg")
    (folder / "images" / "notes.txt").write_text("x")
    s = _prepare(folder, folder / "images")
    left = [w for w in s.warnings if w.startswith("left out of")]
    assert len(left) == 1 and "notes.txt" in left[0] and "a.json" not in left[0]


def test_cvat_segmentation_class_folder_given_itself_names_the_export_folder(folder):
    root = _cvat(folder, {"a": np.zeros((H, W), np.uint8)})
    with pytest.raises(
        DataError,
        match=r"this looks like CVAT's SegmentationClass/ folder .*give the export folder "
        r"that holds labelmap.txt",
    ):
        open_masks(root / "SegmentationClass", CLASSES)
