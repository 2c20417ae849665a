"""``wsss export masks SRC --format coco|cvat|labelme|labelstudio --out DIR``: masks as a labelling tool's
pre-annotations, to be corrected there and read back through ``--masks`` (docs/export.md#masks-for-a-labelling-tool).

``SRC`` is a route's folder (its ``masks/`` and the class names of ``data_facts.json``) or a run's predictions
folder (``RUN/predictions/<split>``: the class names of the run's ``data.root``). Each photo's file name is its
dataset's (``JPEGImages/<id>.*``); a mask of no photo is named ``<id>.jpg`` and said in a warning.

- ``coco``: ``annotations/instances_default.json`` (CVAT's COCO 1.0 layout): one annotation per class per photo, its
  mask as compressed RLE, ``iscrowd`` 0; category ids are the class indices.
- ``cvat``: "Segmentation mask 1.1": ``labelmap.txt``, ``SegmentationClass/<id>.png`` in the class colours (VOC's
  palette), ``ImageSets/Segmentation/default.txt``.
- ``labelme``: ``<id>.json`` per photo, ``imagePath`` the photo relative to DIR; polygons traced from the mask, not
  ``mask`` shapes, because LabelMe edits a polygon's points but cannot edit a mask shape's pixels.
- ``labelstudio``: ``tasks.json`` (tasks with ``predictions``: one brush region per class, Label Studio's RLE) and
  ``label_config.xml``, the labelling config whose names the regions use.

Pixels of value 255 (ignore) have no name in the tools: they are written as background, and said in a warning.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np
from PIL import Image

from wsss.core.choices import MASK_FORMATS, ROUTE_FACTS_FILE, ROUTE_MASKS_DIR
from wsss.core.errors import DataError, UsageError
from wsss.core.files import atomic_write, check_output_folder
from wsss.data.classes import read_classes
from wsss.data.prepare import first
from wsss.data.prepare.labelstudio import encode_rle
from wsss.data.voc import find_image
from wsss.utils.io import IGNORE, image_size, read_label_png, voc_palette
from wsss.utils.progress import progress_bar

#: Label Studio's names in the tasks and the labelling config.
LS_IMAGE, LS_BRUSH, LS_POLYGON = "image", "label", "polygon"
#: ``data.image`` of a task: Label Studio's local-files URL, the photo's file name after it (docs/export.md).
LS_LOCAL_FILES = "/data/local-files/?d="
MODEL_VERSION = "wsss"
Masks = Iterator[tuple[str, str, np.ndarray, "Path | None"]]


@dataclass
class MaskSet:
    """The masks to export: (id, mask file, photo file or None) each, the class names, the SRC they come from."""

    src: Path
    class_names: list[str]
    items: list[tuple[str, Path, Path | None]]


@dataclass
class MasksExport:
    """What :func:`export_masks` wrote: the files, what ``--masks`` reads back as it is (None for Label Studio's
    tasks: its export of the project is read back), the photos, the warnings."""

    out: Path
    format: str
    masks_path: Path | None
    photos: int
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def mask_set(src: str | os.PathLike) -> MaskSet:
    """The masks of a route's folder or of a run's predictions folder, with their class names and photos."""
    src = Path(src)
    if (src / ROUTE_FACTS_FILE).is_file() and (src / ROUTE_MASKS_DIR).is_dir():
        try:
            facts = json.loads((src / ROUTE_FACTS_FILE).read_text(encoding="utf-8"))
            root, names = Path(facts["root"]), [str(n) for n in facts["class_names"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{src / ROUTE_FACTS_FILE}: cannot read the route's class names ({e})") from None
        folder = src / ROUTE_MASKS_DIR
    elif src.is_dir() and (src.parent.parent / "config.yaml").is_file():
        from wsss.core.config import load_run_config, require_data_root

        root = Path(require_data_root(load_run_config(src.parent.parent)))
        names, folder = read_classes(root), src
    else:
        raise UsageError(
            f"{src}: not a route's folder (masks/ and {ROUTE_FACTS_FILE}) nor a run's predictions folder "
            "(RUN/predictions/<split>)"
        )
    masks = sorted(p for p in folder.glob("*.png") if not p.name.startswith("."))
    if not masks:
        raise DataError(f"{folder}: no masks (.png) to export")
    return MaskSet(src, names, [(m.stem, m, find_image(root, m.stem)) for m in masks])


def _masks(masks: MaskSet, progress: bool, said: dict[str, dict[str, None]]) -> Masks:
    """(id, photo file name, mask, photo path or None) of each mask, checked: its values are classes, its size its
    photo's."""
    for id, path, photo in progress_bar(masks.items, desc="export masks", disable=not progress):
        mask = read_label_png(path)
        bad = np.unique(mask[(mask >= len(masks.class_names)) & (mask != IGNORE)])
        if bad.size:
            raise DataError(f"{path}: values {bad.tolist()} are not class indices 0..{len(masks.class_names) - 1}")
        if (mask == IGNORE).any():
            said["ignore"][path.name] = None
            mask = np.where(mask == IGNORE, 0, mask).astype(np.uint8)
        if photo is None:
            said["no_photo"][id] = None
            yield id, f"{id}.jpg", mask, None
            continue
        size = image_size(photo)
        if mask.shape != size:
            raise DataError(
                f"{path}: mask is {mask.shape[1]}x{mask.shape[0]}, its photo {photo} is {size[1]}x{size[0]}"
            )
        yield id, photo.name, mask, photo


def export_masks(
    src: str | os.PathLike,
    fmt: str,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: bool = True,
    image_url: str | None = None,
) -> MasksExport:
    """Write the masks of ``src`` (:func:`mask_set`) in ``fmt`` (:data:`MASK_FORMATS`) into the folder ``out``.

    UsageError for ``out`` inside ``src`` (nothing is written there), or for a file it would replace without
    ``overwrite``; DataError for a mask that is not one of the class list's or not its photo's size. Every file is
    written atomically."""
    if fmt not in MASK_FORMATS:
        raise UsageError(f"--format {fmt!r}: one of {', '.join(MASK_FORMATS)}")
    masks = mask_set(src)
    out = check_output_folder(out, "the folder to write the export in")
    if out.resolve() == masks.src.resolve() or masks.src.resolve() in out.resolve().parents:
        raise UsageError(f"{out}: inside {masks.src}, which is read; --out names a folder outside it")
    planned = _planned(fmt, out, [id for id, _, _ in masks.items])
    there = [p for p in planned if p.exists()]
    if there and not overwrite:
        raise UsageError(
            f"{out}: {len(there)} file(s) of an export are there already ({first(p.name for p in there)})"
            "; pass --overwrite to replace them"
        )
    said: dict[str, dict[str, None]] = {"ignore": {}, "no_photo": {}}
    writer = WRITERS[fmt]
    files = writer(out, masks.class_names, _masks(masks, progress, said), image_url or LS_LOCAL_FILES)
    back = {"coco": planned[0], "cvat": out, "labelme": out}.get(fmt)
    return MasksExport(out, fmt, back, len(masks.items), files, _warnings(masks, said))


def _planned(fmt: str, out: Path, ids: list[str]) -> list[Path]:
    """The files an export writes, what ``--masks`` reads back first."""
    if fmt == "coco":
        return [out / "annotations" / "instances_default.json"]
    if fmt == "cvat":
        segmentation = [out / "SegmentationClass" / f"{id}.png" for id in ids]
        return [out / "labelmap.txt", out / "ImageSets" / "Segmentation" / "default.txt", *segmentation]
    if fmt == "labelme":
        return [out / f"{id}.json" for id in ids]
    return [out / "tasks.json", out / "label_config.xml"]


def _warnings(masks: MaskSet, said: dict[str, dict[str, None]]) -> list[str]:
    out = []
    if said["ignore"]:
        out.append(
            f"{len(said['ignore'])} mask(s) hold ignore pixels (255), which a labelling tool has no name for: "
            f"written as background ({first(said['ignore'])})"
        )
    if said["no_photo"]:
        out.append(
            f"{len(said['no_photo'])} mask(s) have no photo in the dataset, so their photos are named "
            f"<id>.jpg and their size is the mask's ({first(said['no_photo'])})"
        )
    return out


def write_coco(out: Path, names: list[str], masks: Masks, image_url: str = "") -> list[Path]:
    """COCO instances: one annotation a class a photo, its mask as compressed RLE, iscrowd 0."""
    from pycocotools import mask as mask_utils

    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for n, (_, photo, mask, _) in enumerate(masks, start=1):
        images.append({"id": n, "file_name": photo, "height": int(mask.shape[0]), "width": int(mask.shape[1])})
        for c in np.unique(mask).tolist():
            if c == 0:
                continue
            rle = mask_utils.encode(np.asfortranarray(mask == c, dtype=np.uint8))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": n,
                    "category_id": c,
                    "iscrowd": 0,
                    "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
                    "area": float(mask_utils.area(rle)),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                }
            )
    data = {
        "info": {"description": "masks exported by wsss export masks"},
        "licenses": [],
        "categories": [{"id": c, "name": name, "supercategory": ""} for c, name in enumerate(names) if c],
        "images": images,
        "annotations": annotations,
    }
    path = out / "annotations" / "instances_default.json"
    with atomic_write(path, "w") as f:
        json.dump(data, f)
    return [path]


def write_cvat(out: Path, names: list[str], masks: Masks, image_url: str = "") -> list[Path]:
    """CVAT's "Segmentation mask 1.1": the class colours of ``labelmap.txt`` painted in ``SegmentationClass/``."""
    palette = voc_palette(256)
    files, ids = [], []
    for id, _, mask, _ in masks:
        path = out / "SegmentationClass" / f"{id}.png"
        with atomic_write(path) as f:
            Image.fromarray(palette[mask]).save(f, format="PNG")
        files.append(path)
        ids.append(id)
    lines = ["# label:color_rgb:parts:actions"]
    lines += [
        f"{'background' if c == 0 else name}:{','.join(map(str, palette[c].tolist()))}::"
        for c, name in enumerate(names)
    ]
    for path, text in ((out / "labelmap.txt", lines), (out / "ImageSets" / "Segmentation" / "default.txt", ids)):
        with atomic_write(path, "w") as f:
            f.write("".join(f"{line}\n" for line in text))
        files.append(path)
    return files


def write_labelme(out: Path, names: list[str], masks: Masks, image_url: str = "") -> list[Path]:
    """A LabelMe file per photo: the mask's polygons (:func:`mask_polygons`), ``imagePath`` the photo from ``out``."""
    from wsss.data.prepare.annotations import BACKGROUND_NAMES

    files = []
    for id, photo, mask, path in masks:
        shapes = [
            {
                "label": names[c] if c else BACKGROUND_NAMES[1],
                "points": xy.tolist(),
                "group_id": None,
                "description": "",
                "shape_type": "polygon",
                "flags": {},
                "mask": None,
            }
            for c, xy in mask_polygons(mask)
        ]
        image_path = photo if path is None else os.path.relpath(path, out)
        data: dict[str, Any] = {
            "version": "5.5.0",
            "flags": {},
            "shapes": shapes,
            "imagePath": image_path,
            "imageData": None,
            "imageHeight": int(mask.shape[0]),
            "imageWidth": int(mask.shape[1]),
        }
        path = out / f"{id}.json"
        with atomic_write(path, "w") as f:
            json.dump(data, f, indent=1)
        files.append(path)
    return files


def mask_polygons(mask: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(class, (N, 2) points) of each connected region of ``mask``, outer boundaries traced by OpenCV, in the order
    that draws the mask again when each polygon is filled over the ones before it (LabelMe's rule): a region inside
    another's hole comes after it (a larger area first). A background region inside others is a ``_background_``
    polygon; background that reaches the border is the canvas, drawn by nothing."""
    import cv2

    shapes: list[tuple[float, int, np.ndarray]] = []
    h, w = mask.shape
    for c in np.unique(mask).tolist():
        contours, hierarchy = cv2.findContours((mask == c).astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        for contour, (_, _, _, parent) in zip(contours, hierarchy[0] if hierarchy is not None else []):
            xy = contour.reshape(-1, 2)
            if parent != -1:  # a hole: what fills it is a region of its own
                continue
            if c == 0 and (xy.min() == 0 or (xy[:, 0] == w - 1).any() or (xy[:, 1] == h - 1).any()):
                continue
            if len(xy) < 3:  # a pixel or two: LabelMe's polygon has 3 points, and PIL draws a repeated one once
                xy = np.concatenate([xy, xy[-1:].repeat(3 - len(xy), axis=0)])
            shapes.append((-float(cv2.contourArea(contour)), c, xy.astype(np.float64)))
    shapes.sort(key=lambda s: s[0])
    return [(c, xy) for _, c, xy in shapes]


def label_config(names: list[str]) -> str:
    """Label Studio's labelling config: the photo, brush labels (the predictions' regions) and polygon labels."""
    palette = voc_palette(256)
    labels = "".join(
        f'\n    <Label value={quoteattr(name)} background="#{bytes(palette[c].tolist()).hex()}"/>'
        for c, name in enumerate(names)
        if c
    )
    return (
        f'<View>\n  <Image name="{LS_IMAGE}" value="$image" zoom="true"/>\n'
        f'  <BrushLabels name="{LS_BRUSH}" toName="{LS_IMAGE}">{labels}\n  </BrushLabels>\n'
        f'  <PolygonLabels name="{LS_POLYGON}" toName="{LS_IMAGE}">{labels}\n  </PolygonLabels>\n'
        "</View>\n"
    )


def write_labelstudio(out: Path, names: list[str], masks: Masks, image_url: str = LS_LOCAL_FILES) -> list[Path]:
    """Label Studio tasks with predictions (a brush region a class, Label Studio's RLE), and the labelling config."""
    tasks = []
    for id, photo, mask, _ in masks:
        h, w = mask.shape
        result = [
            {
                "id": f"{id}-{c}",
                "type": "brushlabels",
                "from_name": LS_BRUSH,
                "to_name": LS_IMAGE,
                "original_width": int(w),
                "original_height": int(h),
                "image_rotation": 0,
                "value": {
                    "format": "rle",
                    "rle": encode_rle(np.repeat((mask == c).ravel() * np.uint8(255), 4)),
                    "brushlabels": [names[c]],
                },
            }
            for c in np.unique(mask).tolist()
            if c
        ]
        tasks.append(
            {
                "data": {"image": f"{image_url}{photo}"},
                "predictions": [{"model_version": MODEL_VERSION, "result": result}],
            }
        )
    files = [out / "tasks.json", out / "label_config.xml"]
    with atomic_write(files[0], "w") as f:
        json.dump(tasks, f)
    with atomic_write(files[1], "w") as f:
        f.write(label_config(names))
    return files


WRITERS: dict[str, Callable[[Path, list[str], Masks, str], list[Path]]] = {
    "coco": write_coco,
    "cvat": write_cvat,
    "labelme": write_labelme,
    "labelstudio": write_labelstudio,
}
