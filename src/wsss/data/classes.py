"""Class-name lists: the PASCAL VOC and COCO label sets, and ``classes.txt`` of a custom dataset.

Index 0 is always the background; masks hold these indices, ``cls_labels.npy`` vectors cover the
foreground classes 1..C-1 (so vector slot ``k`` is class ``k + 1``).
"""

from __future__ import annotations

import difflib
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


def read_class_list(path: str | os.PathLike) -> list[str]:
    """Class names of a class list the user gives (``--classes``): one name a line, background first; DataError
    naming the file when it is missing or invalid (:func:`parse_classes`)."""
    if not Path(path).is_file():
        raise DataError(f"{path}: class list not found")
    return parse_classes(read_text_file(path, "class list"), path)


def read_classes(root: str | os.PathLike) -> list[str]:
    """Class names of the dataset at ``root``: its ``classes.txt`` if present, else VOC's 21 (DataError when
    ``root`` is no folder: a data set moved away while a job read it was taken for VOC's 21 classes).

    ``classes.txt`` holds one name a line, background first; blank lines at its end are ignored. Raises
    DataError (naming the file) for a blank line between names, duplicate names or fewer than 2 names.
    """
    path = Path(root) / CLASSES_FILE
    if not path.is_file():
        if not Path(root).is_dir():  # no folder is no VOC data set: a moved or mistyped root
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


MAX_LINES = 5  # the lines an unknown class name is listed at in an error (the rest counted)
MAX_NAMES = 10  # the unknown class names listed in an error (all are counted)
NAME_SEPARATOR = ";"  # between the class names of a labels cell (`cat;dog`)
# the separators other tools write, read when they alone make every name of a file a class
OTHER_SEPARATORS = {" ": "spaces", "|": "'|'", ",": "','"}


def split_names(cell: str, sep: str = NAME_SEPARATOR) -> list[str]:
    """The class names of a labels cell joined by ``sep`` (" ": any run of whitespace), stripped, none empty."""
    parts = cell.split() if sep == " " else cell.split(sep)
    return [p.strip() for p in parts if p.strip()]


class ClassLookup:
    """The foreground classes of ``class_names`` (background first) by the names a labels file gives them: the
    one matching of a labels file's names (``wsss prepare folder --labels``, ``wsss tag --labels-from``).

    A name is its class when it is one exactly. A name that differs from exactly one class only in case (``Cat``
    for ``cat``) is that class too, kept in :attr:`case_only` for a warning (:meth:`case_warning`): the intent is
    plain and refusing it would refuse valid labels. Any other name is unknown; :meth:`lookup` collects them
    all, and :meth:`check` raises one DataError listing each with its lines (a close class name offered; a name
    that differs only in case from several classes, ``CAT`` for ``Cat`` and ``cat``, named as such).

    ``unit``: what the numbers given to :meth:`lookup` count in the file (a labels file's lines; an annotation
    file's categories or shapes), as messages name them."""

    def __init__(self, class_names: list[str], unit: str = "line") -> None:
        self.unit = unit
        self.fg = list(class_names[1:])
        self.index = {n: i + 1 for i, n in enumerate(self.fg)}
        self.folded: dict[str, list[str]] = {}
        for n in self.fg:
            self.folded.setdefault(n.casefold(), []).append(n)
        self.case_only: dict[str, tuple[str, int]] = {}  # a name as given -> (its class, its first line)
        self.unknown: dict[str, list[int]] = {}  # a name as given -> its lines

    def knows(self, name: str) -> bool:
        """Whether ``name`` is a class, exactly or but for its case (nothing is collected)."""
        return name in self.index or len(self.folded.get(name.casefold(), [])) == 1

    def lookup(self, name: str, line: int) -> int | None:
        """The class index (1..C-1) of ``name``, met at ``line``; None for an unknown name (collected)."""
        if name in self.index:
            return self.index[name]
        same = self.folded.get(name.casefold(), [])
        if len(same) == 1:
            self.case_only.setdefault(name, (same[0], line))
            return self.index[same[0]]
        self.unknown.setdefault(name, []).append(line)
        return None

    def separator(self, cells: list[str]) -> str:
        """The separator of a file's labels cells: :data:`NAME_SEPARATOR`, unless every name of every cell is a
        class only when the cells are split by one other of :data:`OTHER_SEPARATORS` (then that one, the tool
        that wrote the file being plain; two that would do, or none: :data:`NAME_SEPARATOR`, whose unknown names
        :meth:`check` then lists with the separator it expects)."""

        def fits(sep: str) -> bool:
            return all(self.knows(n) for c in cells for n in split_names(c, sep))

        if fits(NAME_SEPARATOR):
            return NAME_SEPARATOR
        others = [sep for sep in OTHER_SEPARATORS if any(sep in c for c in cells) and fits(sep)]
        return others[0] if len(others) == 1 else NAME_SEPARATOR

    def hint(self, name: str) -> str:
        """What ``name`` may have meant: a class of several it matches but for case, or the closest class."""
        same = self.folded.get(name.casefold(), [])
        if len(same) > 1:
            return f"differs only in case from {' and '.join(map(repr, same))}: name one as the class list does"
        close = difflib.get_close_matches(name, self.fg, n=1)
        return f"did you mean {close[0]!r}?" if close else ""

    def check(self, path: str | os.PathLike) -> None:
        """DataError listing every unknown name of the file ``path`` with its lines; nothing when there is none."""
        if not self.unknown:
            return
        classes = f"classes: {', '.join(self.fg)}"
        held = [
            what
            for sep, what in OTHER_SEPARATORS.items()
            if any(any(self.knows(p) for p in split_names(n, sep)) for n in self.unknown if sep in n)
        ]
        if held:  # names run together by another tool's separator
            classes += (
                f"; a cell's classes are separated by {NAME_SEPARATOR!r} ('cat{NAME_SEPARATOR}dog'), and "
                f"these names hold {' and '.join(held)}"
            )
        if len(self.unknown) == 1:  # one name: where it is, as a file:line message
            ((name, lines),) = self.unknown.items()
            hint = self.hint(name)
            more = lines[1:]
            more_text = f"{self.unit}{'s' * (len(more) > 1)} {_lines(more)}" if more else ""
            if self.unit == "line":
                where = f"{path}:{lines[0]}" + (f" (and {more_text})" if more else "")
            else:
                where = f"{path} ({self.unit} {lines[0]}" + (f", and {more_text}" if more else "") + ")"
            raise DataError(f"{where}: unknown class {name!r}{f' ({hint})' if hint else ''}; {classes}")
        listed = []
        for name, lines in list(self.unknown.items())[:MAX_NAMES]:
            hint = self.hint(name)
            listed.append(
                f"{name!r} ({self.unit}{'s' * (len(lines) > 1)} {_lines(lines)}{f'; {hint}' if hint else ''})"
            )
        rest = len(self.unknown) - len(listed)
        listed += [f"and {rest} more"] if rest else []
        raise DataError(f"{path}: {len(self.unknown)} unknown classes: {', '.join(listed)}; {classes}")

    def case_warning(self, path: str | os.PathLike) -> str | None:
        """The warning naming the names taken for a class that differs from them only in case; None if none."""
        if not self.case_only:
            return None
        pairs = ", ".join(f"{name!r} as {cls!r} ({self.unit} {line})" for name, (cls, line) in self.case_only.items())
        return f"{path}: class names that differ from a class only in case, each taken as that class: {pairs}"


def _lines(lines: list[int]) -> str:
    """Line numbers for a message, the first :data:`MAX_LINES` of them and a count of the rest."""
    rest = len(lines) - MAX_LINES
    return ", ".join(map(str, lines[:MAX_LINES])) + (f" and {rest} more" if rest > 0 else "")
