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

The file is hostile until checked: its structure when it is read (:func:`check_coco`), each segmentation before
pycocotools decodes it (:func:`annotation_rle`), whose C code trusts its input.

Conversion runs in a worker pool with a progress bar, one image at a time; existing masks are kept,
so an interrupted run continues; every file is written atomically.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import defaultdict
from collections.abc import Callable
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
from wsss.utils.io import IGNORE, id_problem, max_image_pixels, per_id_path, read_json, read_label_png, save_label_png

#: Official COCO 2014 counts: all images, and images with at least one annotation (docs/datasets.md#coco).
OFFICIAL_IMAGES = {"train": 82783, "val": 40504}
OFFICIAL_LISTS = {"train": 82081, "val": 40137}
#: How far beyond an edge a polygon point may lie, in the image's own width or height (and a pixel): farther, the
#: file's coordinates are wrong. pycocotools' filler works in C ints at 5 times the scale: a point of 1e9 crashes it.
FAR_OUTSIDE = 1.0
#: How long a polygon's edges may run, in multiples of the image's height + width: pycocotools' filler allocates memory
#: for every point along them, so a zigzag of a few thousand points inside the slack takes gigabytes.
MAX_EDGE_RUN = 100
#: Characters of one compressed RLE count: 6 hold any difference of two counts up to ``MAX_PIXELS``.
MAX_RLE_CHARS = 6


def category_index(categories: list[dict[str, Any]]) -> tuple[dict[int, int], list[str]]:
    """{COCO category id: class index 1..K} by sorted category id, and the K+1 class names."""
    cats = sorted(categories, key=lambda c: int(c["id"]))
    if len(cats) > 254:
        raise DataError(f"{len(cats)} categories do not fit an 8-bit mask with 255 as ignore")
    return {int(c["id"]): i + 1 for i, c in enumerate(cats)}, ["background"] + [str(c["name"]) for c in cats]


def annotation_rle(segm: Any, h: int, w: int, where: str = "annotation") -> dict[str, Any] | None:
    """The RLE of a COCO ``segmentation`` (polygons, uncompressed RLE with ``counts`` a list, compressed RLE with
    ``counts`` a string) on an (h, w) image; None for one that encloses no area (no polygon of 3 points: a box with an
    empty segmentation). Every value is checked before pycocotools reads it, a DataError naming ``where``."""
    from pycocotools import mask as mask_utils

    if isinstance(segm, list):
        polys = [_polygon(p, h, w, f"{where} polygon {i}") for i, p in enumerate(segm, start=1)]
        polys = [p for p in polys if len(p) >= 6]  # fewer than 3 points enclose nothing
        return mask_utils.merge(mask_utils.frPyObjects(polys, h, w)) if polys else None
    if not (isinstance(segm, dict) and "counts" in segm and "size" in segm):
        raise DataError(f"{where}: unknown segmentation format ({type(segm).__name__})")
    if segm["size"] != [h, w]:
        raise DataError(f"{where}: RLE size {segm['size']!r:.40} differs from the image size [{h}, {w}]")
    counts = segm["counts"]
    if isinstance(counts, list):
        _check_run_lengths(counts, h, w, where)
        return mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    if isinstance(counts, str):
        _check_run_lengths(rle_string_counts(counts, where), h, w, where)
        return {"size": [h, w], "counts": counts.encode("ascii")}
    raise DataError(
        f"{where}: RLE counts must be a list of run lengths or a compressed string, got {type(counts).__name__}"
    )


def _polygon(poly: Any, h: int, w: int, where: str) -> list[float]:
    """A polygon's coordinates as floats: x, y pairs, finite, none farther beyond an edge than ``FAR_OUTSIDE`` times
    the image's side and a pixel, edges no longer than ``MAX_EDGE_RUN`` times the image's height + width."""
    try:
        xy = np.asarray(poly, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        xy = np.zeros((1, 1))  # not a flat list of numbers: refused below
    if xy.ndim != 1 or xy.size % 2:
        raise DataError(f"{where}: not a list of x, y coordinates ({poly!r:.60})")
    xy = xy.reshape(-1, 2)
    if not np.isfinite(xy).all():
        raise DataError(f"{where}: coordinate {xy[~np.isfinite(xy)][0]} is not a finite number")
    slack = FAR_OUTSIDE * np.array([w, h]) + 1.0
    far = ((xy < -slack) | (xy > np.array([w, h]) + slack)).any(axis=1)
    if far.any():
        x, y = xy[far][0].tolist()
        raise DataError(
            f"{where}: point ({x:g}, {y:g}) lies far outside the {w}x{h} image (more than its own width "
            "or height past an edge): the file's coordinates are wrong"
        )
    run = float(np.abs(xy - np.roll(xy, 1, axis=0)).max(axis=1, initial=0.0).sum())  # as the filler walks it
    if run > MAX_EDGE_RUN * (h + w):
        raise DataError(
            f"{where}: its edges run {run:.0f} pixels, more than {MAX_EDGE_RUN} times the image's height "
            f"and width together: no outline of an object"
        )
    return xy.ravel().tolist()


def rle_string_counts(counts: str, where: str = "annotation") -> list[int]:
    """The run lengths of a compressed RLE string, decoded as pycocotools' ``rleFrString`` decodes it: each count in
    5-bit groups of characters from '0', the last group's bit 0x10 its sign, each count after the third stored as
    its difference to the one two before. A string that C code would misread is a DataError."""
    out: list[int] = []
    value = chars = 0
    for ch in counts:
        c = ord(ch) - 48
        if not 0 <= c < 64:
            raise DataError(f"{where}: RLE counts hold {ch!r}, which is no character of a compressed RLE")
        value |= (c & 0x1F) << (5 * chars)
        chars += 1
        if c & 0x20:  # more groups follow
            if chars == MAX_RLE_CHARS:
                raise DataError(f"{where}: RLE counts hold a count of more than {MAX_RLE_CHARS} characters")
            continue
        if c & 0x10:
            value |= -1 << (5 * chars)
        out.append(value + (out[-2] if len(out) > 2 else 0))
        value = chars = 0
    if chars:
        raise DataError(f"{where}: RLE counts end inside a count")
    return out


def _check_run_lengths(counts: list[Any], h: int, w: int, where: str) -> None:
    """Run lengths that decode to exactly h x w pixels: pycocotools writes them out unchecked, so a short sum leaves
    pixels of uninitialised memory and a long one writes past the mask."""
    n = h * w
    bad = next((c for c in counts if not (isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= n)), None)
    if bad is not None:
        raise DataError(f"{where}: RLE count {bad!r:.40} is not a run length of 0..{n} pixels")
    if sum(counts) != n:
        raise DataError(f"{where}: RLE counts sum to {sum(counts)} pixels, the image has {h}x{w} = {n}")


def has_area(segm: Any) -> bool:
    """Whether a (checked) segmentation can enclose an area: an RLE, or a polygon of 3 points or more."""
    return isinstance(segm, dict) or any(len(p) >= 6 for p in segm)


def _decode(rle: dict[str, Any]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():  # pycocotools' numpy-2 copy-keyword deprecation, harmless
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).view(bool)


def annotation_mask(segm: Any, h: int, w: int, where: str = "annotation") -> np.ndarray:
    """(h, w) bool mask of a COCO ``segmentation`` (:func:`annotation_rle`)."""
    rle = annotation_rle(segm, h, w, where)
    return np.zeros((h, w), dtype=bool) if rle is None else _decode(rle)


def semantic_mask(anns: list[dict[str, Any]], h: int, w: int, crowds_as_class: bool = False) -> np.ndarray:
    """(h, w) uint8 class map from annotations carrying ``cls`` (1..K), ``iscrowd``, ``id`` and
    ``segmentation``, by the rule of the module docstring (crowd 255 first; then larger instances
    first, the smaller on top; ties: later annotation id on top). ``crowds_as_class``: crowds are painted with their
    class instead of 255 (a labelling tool's crowd is pixels of its class, its instances unsplit). Areas are read
    off the RLEs, so one mask is decoded at a time."""
    from pycocotools import mask as mask_utils

    out = np.zeros((h, w), dtype=np.uint8)
    instances = []
    for a in anns:
        rle = annotation_rle(a["segmentation"], h, w, where=f"annotation {a['id']}")
        if rle is None:
            continue
        if a.get("iscrowd", 0):
            out[_decode(rle)] = int(a["cls"]) if crowds_as_class else IGNORE
        else:
            instances.append((-int(mask_utils.area(rle)), int(a["id"]), rle, int(a["cls"])))
    for _, _, rle, cls in sorted(instances, key=lambda t: (t[0], t[1])):
        out[_decode(rle)] = cls
    return out


def _convert(job: tuple[str, int, int, list[dict[str, Any]], str, int]) -> tuple[str, np.ndarray]:
    """Worker: write one mask unless it exists (then it is read back); returns (id, its multi-hot)."""
    id, h, w, anns, out, num_classes = job
    if Path(out).is_file():
        mask = read_label_png(out)
    else:
        try:
            mask = semantic_mask(anns, h, w)
        except DataError as e:
            raise DataError(f"image {id}: {e}") from None
        save_label_png(out, mask)
    return id, labels_from_mask(mask, num_classes)


def load_coco_json(path: Path) -> dict[str, Any]:
    """A COCO instances file, read and its structure checked (:func:`check_coco`)."""
    if not path.exists():
        raise DataError(f"{path}: annotation file not found")
    data = read_json(path, "COCO json")
    check_coco(data, path)
    return data


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_segmentation(v: Any) -> bool:
    return (isinstance(v, list) and all(isinstance(p, list) for p in v)) or (
        isinstance(v, dict) and "counts" in v and "size" in v
    )


_Fields = dict[str, tuple[Callable[[Any], bool], str]]
_ID: _Fields = {"id": (_is_int, "an integer")}
_SIDE = (lambda v: _is_int(v) and v > 0, "a positive integer")
COCO_FIELDS: dict[str, _Fields] = {
    "categories": {**_ID, "name": (lambda v: isinstance(v, str), "a string")},
    "images": {**_ID, "file_name": (lambda v: isinstance(v, str), "a string"), "height": _SIDE, "width": _SIDE},
    "annotations": {
        **_ID,
        "image_id": (_is_int, "an integer"),
        "category_id": (_is_int, "an integer"),
        "segmentation": (_is_segmentation, "a list of polygons or an RLE object with 'counts' and 'size'"),
    },
}


def check_coco(data: Any, path: Path) -> None:
    """The structure of a COCO instances file, checked once when it is read, before any field is used: the three
    lists, each entry's fields and their types (``COCO_FIELDS``; ``iscrowd`` 0 or 1 where given), image and category
    ids unique, image sizes within ``max_image_pixels``. A DataError names the file and the entry."""
    limit = max_image_pixels()
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a COCO instances file (a JSON {type(data).__name__}, not an object)")
    for key, fields in COCO_FIELDS.items():
        if key not in data:
            raise DataError(f"{path}: not a COCO instances file (no {key!r})")
        if not isinstance(data[key], list):
            raise DataError(f"{path}: {key!r} must be a list, got {type(data[key]).__name__}")
        seen: dict[int, int] = {}
        for i, entry in enumerate(data[key]):
            problem = _entry_problem(entry, fields)
            if problem is None and key == "annotations" and entry.get("iscrowd", 0) not in (0, 1):
                problem = f"'iscrowd' must be 0 or 1, got {entry['iscrowd']!r:.40}"
            if problem is None and key == "images" and entry["height"] * entry["width"] > (limit or math.inf):
                problem = (
                    f"{entry['width']}x{entry['height']} is more than the {limit} pixels an image may "
                    "have (Pillow refuses a photo that large)"
                )
            if problem is None and key != "annotations":  # two annotations of one id mix up nothing
                if entry["id"] in seen:
                    problem = f"its id is also that of {key}[{seen[entry['id']]}]"
                seen[entry["id"]] = i
            if problem is not None:
                name = f" (id {entry['id']!r:.40})" if isinstance(entry, dict) and "id" in entry else ""
                raise DataError(f"{path}: {key}[{i}]{name}: {problem}")


def _entry_problem(entry: Any, fields: _Fields) -> str | None:
    if not isinstance(entry, dict):
        return f"a JSON {type(entry).__name__}, not an object"
    for name, (ok, what) in fields.items():
        if name not in entry:
            return f"no {name!r}"
        if not ok(entry[name]):
            return f"{name!r} must be {what}, got {entry[name]!r:.40}"
    return None


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
    remove_outputs(
        release_outputs(out, "coco", "wsss prepare coco", images=images, overwrite=overwrite, inputs={"--coco": coco})
    )
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
