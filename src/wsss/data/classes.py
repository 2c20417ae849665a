"""Class-name lists: the PASCAL VOC and COCO label sets, and ``classes.txt`` of a custom dataset.

Index 0 is always the background; masks hold these indices, ``cls_labels.npy`` vectors cover the
foreground classes 1..C-1 (so vector slot ``k`` is class ``k + 1``).
"""

from __future__ import annotations

import os
from pathlib import Path

from wsss.core.errors import DataError
from wsss.core.files import atomic_write
from wsss.utils.io import read_text_file

CLASSES_FILE = "classes.txt"

#: The 21 PASCAL VOC classes in the order of SeCo/ToCo ``datasets/voc.py`` (docs/datasets.md#voc-layout).
VOC_CLASSES: list[str] = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]

#: Background + the 80 COCO classes in the standard COCO order (docs/datasets.md#coco).
COCO_CLASSES: list[str] = [
    "background",
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
]

assert len(VOC_CLASSES) == 21 and len(COCO_CLASSES) == 81


def parse_classes(text: str, source: str | os.PathLike = CLASSES_FILE) -> list[str]:
    """Class names from the text of a classes.txt; DataError (naming ``source``) if invalid."""
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:  # blank lines at the end shift nothing
        names.pop()
    if "" in names:  # a mask pixel k is the class on line k: a skipped line would shift every later class
        raise DataError(
            f"{source}:{names.index('') + 1}: blank line in the class list (a mask pixel k is the class on "
            "line k, so every line names one class; remove the line or name the class)"
        )
    if len(names) < 2:
        raise DataError(
            f"{source}: needs at least 2 class names (background first, then the foreground "
            f"classes), found {len(names)}"
        )
    seen: set[str] = set()
    dups = []
    for n in names:
        if n in seen and n not in dups:
            dups.append(n)
        seen.add(n)
    if dups:
        raise DataError(f"{source}: duplicate class names: {', '.join(dups)}")
    return names


def read_classes(root: str | os.PathLike) -> list[str]:
    """Class names of the dataset at ``root``: its ``classes.txt`` if present, else VOC's 21 (DataError when
    ``root`` is no folder: a data set moved away while a job read it was taken for VOC's 21 classes).

    ``classes.txt`` holds one name a line, background first; blank lines at its end are ignored. Raises
    DataError (naming the file) for a blank line between names, duplicate names or fewer than 2 names.
    """
    path = Path(root) / CLASSES_FILE
    if not path.is_file():
        if not Path(root).is_dir():  # no folder is no VOC data set: a moved or mistyped root (issue 76 trial)
            raise DataError(f"{root}: dataset root not found")
        return list(VOC_CLASSES)
    return parse_classes(read_text_file(path, "class list"), path)


def write_classes(root: str | os.PathLike, names: list[str]) -> Path:
    """Write ``classes.txt`` (one name a line) atomically; returns its path."""
    parse_classes("\n".join(names), "class list")  # validate before writing
    path = Path(root) / CLASSES_FILE
    with atomic_write(path, "w") as f:
        f.write("".join(f"{n}\n" for n in names))
    return path
