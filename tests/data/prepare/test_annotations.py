"""`wsss prepare folder --masks / --labels` from what labelling tools export: COCO JSON, CVAT's segmentation mask
export, LabelMe JSON. Each file is written in its tool's layout (field names as a real export has them) for a few
small photos, and the masks are compared with the pixel sets the shapes cover by each format's rasterisation rule
(docs/datasets.md#masks-from-labelling-tools)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from wsss.core.errors import DataError
from wsss.data import check_dataset
from wsss.data.prepare.folder import prepare_folder
from wsss.data.voc import load_cls_labels, read_split
from wsss.utils.io import read_label_png, save_label_png

CLASSES = ["background", "cat", "dog", "potted plant"]
H, W = 10, 12  # every photo's size


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i, name in enumerate(["a.jpg", "b.png", "c.jpg"]):
        Image.fromarray(np.full((H, W, 3), 60 * i, np.uint8)).save(images / name)
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return tmp_path


def _prepare(folder, masks, labels=None, out="out"):
    return prepare_folder(
        folder / "images", labels, folder / "classes.txt", folder / out, masks=masks, val_fraction=0.0, progress=False
    )


def _mask(folder, id, out="out"):
    return read_label_png(folder / out / "SegmentationClass" / f"{id}.png")


def _box(x0, y0, x1, y1, value, base=None):
    """A (H, W) class map: ``value`` on rows y0..y1-1 and columns x0..x1-1 (half-open, as numpy slices)."""
    out = np.zeros((H, W), np.uint8) if base is None else base.copy()
    out[y0:y1, x0:x1] = value
    return out


# ---- COCO ------------------------------------------------------------------------------------------------------


def _uncompressed_rle(bits: np.ndarray) -> dict:
    """COCO's uncompressed RLE of a bool mask: run lengths over the column-major pixels, starting with a 0-run (as
    CVAT writes a crowd's mask)."""
    flat = bits.flatten(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return {"counts": ([0] if flat[0] else []) + runs, "size": [H, W]}


def _compressed_rle(bits: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(bits.astype(np.uint8)))
    return {"size": [H, W], "counts": rle["counts"].decode("ascii")}


def _coco(images, annotations, categories=(("cat", 1), ("dog", 2), ("potted plant", 3))):
    """A COCO 1.0 file as CVAT exports it (licenses, info, categories, images, annotations)."""
    return {
        "licenses": [{"name": "", "id": 0, "url": ""}],
        "info": {"contributor": "", "date_created": "", "description": "", "url": "", "version": "", "year": ""},
        "categories": [{"id": i, "name": n, "supercategory": ""} for n, i in categories],
        "images": [
            {
                "id": i,
                "width": w,
                "height": h,
                "file_name": f,
                "license": 0,
                "flickr_url": "",
                "coco_url": "",
                "date_captured": 0,
            }
            for i, f, h, w in images
        ],
        "annotations": [
            {
                "id": aid,
                "image_id": im,
                "category_id": cat,
                "segmentation": seg,
                "area": 0.0,
                "bbox": [0.0, 0.0, 0.0, 0.0],
                "iscrowd": crowd,
                "attributes": {"occluded": False},
            }
            for aid, im, cat, seg, crowd in annotations
        ],
    }


def _write_coco(folder, data, name="instances_default.json"):
    path = folder / "annotations" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(data))
    return path


DOG_BITS = _box(8, 0, 11, 5, 1).astype(bool)
CROWD_BITS = _box(0, 9, 12, 10, 1).astype(bool)


def _coco_example():
    return _coco(
        [(1, "a.jpg", H, W), (2, "b.png", H, W), (3, "c.jpg", H, W), (4, "x.jpg", H, W)],
        [
            (1, 1, 1, [[2, 3, 6, 3, 6, 8, 2, 8]], 0),  # a: a cat rectangle, polygon
            (2, 1, 2, _compressed_rle(DOG_BITS), 0),  # a: a dog, compressed RLE
            (3, 1, 3, _uncompressed_rle(CROWD_BITS), 1),  # a: a crowd of potted plants, uncompressed RLE
            (4, 2, 1, [[4, 4, 8, 4, 8, 8, 4, 8]], 0),  # b: a small cat ...
            (5, 2, 2, [[0, 0, 12, 0, 12, 10, 0, 10]], 0),  # ... annotated before a dog over the whole photo
            (6, 4, 1, [[0, 0, 3, 0, 3, 3]], 0),  # x.jpg: no such photo
        ],
    )


def test_coco_polygons_and_rle_give_the_masks_drawn_directly(folder):
    """Polygons are filled as pycocotools fills them (corners are pixel edges: the rectangle (2,3)-(6,8) covers
    columns 2..5 and rows 3..7), compressed and uncompressed RLE decode exactly, a crowd is its class (a tool's
    crowd, as CVAT writes a brush mask, is pixels of its class; only `wsss prepare coco` makes it 255), and where
    instances overlap the smaller is on top whatever their order. A photo the file does not annotate (c) has no
    mask; an annotated file name of no photo is skipped with a warning, as a PNG mask of no photo is."""
    path = _write_coco(folder, _coco_example())
    s = _prepare(folder, path)
    expected_a = _box(2, 3, 6, 8, 1)
    expected_a[DOG_BITS] = 2
    expected_a[CROWD_BITS] = 3
    np.testing.assert_array_equal(_mask(folder, "a"), expected_a)
    np.testing.assert_array_equal(_mask(folder, "b"), _box(4, 4, 8, 8, 1, base=np.full((H, W), 2, np.uint8)))
    assert not (folder / "out/SegmentationClass/c.png").exists()
    assert s.counts["masks"] == 2
    assert f"masks: {path} read as COCO JSON" in s.notes
    assert f"1 mask(s) in {path} match no photo in {folder / 'images'} and were skipped: x.jpg" in s.warnings


def test_coco_labels_from_the_same_file(folder, wsss_cli):
    """``--labels coco.json``: each annotated photo is labelled with the classes drawn in it (a class drawn only as a
    crowd too: it is drawn with its class); a photo the file does not annotate has no label (left out, as a photo a
    labels file does not list). End to end through the command line."""
    path = _write_coco(folder, _coco_example())
    out = wsss_cli(
        "prepare",
        "folder",
        "--images",
        str(folder / "images"),
        "--masks",
        str(path),
        "--labels",
        str(path),
        "--classes",
        str(folder / "classes.txt"),
        "--out",
        str(folder / "out"),
    )
    labels = load_cls_labels(folder / "out", 4)
    assert sorted(labels) == ["a", "b"]
    np.testing.assert_array_equal(labels["a"], [1, 1, 1])
    np.testing.assert_array_equal(labels["b"], [1, 1, 0])
    assert f"labels: the classes drawn in each photo of {path}, read as COCO JSON" in out
    assert "1 images in" in out and "c.jpg" in out  # c: not annotated, left out
    assert "x.jpg" in out  # annotated, no such photo: skipped, said
    assert read_split(folder / "out", "train") == ["a", "b"]  # no val: 0.2 of 2 masked photos rounds to none
    assert check_dataset(folder / "out", "train", progress=False).ok


def test_coco_category_names_are_matched_as_a_labels_file_s(folder):
    """A category that is not a class is one error naming the file, the category and a close class; one that
    differs only in case is taken with a warning; ``background`` is class 0."""
    anns = [(1, 1, 1, [[2, 3, 6, 3, 6, 8, 2, 8]], 0), (2, 1, 2, [[0, 0, 2, 0, 2, 2, 0, 2]], 0)]
    data = _coco([(1, "a.jpg", H, W)], anns, categories=(("cat", 1), ("dgo", 2)))
    path = _write_coco(folder, data)
    with pytest.raises(
        DataError,
        match=r"instances_default.json \(category id 2\): unknown class 'dgo' \(did you "
        r"mean 'dog'\?\)",
    ):
        _prepare(folder, path)
    anns.append((3, 1, 3, [[3, 4, 5, 4, 5, 6, 3, 6]], 0))  # a background patch over the cat (later and smaller)
    data = _coco([(1, "a.jpg", H, W)], anns, categories=(("Cat", 1), ("dog", 2), ("background", 3)))
    s = _prepare(folder, _write_coco(folder, data), labels=_write_coco(folder, data))
    expected = _box(0, 0, 2, 2, 2, base=_box(2, 3, 6, 8, 1))
    np.testing.assert_array_equal(_mask(folder, "a"), _box(3, 4, 5, 6, 0, base=expected))
    assert any("'Cat' as 'cat' (category id 1)" in w for w in s.warnings)
    np.testing.assert_array_equal(load_cls_labels(folder / "out", 4)["a"], [1, 1, 0])


def test_coco_bad_cases(folder):
    """A polygon reaching outside its photo is cut at the edge (a warning), one wholly outside draws nothing (a
    warning); an image whose size in the file differs from its photo is an error naming both sizes, and so is an
    RLE of another size than its image."""
    anns = [(1, 1, 1, [[8, 6, 15, 6, 15, 13, 8, 13]], 0), (2, 1, 2, [[13, 11, 20, 11, 20, 18]], 0)]
    path = _write_coco(folder, _coco([(1, "a.jpg", H, W)], anns))
    s = _prepare(folder, path)
    np.testing.assert_array_equal(_mask(folder, "a"), _box(8, 6, 12, 10, 1))
    assert any(
        "1 shape(s) reach outside their photo and were cut at its edge" in w and "annotation 1" in w for w in s.warnings
    )
    assert any(
        "1 shape(s) lie wholly outside their photo and draw nothing" in w and "annotation 2" in w for w in s.warnings
    )
    path = _write_coco(folder, _coco([(1, "a.jpg", H - 1, W)], anns[:1]))
    with pytest.raises(
        DataError,
        match=r"instances_default.json \(image 1, a.jpg\): mask size 12x9 differs from "
        r"the image \(12x10\)",
    ):
        _prepare(folder, path, out="o2")
    bad_rle = {"size": [H + 1, W], "counts": _compressed_rle(DOG_BITS)["counts"]}
    path = _write_coco(folder, _coco([(1, "a.jpg", H, W)], [(1, 1, 2, bad_rle, 0)]))
    with pytest.raises(DataError, match=r"\(image 1, a.jpg\): annotation 1: RLE size \[11, 12\] differs"):
        _prepare(folder, path, out="o3")
    assert not (folder / "o2").exists() and not (folder / "o3").exists()


# ---- CVAT "Segmentation mask 1.1" -----------------------------------------------------------------------------

CVAT_COLOURS = {"background": (0, 0, 0), "cat": (250, 50, 83), "dog": (51, 221, 255), "potted plant": (131, 224, 112)}


def _cvat_export(folder, maps, names=CVAT_COLOURS):
    """A CVAT "Segmentation mask 1.1" export: labelmap.txt, ImageSets/Segmentation/default.txt, SegmentationClass/
    and SegmentationObject/ colour PNGs named by the photos' stems."""
    root = folder / "cvat"
    (root / "ImageSets/Segmentation").mkdir(parents=True, exist_ok=True)
    (root / "SegmentationClass").mkdir(exist_ok=True)
    (root / "SegmentationObject").mkdir(exist_ok=True)
    lines = ["# label:color_rgb:parts:actions"] + [f"{n}:{r},{g},{b}::" for n, (r, g, b) in names.items()]
    (root / "labelmap.txt").write_text("\n".join(lines) + "\n")
    (root / "ImageSets/Segmentation/default.txt").write_text("".join(f"{s}\n" for s in maps))
    palette = list(CVAT_COLOURS.values())
    for stem, index in maps.items():
        rgb = np.zeros((*index.shape, 3), np.uint8)
        for k, colour in enumerate(palette):
            rgb[index == k] = colour
        Image.fromarray(rgb).save(root / "SegmentationClass" / f"{stem}.png")
        instances = Image.fromarray(((index > 0) * 64).astype(np.uint8)).convert("RGB")  # one instance a class
        instances.save(root / "SegmentationObject" / f"{stem}.png")
    return root


def test_cvat_colour_masks_become_class_indices(folder):
    """Each colour of labelmap.txt is its class (matched by name to --classes), CVAT's black its background; a mask
    all background is taken, and named in a warning (CVAT can export one for a photo nobody annotated)."""
    ma = _box(2, 3, 6, 8, 1, base=_box(8, 0, 11, 5, 2))
    mb = _box(0, 0, 12, 4, 3)
    root = _cvat_export(folder, {"a": ma, "b": mb, "c": np.zeros((H, W), np.uint8)})
    s = _prepare(folder, root)
    np.testing.assert_array_equal(_mask(folder, "a"), ma)
    np.testing.assert_array_equal(_mask(folder, "b"), mb)
    np.testing.assert_array_equal(_mask(folder, "c"), np.zeros((H, W), np.uint8))  # all background: legal ...
    assert any(w.startswith(f"1 mask(s) of {root} are all background") and w.endswith(": c.png") for w in s.warnings)
    assert f"masks: {root} read as CVAT segmentation mask export" in s.notes
    assert s.counts["masks"] == 3


def test_cvat_bad_cases(folder):
    """A label of labelmap.txt that is not a class (its line, a close class); a line that is no label map line; a
    colour the label map does not name; a mask of another size than its photo: each one error naming the file."""
    names = {**CVAT_COLOURS, "dgo": (9, 9, 9)}
    root = _cvat_export(folder, {"a": _box(2, 3, 6, 8, 1)}, names=names)
    with pytest.raises(DataError, match=r"labelmap.txt:6: unknown class 'dgo' \(did you mean 'dog'\?\)"):
        _prepare(folder, root)
    root = _cvat_export(folder, {"a": _box(2, 3, 6, 8, 1)})
    text = (root / "labelmap.txt").read_text()
    (root / "labelmap.txt").write_text(text.replace("dog:51,221,255::", "dog:51,221::"))
    with pytest.raises(DataError, match=r"labelmap.txt:4: not a label map line 'name:r,g,b:parts:actions'"):
        _prepare(folder, root)
    (root / "labelmap.txt").write_text(text)
    rgb = np.asarray(Image.open(root / "SegmentationClass/a.png").convert("RGB")).copy()
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(root / "SegmentationClass/a.png")
    with pytest.raises(DataError, match=r"SegmentationClass/a.png: colours that .*labelmap.txt does not name: 1,2,3"):
        _prepare(folder, root)
    root = _cvat_export(folder, {"a": np.zeros((H + 2, W), np.uint8)})
    with pytest.raises(DataError, match=r"SegmentationClass/a.png: mask size 12x12 differs from the image \(12x10\)"):
        _prepare(folder, root)
    assert not (folder / "out").exists()


# ---- LabelMe --------------------------------------------------------------------------------------------------


def _shape(label, points, shape_type="polygon", **extra):
    return {
        "label": label,
        "points": points,
        "group_id": None,
        "description": "",
        "shape_type": shape_type,
        "flags": {},
        "mask": None,
        **extra,
    }


def _labelme(folder, photo, shapes, h=H, w=W, sub="labelme"):
    """One LabelMe file as LabelMe 5 saves it (imagePath relative to the JSON, imageData left out)."""
    root = folder / sub
    root.mkdir(exist_ok=True)
    data = {
        "version": "5.4.1",
        "flags": {},
        "shapes": shapes,
        "imagePath": f"../images/{photo}",
        "imageData": None,
        "imageHeight": h,
        "imageWidth": w,
    }
    (root / f"{photo.rsplit('.', 1)[0]}.json").write_text(json.dumps(data, indent=2))
    return root


def _png_b64(bits: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(bits.astype(bool)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def test_labelme_shapes_are_drawn_in_order_as_labelme_draws_them(folder):
    """LabelMe's rule (PIL, the outline included): the rectangle (2,3)-(6,8) covers columns 2..6 and rows 3..8; a
    later shape is on top of an earlier one; a ``mask`` shape's PNG lies at its first point; a circle holds its centre
    and the pixels around it; lines and points draw nothing (a warning) but are labels."""
    bits = np.array([[1, 1, 0], [1, 1, 1]], bool)
    root = _labelme(
        folder,
        "a.jpg",
        [
            _shape("dog", [[0, 0], [11, 9]], "rectangle"),  # the whole photo ...
            _shape("cat", [[2, 3], [6, 8]], "rectangle"),  # ... under a cat
            _shape("potted plant", [[9, 0], [11, 1]], "mask", mask=_png_b64(bits)),
            _shape("potted plant", [[1, 9], [5, 9]], "line"),
        ],
    )
    _labelme(folder, "b.png", [_shape("cat", [[6, 5], [6, 7]], "circle"), _shape("dog", [[1, 1]], "point")])
    s = _prepare(folder, root, labels=root)
    expected = _box(2, 3, 7, 9, 1, base=np.full((H, W), 2, np.uint8))
    expected[0:2, 9:12][bits] = 3
    np.testing.assert_array_equal(_mask(folder, "a"), expected)
    ys, xs = np.mgrid[:H, :W]  # the circle of centre (6, 5) through (6, 7), outline included: the 21 pixels within
    np.testing.assert_array_equal(_mask(folder, "b"), ((xs - 6) ** 2 + (ys - 5) ** 2 <= 5).astype(np.uint8))  # √5
    assert f"masks: {root} read as LabelMe JSON" in s.notes
    assert any("2 LabelMe line or point shape(s) enclose no area and draw nothing" in w for w in s.warnings)
    labels = load_cls_labels(folder / "out", 4)
    assert sorted(labels) == ["a", "b"]
    np.testing.assert_array_equal(labels["a"], [1, 1, 1])
    np.testing.assert_array_equal(labels["b"], [1, 1, 0])  # the dog of the point: a label, no pixel (a warning)


def test_labelme_json_beside_the_photos(folder):
    """LabelMe saves each JSON beside its photo: ``--masks`` the photos' own folder reads them."""
    _labelme(folder, "a.jpg", [_shape("cat", [[2, 3], [6, 3], [6, 8], [2, 8]])], sub="images")
    s = _prepare(folder, folder / "images")
    np.testing.assert_array_equal(_mask(folder, "a"), _box(2, 3, 7, 9, 1))
    assert s.counts["masks"] == 1


def test_labelme_bad_cases(folder):
    """An unknown label (the file, the name, a close class); an imagePath naming no photo (skipped, a warning, as a
    PNG mask of no photo); a size differing from the photo's (both sizes); a polygon reaching outside the photo (cut at
    its edge, a warning)."""
    root = _labelme(folder, "a.jpg", [_shape("cat", [[2, 3], [6, 3], [6, 8]]), _shape("dgo", [[0, 0], [2, 2]])])
    with pytest.raises(DataError, match=r"labelme/a.json \(shape 2\): unknown class 'dgo' \(did you mean 'dog'\?\)"):
        _prepare(folder, root)
    root = _labelme(folder, "a.jpg", [_shape("cat", [[8, 6], [15, 6], [15, 13], [8, 13]])])
    _labelme(folder, "zz.jpg", [_shape("cat", [[0, 0], [2, 0], [2, 2]])])
    s = _prepare(folder, root)
    np.testing.assert_array_equal(_mask(folder, "a"), _box(8, 6, 12, 10, 1))
    assert f"1 mask(s) in {root} match no photo in {folder / 'images'} and were skipped: zz.jpg" in s.warnings
    assert any("reach outside their photo and were cut at its edge" in w and "a.json shape 1" in w for w in s.warnings)
    (root / "zz.json").unlink()
    _labelme(folder, "a.jpg", [_shape("cat", [[2, 3], [6, 3], [6, 8]])], h=H, w=W + 4)
    with pytest.raises(DataError, match=r"labelme/a.json: mask size 16x10 differs from the image \(12x10\)"):
        _prepare(folder, root, out="o2")


def test_a_folder_of_pngs_is_still_class_index_masks(folder):
    save_label_png(folder / "masks" / "a.png", _box(2, 3, 6, 8, 1))
    s = _prepare(folder, folder / "masks")
    np.testing.assert_array_equal(_mask(folder, "a"), _box(2, 3, 6, 8, 1))
    assert f"masks: {folder / 'masks'} read as class-index PNGs" in s.notes
