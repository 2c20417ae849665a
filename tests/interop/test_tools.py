"""The labelling tools' own code writes the files wsss reads, and judges the files wsss writes (make test-interop: a
venv of its own, .venv-interop, with the `interop` extra's pinned labelme, datumaro, label-studio-sdk and pycocotools;
`make test` does not collect this folder, tests/conftest.py).

One way: each tool's writer (labelme's ``LabelFile``, datumaro's CVAT-mask and COCO exporters, pycocotools'
``mask.encode``, label-studio-sdk's brush ``mask2rle``) writes a format, and ``open_masks`` (``--masks``) reads it as
the tool's own reader or rasteriser does. The other way: ``wsss export masks`` writes each format, the tool's library
reads it (datumaro the COCO and CVAT exports, labelme's reader the LabelMe files, label-studio-sdk's decoder the Label
Studio tasks), its masks equal the route's, and ``open_masks`` reads them back equal again. The raster formats agree
exactly; LabelMe's polygons on smooth masks too, and within ``POLYGON_EDGE_SHARE`` of the edge pixels on ragged ones
(where a class's pixels meet only at a corner, OpenCV traces them as one region, and the fill of its polygon across
the corner can take a pixel of the class beside it)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from runs.test_export_masks import CLASSES, make_route, nested_masks
from wsss.data.prepare.annotations import open_masks
from wsss.runs.export_masks import export_masks

#: The most of a mask's edge pixels (a pixel with a 4-neighbour of another class) on which LabelMe's fill of the
#: exported polygons may differ from the mask (docs/export.md#masks-for-a-labelling-tool).
POLYGON_EDGE_SHARE = 0.01


def blob_masks(n: int = 3, h: int = 60, w: int = 80) -> dict[str, np.ndarray]:
    """Masks as a segmentation network draws them: smooth random regions of every class, with ragged edges."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    out = {}
    for i, sigma in enumerate([4, 2, 0.7][:n]):  # the smaller, the more ragged
        scores = gaussian_filter(rng.normal(size=(len(CLASSES), h, w)), sigma=(0, sigma, sigma))
        scores[0] += 0.05  # some background
        out[f"blob{i}"] = scores.argmax(axis=0).astype(np.uint8)
    return out


@pytest.fixture
def route(tmp_path):
    masks = {**nested_masks(), **blob_masks()}
    return make_route(tmp_path, masks), masks


def _edge_share(got: np.ndarray, want: np.ndarray) -> float:
    """Share of ``want``'s edge pixels (a 4-neighbour of another class) where ``got`` differs; 0 when they agree."""
    edge = np.zeros(want.shape, bool)
    edge[1:] |= want[1:] != want[:-1]
    edge[:-1] |= want[1:] != want[:-1]
    edge[:, 1:] |= want[:, 1:] != want[:, :-1]
    edge[:, :-1] |= want[:, 1:] != want[:, :-1]
    assert not (got != want)[~edge].any(), "pixels away from every edge differ"
    return float((got != want)[edge].sum() / max(edge.sum(), 1))


def _read_back(path, masks, photos):
    source = open_masks(path, CLASSES)
    return {id: source.read(source.find(photos / f"{id}.jpg")) for id in masks}


# ---- the tools write, wsss reads -------------------------------------------------------------------------------


def test_labelme_s_label_file_is_read_as_labelme_draws_it(tmp_path):
    """labelme's LabelFile writes polygons, a rectangle, a circle and a background hole; wsss's mask is the class
    map of labelme's own ``shapes_to_label``."""
    from labelme import LabelFile
    from labelme.utils import shapes_to_label

    h, w = 30, 40
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / "a.jpg")
    shapes = [
        {"label": "cat", "points": [[2.5, 3.2], [30.1, 4.7], [25.0, 26.9], [4.0, 20.0]], "shape_type": "polygon"},
        {"label": "dog", "points": [[10, 8], [20, 18]], "shape_type": "rectangle"},
        {"label": "_background_", "points": [[12, 10], [16, 10], [14, 14]], "shape_type": "polygon"},
        {"label": "potted plant", "points": [[33, 22], [33, 27.5]], "shape_type": "circle"},
    ]
    shapes = [{**s, "group_id": None, "description": "", "flags": {}, "mask": None} for s in shapes]
    LabelFile().save(str(tmp_path / "a.json"), shapes, "a.jpg", h, w)
    want, _ = shapes_to_label(
        (h, w), LabelFile(str(tmp_path / "a.json")).shapes, {"_background_": 0, **{n: i for i, n in enumerate(CLASSES)}}
    )
    assert set(np.unique(want).tolist()) == {0, 1, 2, 3}
    source = open_masks(tmp_path, CLASSES)
    np.testing.assert_array_equal(source.read(source.find(tmp_path / "a.jpg")), want)


def _datumaro_dataset(masks: dict[str, np.ndarray], background: bool):
    """A datumaro dataset of ``masks``: one Mask annotation a class present, on VOC's colours."""
    from datumaro.components.annotation import AnnotationType, LabelCategories, Mask, MaskCategories
    from datumaro.components.dataset import Dataset
    from datumaro.components.dataset_base import DatasetItem
    from datumaro.components.media import Image as DmImage

    from wsss.utils.io import voc_palette

    names = CLASSES if background else CLASSES[1:]
    first = 0 if background else 1
    palette = voc_palette(len(CLASSES))
    categories = {
        AnnotationType.label: LabelCategories.from_iterable(names),
        AnnotationType.mask: MaskCategories({i: tuple(palette[i + first].tolist()) for i in range(len(names))}),
    }
    items = [
        DatasetItem(
            id=id,
            media=DmImage.from_numpy(np.zeros((*m.shape, 3), np.uint8)),
            annotations=[Mask(image=m == c, label=c - first) for c in np.unique(m).tolist() if c >= first],
        )
        for id, m in masks.items()
    ]
    return Dataset.from_iterable(items, categories=categories)


def test_datumaro_s_cvat_mask_export_is_read_exactly(tmp_path, route):
    """datumaro's VOC segmentation exporter, which makes CVAT's "Segmentation mask 1.1" export, writes the masks;
    wsss reads them back exactly."""
    _, masks = route
    _datumaro_dataset(masks, background=True).export(str(tmp_path / "cvat"), "voc_segmentation", label_map="source")
    source = open_masks(tmp_path / "cvat", CLASSES)
    for id, mask in masks.items():
        np.testing.assert_array_equal(source.read(source.find(tmp_path / f"{id}.jpg")), mask, err_msg=id)


def test_datumaro_s_coco_export_of_polygons_is_read_as_pycocotools_fills_them(tmp_path, route):
    """datumaro's COCO exporter (CVAT's "COCO 1.0") writes the masks as polygons (iscrowd 0); where pycocotools
    fills one annotation alone, wsss's mask is that annotation's class, and each class wsss draws lies inside its
    annotations' fill."""
    from pycocotools.coco import COCO

    _, masks = route
    _datumaro_dataset(masks, background=False).export(
        str(tmp_path / "coco"), "coco_instances", segmentation_mode="polygons"
    )
    path = tmp_path / "coco" / "annotations" / "instances_default.json"
    coco, source = COCO(str(path)), open_masks(path, CLASSES)
    names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
    for img in coco.dataset["images"]:
        got = source.read(source.find(tmp_path / img["file_name"]))
        fills = {}
        for a in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
            assert a["iscrowd"] == 0 and isinstance(a["segmentation"], list)
            c = CLASSES.index(names[a["category_id"]])
            fills[c] = fills.get(c, False) | coco.annToMask(a).astype(bool)
        count = sum(f.astype(int) for f in fills.values())
        for c, fill in fills.items():
            np.testing.assert_array_equal(got[fill & (count == 1)], c)
            assert not (got == c)[~fill].any(), (img["file_name"], c)


def test_datumaro_s_coco_export_of_masks_is_read_exactly(tmp_path, route):
    """datumaro's COCO exporter in mask mode, as CVAT's "COCO 1.0" writes brush masks: RLE with ``iscrowd`` 1 on
    every annotation. A crowd of a labelling tool is pixels of its class, so wsss reads the masks back exactly (it
    used to read them as 255, ignore)."""
    _, masks = route
    _datumaro_dataset(masks, background=False).export(
        str(tmp_path / "coco"), "coco_instances", segmentation_mode="mask"
    )
    path = tmp_path / "coco" / "annotations" / "instances_default.json"
    anns = json.loads(path.read_text())["annotations"]
    assert anns and all(a["iscrowd"] == 1 and isinstance(a["segmentation"], dict) for a in anns)
    source = open_masks(path, CLASSES)
    for id, mask in masks.items():
        np.testing.assert_array_equal(source.read(source.find(tmp_path / f"{id}.jpg")), mask, err_msg=id)


def test_pycocotools_rle_and_label_studio_sdk_brush_are_read_exactly(tmp_path, route):
    """pycocotools' ``mask.encode`` (COCO RLE) and label-studio-sdk's ``mask2rle`` (Label Studio's brush RLE) encode
    the masks; wsss decodes both exactly, and its own RLE encoder writes label-studio-sdk's bytes."""
    from label_studio_sdk.converter import brush
    from pycocotools import mask as mask_utils

    from wsss.data.prepare.labelstudio import encode_rle

    _, masks = route
    images, annotations, tasks = [], [], []
    for n, (id, m) in enumerate(masks.items(), start=1):
        h, w = m.shape
        images.append({"id": n, "file_name": f"{id}.jpg", "height": h, "width": w})
        results = []
        for c in np.unique(m).tolist():
            rle = mask_utils.encode(np.asfortranarray(m == c, dtype=np.uint8))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": n,
                    "category_id": c,
                    "iscrowd": 0,
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                }
            )
            painted = (m == c).astype(np.uint8) * 255
            assert encode_rle(np.repeat(painted.ravel(), 4)) == brush.mask2rle(painted)
            results.append(
                {
                    "type": "brushlabels",
                    "original_width": w,
                    "original_height": h,
                    "value": {"format": "rle", "rle": brush.mask2rle(painted), "brushlabels": [CLASSES[c]]},
                }
            )
        tasks.append(
            {
                "id": n,
                "data": {"image": f"/data/upload/3/{n:08x}-{id}.jpg"},
                "annotations": [{"id": n, "result": results}],
            }
        )
    categories = [{"id": c, "name": name} for c, name in enumerate(CLASSES)]
    (tmp_path / "coco.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    (tmp_path / "ls.json").write_text(json.dumps(tasks))
    for path in (tmp_path / "coco.json", tmp_path / "ls.json"):
        got = _read_back(path, masks, tmp_path)
        for id, mask in masks.items():
            np.testing.assert_array_equal(got[id], mask, err_msg=f"{path} {id}")


# ---- wsss writes, the tools read, and wsss reads back -----------------------------------------------------------


def _datumaro_class_maps(dataset, masks) -> dict[str, np.ndarray]:
    """{id: class map} of a datumaro import: each Mask annotation painted with its label's class index."""
    from datumaro.components.annotation import AnnotationType, Mask

    names = [c.name for c in dataset.categories()[AnnotationType.label]]
    out = {}
    for item in dataset:
        got = np.zeros(masks[item.id].shape, np.uint8)
        for ann in item.annotations:
            if isinstance(ann, Mask):
                got[ann.image.astype(bool)] = CLASSES.index(
                    "background" if names[ann.label] == "background" else names[ann.label]
                )
        out[item.id] = got
    return out


@pytest.mark.parametrize("fmt", ["coco", "cvat"])
def test_datumaro_imports_the_coco_and_cvat_exports_as_the_masks(tmp_path, route, fmt):
    """datumaro imports ``wsss export masks`` (COCO: RLE, iscrowd 0; CVAT: Segmentation mask 1.1): its masks equal
    the route's, and ``--masks`` reads the export back equal again."""
    from datumaro.components.dataset import Dataset

    src, masks = route
    res = export_masks(src, fmt, tmp_path / fmt, progress=False)
    if fmt == "coco":
        (tmp_path / fmt / "images").mkdir()  # datumaro looks for the photos there; CVAT reads the file alone
    dataset = Dataset.import_from(str(tmp_path / fmt), "coco_instances" if fmt == "coco" else "voc_segmentation")
    got = _datumaro_class_maps(dataset, masks)
    assert sorted(got) == sorted(masks)
    back = _read_back(res.masks_path, masks, src.parent / "data" / "JPEGImages")
    for id, mask in masks.items():
        np.testing.assert_array_equal(got[id], mask, err_msg=f"datumaro {fmt} {id}")
        np.testing.assert_array_equal(back[id], mask, err_msg=f"--masks {fmt} {id}")


def test_pycocotools_reads_the_coco_export(tmp_path, route):
    """pycocotools' COCO API loads the COCO export; each annotation's mask is its class's pixels, iscrowd 0."""
    from pycocotools.coco import COCO

    src, masks = route
    res = export_masks(src, "coco", tmp_path / "coco", progress=False)
    coco = COCO(str(res.masks_path))
    for img in coco.dataset["images"]:
        mask = masks[img["file_name"].rsplit(".", 1)[0]]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        assert sorted(a["category_id"] for a in anns) == [c for c in np.unique(mask).tolist() if c]
        for a in anns:
            assert a["iscrowd"] == 0
            np.testing.assert_array_equal(coco.annToMask(a).astype(bool), mask == a["category_id"])


def test_labelme_reads_the_labelme_export(tmp_path, route):
    """labelme's reader loads each file (the photo found by its imagePath) and its ``shapes_to_label`` draws the
    route's masks: exactly on the nested masks, within POLYGON_EDGE_SHARE of the edge pixels on the ragged ones;
    ``--masks`` reads what labelme draws."""
    from labelme import LabelFile
    from labelme.utils import shapes_to_label

    src, masks = route
    export_masks(src, "labelme", tmp_path / "lm", progress=False)
    values = {"_background_": 0, **{n: i for i, n in enumerate(CLASSES)}}
    back = _read_back(tmp_path / "lm", masks, src.parent / "data" / "JPEGImages")
    shares = {}
    for id, mask in masks.items():
        label_file = LabelFile(str(tmp_path / "lm" / f"{id}.json"))
        assert (tmp_path / "lm" / label_file.image_path).resolve().is_file()
        got, _ = shapes_to_label(mask.shape, label_file.shapes, values)
        np.testing.assert_array_equal(back[id], got, err_msg=f"--masks against labelme {id}")
        shares[id] = _edge_share(got.astype(np.uint8), mask)
    assert shares["a"] == shares["b"] == 0.0
    print(f"LabelMe polygons: share of edge pixels that differ, per mask: {shares}")
    assert max(shares.values()) <= POLYGON_EDGE_SHARE, shares


def test_label_studio_sdk_decodes_the_label_studio_tasks(tmp_path, route):
    """label-studio-sdk's brush decoder reads each prediction's RLE as the route's class pixels; the labelling config
    names the regions' from_name / to_name; accepted as annotations (what Label Studio exports once a person submits
    the prediction), ``--masks`` reads them back equal."""
    from label_studio_sdk.converter import brush

    src, masks = route
    export_masks(src, "labelstudio", tmp_path / "ls", progress=False)
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    config = (tmp_path / "ls" / "label_config.xml").read_text()
    for n, task in enumerate(tasks, start=1):
        id = task["data"]["image"].rsplit("=", 1)[-1].rsplit(".", 1)[0]
        got = np.zeros(masks[id].shape, np.uint8)
        for region in task["predictions"][0]["result"]:
            assert f'name="{region["from_name"]}" toName="{region["to_name"]}"' in config
            h, w = region["original_height"], region["original_width"]
            alpha = np.reshape(brush.decode_rle(region["value"]["rle"]), [h, w, 4])[:, :, 3]
            got[alpha > 0] = CLASSES.index(region["value"]["brushlabels"][0])
        np.testing.assert_array_equal(got, masks[id], err_msg=id)
        task["id"], task["annotations"] = n, [{"id": n, "result": task.pop("predictions")[0]["result"]}]
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    back = _read_back(tmp_path / "export.json", masks, src.parent / "data" / "JPEGImages")
    for id, mask in masks.items():
        np.testing.assert_array_equal(back[id], mask, err_msg=id)
