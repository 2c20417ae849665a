"""``wsss prepare coco``: MS COCO instance annotations -> VOC-style class masks (docs/datasets.md#coco).

Input ``COCO`` holds ``annotations/instances_{train,val}2014.json`` and the images in
``{train,val}2014/``. Output ``ROOT`` in the toolkit's layout, flat (ids are the image file stems,
``COCO_train2014_000000000009``):

- ``SegmentationClass/<id>.png``: palette PNG of class indices. Categories are numbered 1..80 in
  the order of their sorted COCO ids (the standard order of ``COCO_CLASSES``), 0 = background.
- ``ImageSets/Segmentation/{train,val}.txt``: the images with at least one annotation (82,081 and
  40,137 on COCO 2014, the official WSSS lists), and ``val_part.txt``: a fixed sample of
  ``val_part`` val ids (5,000, the size of SeCo's in-training subset) drawn with ``seed``;
- ``cls_labels.npy``: {id: float32 multi-hot (80,)} of the classes present in the mask written
  (so labels and masks agree and ``wsss check-data`` passes; a category annotated only as a crowd,
  which is 255 in the mask, is not a label, and an image with crowds only has an empty label);
- ``classes.txt``: background + the category names (81 lines), ``JPEGImages/`` (hard links).

Overlaps and crowds (a documented choice, the official conversions leave it to annotation order):
crowd regions are painted first with 255 (ignore); then the non-crowd instances in decreasing pixel
area, so where instances overlap **the smaller instance is on top** (it is usually the one in
front: a cup on a table, a person on a couch); equal areas go by annotation id, the later on top.
An instance pixel inside a crowd region keeps the instance's class.

Conversion runs in a worker pool with a progress bar, one image at a time; existing masks are kept,
so an interrupted run continues; every file is written atomically.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from wsss.core.errors import DataError
from wsss.data.classes import write_classes
from wsss.data.prepare import (
    PrepareSummary,
    default_workers,
    first,
    mark_prepared,
    parallel_map,
    place_image,
    release_outputs,
    remove_outputs,
    remove_stale_outputs,
    write_split,
)
from wsss.data.voc import labels_from_mask, write_cls_labels
from wsss.utils.io import id_problem, per_id_path, read_label_png, save_label_png

#: Official COCO 2014 counts: all images, and images with at least one annotation (docs/datasets.md#coco).
OFFICIAL_IMAGES = {"train": 82783, "val": 40504}
OFFICIAL_LISTS = {"train": 82081, "val": 40137}
IGNORE = 255


def category_index(categories: list[dict[str, Any]]) -> tuple[dict[int, int], list[str]]:
    """{COCO category id: class index 1..K} by sorted category id, and the K+1 class names."""
    cats = sorted(categories, key=lambda c: int(c["id"]))
    if len(cats) > 254:
        raise DataError(f"{len(cats)} categories do not fit an 8-bit mask with 255 as ignore")
    return {int(c["id"]): i + 1 for i, c in enumerate(cats)}, ["background"] + [str(c["name"]) for c in cats]


def annotation_mask(segm: Any, h: int, w: int, where: str = "annotation") -> np.ndarray:
    """(h, w) bool mask of a COCO ``segmentation``: polygons, uncompressed RLE (``counts`` a list)
    or compressed RLE (``counts`` a string)."""
    from pycocotools import mask as mask_utils

    if isinstance(segm, list):
        polys = [p for p in segm if len(p) >= 6]  # fewer than 3 points enclose nothing
        if not polys:
            return np.zeros((h, w), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
    elif isinstance(segm, dict) and "counts" in segm and "size" in segm:
        if [int(v) for v in segm["size"]] != [h, w]:
            raise DataError(f"{where}: RLE size {segm['size']} differs from the image size [{h}, {w}]")
        if isinstance(segm["counts"], list):
            rle = mask_utils.frPyObjects(segm, h, w)
        else:
            counts = segm["counts"]
            rle = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    else:
        raise DataError(f"{where}: unknown segmentation format ({type(segm).__name__})")
    with warnings.catch_warnings():  # pycocotools' numpy-2 copy-keyword deprecation, harmless
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def semantic_mask(anns: list[dict[str, Any]], h: int, w: int) -> np.ndarray:
    """(h, w) uint8 class map from annotations carrying ``cls`` (1..K), ``iscrowd``, ``id`` and
    ``segmentation``, by the rule of the module docstring (crowd 255 first; then larger instances
    first, the smaller on top; ties: later annotation id on top)."""
    out = np.zeros((h, w), dtype=np.uint8)
    instances = []
    for a in anns:
        m = annotation_mask(a["segmentation"], h, w, where=f"annotation {a['id']}")
        if a.get("iscrowd", 0):
            out[m] = IGNORE
        else:
            instances.append((-int(m.sum()), int(a["id"]), m, int(a["cls"])))
    for _, _, m, cls in sorted(instances, key=lambda t: (t[0], t[1])):
        out[m] = cls
    return out


def _convert(job: tuple[str, int, int, list[dict[str, Any]], str, int]) -> tuple[str, np.ndarray]:
    """Worker: write one mask unless it exists (then it is read back); returns (id, its multi-hot)."""
    id, h, w, anns, out, num_classes = job
    if Path(out).is_file():
        mask = read_label_png(out)
    else:
        mask = semantic_mask(anns, h, w)
        save_label_png(out, mask)
    return id, labels_from_mask(mask, num_classes)


def load_coco_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read COCO json ({e})") from e
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(f"{path}: not a COCO instances file (no {key!r})")
    return data


def annotations_by_image(
    data: dict[str, Any], cat_index: dict[int, int], json_path: Path
) -> dict[int, list[dict[str, Any]]]:
    """image id -> its annotations (id, class index, iscrowd, segmentation)."""
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for a in data["annotations"]:
        if int(a["category_id"]) not in cat_index:
            raise DataError(f"{json_path}: annotation {a.get('id')} has unknown category {a['category_id']}")
        by_image[int(a["image_id"])].append(
            {
                "id": int(a["id"]),
                "cls": cat_index[int(a["category_id"])],
                "iscrowd": int(a.get("iscrowd", 0)),
                "segmentation": a["segmentation"],
            }
        )
    return by_image


def _mask_jobs(
    data: dict[str, Any],
    by_image: dict[int, list[dict[str, Any]]],
    image_dir: Path,
    json_path: Path,
    images: str,
    out: Path,
    num_classes: int,
) -> tuple[list[tuple], list[str], list[Path]]:
    """The mask conversion jobs of the annotated images (by file name), their ids and image files."""
    jobs, ids, no_file, srcs = [], [], [], []
    for im in sorted(data["images"], key=lambda im: im["file_name"]):
        anns = by_image.get(int(im["id"]))
        if not anns:
            continue
        problem = id_problem(str(im["file_name"]))
        if problem is not None:  # the file name becomes the id and output names: a plain name only
            raise DataError(f"{json_path}: image {im['id']} has file_name {im['file_name']!r} ({problem})")
        id = Path(im["file_name"]).stem
        src = image_dir / im["file_name"]
        if images != "none" and not src.is_file():
            no_file.append(str(src))
            continue
        ids.append(id)
        srcs.append(src)
        mask_path = str(per_id_path(out / "SegmentationClass", id, ".png"))
        jobs.append((id, int(im["height"]), int(im["width"]), anns, mask_path, num_classes))
    if no_file:
        raise DataError(f"{image_dir}: {len(no_file)} annotated images are missing: {first(no_file)}")
    return jobs, ids, srcs


def prepare_coco(
    coco: str | os.PathLike,
    out: str | os.PathLike,
    *,
    year: str = "2014",
    splits: tuple[str, ...] = ("train", "val"),
    images: str = "link",
    val_part: int = 5000,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> PrepareSummary:
    """Convert COCO ``splits`` of ``year`` at ``coco`` into the VOC layout at ``out`` (module docstring). An ``out``
    holding files of another dataset is refused unless ``overwrite`` replaces them (``prepare.release_outputs``); a
    COCO dataset prepared there before is continued."""
    coco, out = Path(coco), Path(out)
    remove_outputs(release_outputs(out, "coco", "wsss prepare coco", images=images, overwrite=overwrite,
                                   inputs={"--coco": coco}))  # fmt: skip
    remove_stale_outputs(out, "SegmentationClass", "JPEGImages")
    workers = default_workers() if workers is None else workers
    summary = PrepareSummary(out=out)
    table: dict[str, np.ndarray] = {}
    names: list[str] | None = None
    for split in splits:
        json_path = coco / "annotations" / f"instances_{split}{year}.json"
        data = load_coco_json(json_path)
        cat_index, split_names = category_index(data["categories"])
        if names is not None and split_names != names:
            raise DataError(f"{json_path}: categories differ from those of the previous split")
        names = split_names
        by_image = annotations_by_image(data, cat_index, json_path)
        image_dir = coco / f"{split}{year}"
        jobs, ids, srcs = _mask_jobs(data, by_image, image_dir, json_path, images, out, len(names))
        del data, by_image
        for id, vec in parallel_map(_convert, jobs, workers=workers, desc=f"masks {split}", progress=progress):
            table[id] = vec
        placed = 0
        if images != "none":
            from tqdm import tqdm

            for src in tqdm(srcs, desc=f"images {split}", unit="img", disable=not progress, dynamic_ncols=True):
                placed += place_image(src, per_id_path(out / "JPEGImages", src.stem, src.suffix.lower()), images)
        write_split(out, split, ids)
        n_images = len({j[0] for j in jobs})
        summary.counts[f"{split}_annotated_images"] = n_images
        summary.counts[f"{split}_images_placed"] = placed
        if split in OFFICIAL_LISTS and year == "2014" and n_images != OFFICIAL_LISTS[split]:
            summary.warnings.append(
                f"{split}: {n_images} annotated images, the official {split}{year} list has {OFFICIAL_LISTS[split]}"
            )
        if split == "val" and val_part:
            rng = np.random.default_rng(seed)
            part = sorted(rng.choice(ids, size=min(val_part, len(ids)), replace=False).tolist())
            write_split(out, "val_part", part)
            summary.counts["val_part"] = len(part)
    assert names is not None
    write_cls_labels(out, table)
    write_classes(out, names)
    mark_prepared(out, "coco")
    summary.counts["cls_labels"] = len(table)
    summary.counts["classes"] = len(names)
    return summary
