"""``wsss check-data``: validate a dataset in the VOC layout before spending hours training on it.

Checks, for every id of the split(s): the image is present and decodes fully (truncated files are
caught); the mask, where the dataset has masks, is present, readable, single-channel or palette,
the image's size, and holds only class indices 0..C-1 or 255; classes.txt is valid;
cls_labels.npy is a dict of float multi-hot vectors of length C-1 covering every id, with no class
in a mask that the image's label lacks. The opposite (a labelled class with no pixel in the mask,
e.g. a small object all void, or labels from VOC's XML annotations) is legal: one warning gives their
count and ids. Every problem message starts with the offending file's path.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import ImageFile

from wsss.core.errors import DataError
from wsss.data.classes import CLASSES_FILE, VOC_CLASSES, read_classes
from wsss.data.voc import (
    CLS_LABELS_FILE,
    IMAGE_DIR,
    IMAGE_EXTS,
    MASK_DIRS,
    SPLIT_DIR,
    available_splits,
    find_image,
    find_mask,
    parse_split,
    read_cls_labels_file,
    read_split,
)
from wsss.utils.io import (
    describe_path,
    exif_orientation,
    exif_swaps_sides,
    image_size,
    open_image,
    read_label_png,
)

PROGRESS_MIN = 200  # show a progress bar above this many images
LABEL_ONLY_SHOWN = 20  # ids listed in the warning about labels without mask pixels


@dataclass
class CheckReport:
    """Result of ``check_dataset``. ``problems`` holds at most ``max_problems`` messages;
    ``n_problems`` counts all of them."""

    root: Path
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    n_problems: int = 0
    n_images: int = 0
    n_masks: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)  # images per class (from the labels)
    splits: dict[str, int] = field(default_factory=dict)  # split -> number of ids
    class_names: list[str] = field(default_factory=list)
    label_source: str = ""
    label_only: dict[str, str] = field(default_factory=dict)  # id -> labelled classes with no mask pixel
    max_problems: int = 50

    @property
    def ok(self) -> bool:
        return self.n_problems == 0

    def add(self, msg: str) -> None:
        self.n_problems += 1
        if len(self.problems) < self.max_problems:
            self.problems.append(msg)

    def warn(self, msg: str) -> None:
        if len(self.warnings) < self.max_problems:
            self.warnings.append(msg)

    def format(self) -> str:
        lines = [f"dataset: {self.root}"]
        if self.splits:
            lines.append("splits: " + ", ".join(f"{s} ({n} ids)" for s, n in self.splits.items()))
        if self.class_names:
            lines.append(
                f"classes: {len(self.class_names)} incl. background ({', '.join(self.class_names[:8])}"
                + (", ..." if len(self.class_names) > 8 else "")
                + ")"
            )
        lines.append(
            f"images: {self.n_images}, masks: {self.n_masks}"
            + (f", image labels from {self.label_source}" if self.label_source else "")
        )
        if self.class_counts:
            width = max(len(k) for k in self.class_counts)
            lines.append("images per class:")
            lines += [f"  {k:<{width}}  {v}" for k, v in self.class_counts.items()]
        if self.warnings:
            lines.append(f"warnings ({len(self.warnings)}):")
            lines += [f"  - {w}" for w in self.warnings]
        if self.ok:
            lines.append("OK: no problems found")
        else:
            lines.append(f"{self.n_problems} problem(s):")
            lines += [f"  - {p}" for p in self.problems]
            if self.n_problems > len(self.problems):
                lines.append(f"  ... and {self.n_problems - len(self.problems)} more")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def check_mask(
    mask_path: Path | str,
    image_size: tuple[int, int] | None,
    labelled: Iterable[int] | None,
    class_names: Sequence[str],
    *,
    label_file: Path | str,
    id: str,
    classes_desc: str,
    image_path: Path | None = None,
    mask: np.ndarray | None = None,
) -> tuple[list[str], np.ndarray | None]:
    """The per-mask rules of check-data, shared with ``wsss prepare folder``: a readable single-channel
    or palette PNG of the image's size (``image_size`` (H, W), None = unknown), holding only class
    indices 0..C-1 or 255, and no class that the image's label (``labelled``: its class ids, None = no
    label) lacks. Returns the problems and the mask's foreground class ids (None when unreadable).
    ``image_path``: the image, whose EXIF orientation is named when it explains a size mismatch (the
    image is read upright, the mask as stored). ``mask``: the mask itself, converted from an annotation file that
    ``mask_path`` names in messages (``wsss prepare folder --masks coco.json``); None: read from ``mask_path``."""
    if mask is None:
        mask, err = _read_mask(Path(mask_path))
        if err:
            return [err], None
    assert mask is not None
    problems = [p for p in [size_problem(mask_path, mask.shape, image_size, image_path)] if p]
    num_classes = len(class_names)
    present = np.unique(mask)
    bad = present[(present >= num_classes) & (present != 255)]
    if bad.size:
        problems.append(
            f"{mask_path}: illegal mask values {bad.tolist()} (classes are 0..{num_classes - 1}, "
            f"255 = ignore; see {classes_desc})"
        )
    fg = present[(present >= 1) & (present < num_classes)].astype(np.int64)
    only_mask = np.setdiff1d(fg, np.asarray(list(labelled), dtype=np.int64)) if labelled is not None else fg[:0]
    if only_mask.size:  # pixels of a class the image is not labelled with: a wrong label
        problems.append(
            f"{label_file}: label of id {id!r} disagrees with {mask_path} (in the mask but not in the label: "
            f"{_names(only_mask, class_names)})"
        )
    return problems, fg


# Image modes that ``utils.io.read_image`` turns into 8-bit RGB (``decode_rgb``; I;16* too).
IMAGE_MODES = ("RGB", "L", "P", "RGBA", "CMYK", "LA", "PA", "I", "F", "YCbCr", "LAB", "HSV", "1")


def size_problem(
    mask_path: Path | str,
    mask_size: tuple[int, ...],
    image_size: tuple[int, int] | None,
    image_path: Path | None = None,
) -> str | None:
    """The problem of a mask of ``mask_size`` (H, W) for an image of ``image_size`` (None = unknown), or None."""
    if image_size is None or tuple(mask_size) == tuple(image_size):
        return None
    return (
        f"{mask_path}: mask size {mask_size[1]}x{mask_size[0]} differs from the image "
        f"({image_size[1]}x{image_size[0]}){_exif_note(image_path, mask_size, image_size)}"
    )


def check_image(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """(H, W) as the commands see the image (EXIF orientation applied) after a full decode, or an error
    message. Truncated files are always errors, even if
    some library enabled PIL's LOAD_TRUNCATED_IMAGES."""
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with open_image(path) as im:
            im.load()
            if im.mode not in IMAGE_MODES and not im.mode.startswith("I;16"):
                return None, f"{path}: unsupported image mode {im.mode}"
        return image_size(path), None  # as the commands read it: EXIF orientation applied
    except DataError as e:
        return None, str(e)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _exif_note(image_path: Path | None, mask_size: tuple[int, ...], image_size: tuple[int, int]) -> str:
    """Why a mask of the image's stored size mismatches: the image's EXIF orientation turns it."""
    if image_path is None or tuple(mask_size) != (image_size[1], image_size[0]):
        return ""
    orientation = exif_orientation(image_path)
    if not exif_swaps_sides(orientation):
        return ""
    return (
        f"; {image_path} has EXIF orientation {orientation}, so it is read turned by 90 degrees "
        f"({image_size[1]}x{image_size[0]}) while the mask fits the stored pixels: turn the mask the same way, "
        "or save the image without the orientation tag"
    )


def _read_mask(path: Path) -> tuple[np.ndarray | None, str | None]:
    """The (H, W) class-index mask, or an error message (unreadable file, colour mask ...)."""
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with open_image(path, "mask") as im:
            mode = im.mode
        if mode not in ("P", "L", "I", "I;16"):
            return None, (
                f"{path}: mask has mode {mode}; expected a single-channel (L) or palette (P) PNG of class indices"
            )
        return read_label_png(path), None
    except DataError as e:
        return None, str(e)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _names(idx, class_names: list[str]) -> str:
    return ", ".join(f"{int(c)} ({class_names[int(c)]})" if int(c) < len(class_names) else str(int(c)) for c in idx)


def _read_label_table(
    root: Path, report: CheckReport, num_classes: int, classes_desc: str
) -> tuple[dict[str, np.ndarray] | None, set[str] | None]:
    """(vectors of the right length, all keys) of cls_labels.npy; (None, None) if absent or
    unreadable (an unreadable file is reported)."""
    path = root / CLS_LABELS_FILE
    if not path.is_file():
        return None, None
    try:
        obj = read_cls_labels_file(path)  # the reader training uses: runs no code from the file
    except DataError as e:
        report.add(str(e))
        return None, None
    table: dict[str, np.ndarray] = {}
    lengths: Counter = Counter()
    bad_dtype, bad_values = [], []
    for k, v in obj.items():
        arr = np.asarray(v)
        if arr.dtype.kind not in "fiub" or arr.ndim != 1:
            report.add(f"{path}: entry {k!r} is not a 1-D numeric vector (dtype {arr.dtype}, shape {arr.shape})")
            continue
        if arr.dtype.kind != "f":
            bad_dtype.append(str(k))
        vec = arr.astype(np.float32)
        if not np.isin(vec, (0.0, 1.0)).all():
            bad_values.append(str(k))
        lengths[vec.shape[0]] += 1
        table[str(k)] = vec
    wrong = {n: c for n, c in lengths.items() if n != num_classes - 1}
    if wrong:
        desc = ", ".join(f"{c} with length {n}" for n, c in sorted(wrong.items()))
        report.add(
            f"{path}: label vectors disagree with {classes_desc}: expected length {num_classes - 1} "
            f"(one slot per foreground class, background excluded), found {desc}"
        )
    if bad_values:
        report.add(
            f"{path}: {len(bad_values)} label vector(s) are not multi-hot 0/1 (e.g. {', '.join(bad_values[:5])})"
        )
    if bad_dtype:
        report.warn(f"{path}: {len(bad_dtype)} label vector(s) are not float (e.g. {bad_dtype[0]}); read as float32")
    keys = {str(k) for k in obj}
    return {k: v for k, v in table.items() if v.shape[0] == num_classes - 1}, keys


def check_dataset(
    root: str | os.PathLike,
    split: str | None = None,
    *,
    max_problems: int = 50,
    progress: bool = True,
    full_masks: bool = False,
) -> CheckReport:
    """Validate the dataset at ``root`` (one ``split``, or every split file when None).

    A split of which only some images have a mask is legal when ``cls_labels.npy`` gives every image its
    labels (a warning: `wsss prepare folder --masks` keeps masked photos in train beside unmasked ones, for
    ``wsss sweep-bkg``); with ``full_masks`` (the val split of a training, which scores every image) each
    missing mask is a problem."""
    root = Path(root)
    report = CheckReport(root=root, max_problems=max_problems)
    if not root.is_dir():
        report.add(f"{describe_path(root)}: dataset root not found")
        return report

    class_names, classes_desc = _check_classes(root, report)
    report.class_names = class_names
    C = len(class_names)

    split_ids = _check_splits(root, split, report)
    if split_ids is None:
        return report

    # ---- image labels ----------------------------------------------------------------------------
    table, table_keys = _read_label_table(root, report, C, classes_desc)
    npy = root / CLS_LABELS_FILE
    has_table = npy.is_file()  # even if unreadable (reported above): then labels are unknown
    report.label_source = CLS_LABELS_FILE if has_table else "masks"

    # ---- per image -------------------------------------------------------------------------------
    all_ids = list(dict.fromkeys(i for ids in split_ids.values() for i in ids))
    report.n_images = len(all_ids)
    mask_of = {i: find_mask(root, i) for i in all_ids}
    per_class: Counter = Counter()
    label_only: dict[str, str] = {}  # id -> classes in its label with no pixel in its mask
    has_mask_dir = any((root / d).is_dir() for d in MASK_DIRS)
    split_with_masks, needs_mask = _mask_needs(
        split_ids, mask_of, has_table, has_mask_dir, table_keys, report, full_masks
    )
    labels_of: dict[str, np.ndarray] = {}  # id -> its (C-1,) labels, where known
    for id in _progress(all_ids, progress):
        vec = table.get(id) if table is not None else None
        mask_labels = _check_one_image(
            root, id, mask_of[id], id in needs_mask, vec, class_names, classes_desc, (has_mask_dir, has_table), report
        )
        labels = _count_labels(id, vec, mask_labels, class_names, per_class, label_only)
        if labels is not None:
            labels_of[id] = labels

    if table_keys is not None:
        _check_label_coverage(split_ids, table_keys, split_with_masks, npy, report)
    _warn_absent_classes(split_ids, labels_of, class_names, report)
    if label_only:
        _warn_label_only(label_only, npy, report)
    report.label_only = label_only
    report.class_counts = {class_names[c]: per_class.get(c, 0) for c in range(1, C)}
    return report


def _check_one_image(
    root: Path,
    id: str,
    mpath: Path | None,
    needs_mask: bool,
    vec: np.ndarray | None,
    class_names: list[str],
    classes_desc: str,
    have: tuple[bool, bool],
    report: CheckReport,
) -> np.ndarray | None:
    """One image of :func:`check_dataset`: the image, its mask (a missing one reported where the split needs
    it; ``have``: whether the dataset has a mask folder and a label table) and its labels against the mask.
    Returns the mask's labels, or None without a mask."""
    size = _check_image_of(root, id, report)
    if mpath is None:
        if needs_mask:
            _report_missing_mask(root, id, *have, report)
        return None
    return _check_mask_of(
        mpath, size, vec, class_names, root / CLS_LABELS_FILE, id, classes_desc, report, image_path=find_image(root, id)
    )


def _check_classes(root: Path, report: CheckReport) -> tuple[list[str], str]:
    """The class names (VOC's if unreadable) and how to name their source in messages."""
    cls_file = root / CLASSES_FILE
    try:
        class_names = read_classes(root)
    except DataError as e:
        report.add(str(e))
        class_names = list(VOC_CLASSES)
        classes_desc = f"{cls_file} (unreadable; VOC's 21 classes assumed)"
    else:
        classes_desc = (
            f"{cls_file} ({len(class_names)} classes)"
            if cls_file.is_file()
            else f"the default 21 VOC classes (no {cls_file})"
        )
        if class_names[0].lower() not in ("background", "_background_", "bg", "__background__"):
            report.warn(f"{cls_file}: first class is {class_names[0]!r}; index 0 must be the background")
    return class_names, classes_desc


def _check_splits(root: Path, split: str | None, report: CheckReport) -> dict[str, list[str]] | None:
    """split -> its unique ids in order; None when there is no split to check (reported)."""
    split_dir = root / SPLIT_DIR
    if split is None:
        splits = available_splits(root)
        if not splits:
            report.add(f"{split_dir}: no split files (<split>.txt) found")
            return None
    else:
        if not (split_dir / f"{split}.txt").is_file():
            have = available_splits(root)
            report.add(
                f"{split_dir / (split + '.txt')}: split file not found; available splits: "
                + (", ".join(have) if have else "none")
            )
            return None
        splits = [split]
    split_ids: dict[str, list[str]] = {}
    for s in splits:
        path = split_dir / f"{s}.txt"
        try:
            ids, unsafe = parse_split(path)  # the parser training uses
        except DataError as e:
            report.add(str(e))
            continue
        for problem in unsafe:
            report.add(problem)
        if not ids and not unsafe:
            report.add(f"{path}: split file lists no ids")
        dups = [i for i, n in Counter(ids).items() if n > 1]
        if dups:
            report.warn(f"{path}: {len(dups)} id(s) listed more than once (e.g. {dups[0]})")
        split_ids[s] = list(dict.fromkeys(ids))
        report.splits[s] = len(split_ids[s])
    return split_ids


def _progress(all_ids: list[str], progress: bool) -> Iterable[str]:
    if progress and len(all_ids) > PROGRESS_MIN:
        try:
            from tqdm import tqdm

            return tqdm(all_ids, desc="checking", unit="img", leave=False)
        except ImportError:  # pragma: no cover
            pass
    return all_ids


def _mask_needs(
    split_ids: dict[str, list[str]],
    mask_of: dict[str, Path | None],
    has_table: bool,
    has_mask_dir: bool,
    table_keys: set[str] | None,
    report: CheckReport,
    full_masks: bool = False,
) -> tuple[dict[str, bool], set[str]]:
    """Which splits have masks, and the ids whose mask is required: every id without ``cls_labels.npy``
    (its labels come from its mask) or with ``full_masks``; else a split of which some
    images have masks gets a warning."""
    split_with_masks = {s: any(mask_of[i] is not None for i in ids) for s, ids in split_ids.items()}
    needs_mask: set[str] = set()
    for s, ids in split_ids.items():
        n_masks = sum(mask_of[i] is not None for i in ids)
        if not has_table or full_masks:
            needs_mask.update(ids)
        elif 0 < n_masks < len(ids):
            report.warn(
                f"split {s!r}: {n_masks} of its {len(ids)} images have a mask; `wsss sweep-bkg` scores "
                "those (the others are trained on their image labels)"
            )
        elif n_masks == 0 and has_mask_dir and (table_keys is None or any(i in table_keys for i in ids)):
            # (a split with neither masks nor labels gets its own "prediction only" warning below)
            report.warn(f"split {s!r}: none of its {len(ids)} images has a mask (it cannot be evaluated)")
    return split_with_masks, needs_mask


def _check_image_of(root: Path, id: str, report: CheckReport) -> tuple[int, int] | None:
    img_path = find_image(root, id)
    size = None
    if img_path is None:
        # the suffixes find_image looks for, from their one list (a copy here had drifted: ".jpg or .png")
        report.add(
            f"{root / IMAGE_DIR / (id + '.jpg')}: image not found (id {id!r}; looked for {'/'.join(IMAGE_EXTS)})"
        )
    else:
        size, err = check_image(img_path)
        if err:
            report.add(err)
    return size


def _report_missing_mask(root: Path, id: str, has_mask_dir: bool, has_table: bool, report: CheckReport) -> None:
    where = (
        " or ".join(str(root / d / f"{id}.png") for d in MASK_DIRS if (root / d).is_dir())
        if has_mask_dir
        else str(root / MASK_DIRS[1] / f"{id}.png")
    )
    why = (
        "the other images of its split have masks"
        if has_table
        else f"no {CLS_LABELS_FILE} either: the image has no labels at all"
    )
    report.add(f"{where}: mask missing for id {id!r} ({why})")


def _check_mask_of(
    mpath: Path,
    size: tuple[int, int] | None,
    vec: np.ndarray | None,
    class_names: list[str],
    npy: Path,
    id: str,
    classes_desc: str,
    report: CheckReport,
    image_path: Path | None = None,
) -> np.ndarray | None:
    """Check one mask; its foreground classes as a (C-1,) multi-hot, or None if unreadable. ``image_path``:
    its image, whose EXIF orientation is named when it explains a size mismatch (``check_mask``)."""
    report.n_masks += 1
    labelled = None if vec is None else np.flatnonzero(vec > 0.5) + 1
    problems, fg = check_mask(
        mpath, size, labelled, class_names, label_file=npy, id=id, classes_desc=classes_desc, image_path=image_path
    )
    for msg in problems:
        report.add(msg)
    if fg is None:
        return None
    mask_labels = np.zeros(len(class_names) - 1, np.float32)
    mask_labels[fg - 1] = 1.0
    return mask_labels


def _count_labels(
    id: str,
    vec: np.ndarray | None,
    mask_labels: np.ndarray | None,
    class_names: list[str],
    per_class: Counter,
    label_only: dict[str, str],
) -> np.ndarray | None:
    """Count the classes of ``id`` (its label vector, else its mask's classes) into ``per_class``; returns
    those labels, None when neither is known."""
    if vec is not None:
        if mask_labels is not None:
            only_lab = np.flatnonzero((vec > 0.5) & ~(mask_labels > 0.5)) + 1
            if only_lab.size:  # legal: a small object all void (255) in the mask, or labels from XML
                label_only[id] = _names(only_lab, class_names)
        labels = vec
    else:
        labels = mask_labels
    if labels is not None:
        for c in np.flatnonzero(labels > 0.5):
            per_class[c + 1] += 1
    return labels


def _warn_absent_classes(
    split_ids: dict[str, list[str]], labels_of: dict[str, np.ndarray], class_names: list[str], report: CheckReport
) -> None:
    """A warning per split whose labelled images never show some class: legal, but a training on it cannot
    learn the class (nothing said so: `wsss train` went on, check-data said "OK") and a score on it
    cannot measure the class. Splits without any known labels (a test split) are left out."""
    for s, ids in split_ids.items():
        known = [labels_of[i] for i in ids if i in labels_of and labels_of[i].shape[0] == len(class_names) - 1]
        if not known:
            continue
        seen = np.stack(known).max(axis=0) > 0.5
        absent = np.flatnonzero(~seen) + 1
        if absent.size:
            them = "it" if absent.size == 1 else "them"
            report.warn(
                f"split {s!r}: no image of class {_names(absent, class_names)} among its {len(known)} labelled "
                f"images: a training on this split cannot learn {them}, a score on it cannot measure {them}"
            )


def _check_label_coverage(
    split_ids: dict[str, list[str]],
    table_keys: set[str],
    split_with_masks: dict[str, bool],
    npy: Path,
    report: CheckReport,
) -> None:
    for s, ids in split_ids.items():
        missing = [i for i in ids if i not in table_keys]
        if missing and len(missing) == len(ids) and not split_with_masks[s]:
            # e.g. VOC's test split: images only, for `wsss predict` / `wsss export voc-test`
            report.warn(f"split {s!r}: no labels and no masks for its {len(ids)} images (prediction only)")
        elif missing:
            report.add(f"{npy}: no label for {len(missing)} id(s) of split {s!r} (e.g. {', '.join(missing[:5])})")


def _warn_label_only(label_only: dict[str, str], npy: Path, report: CheckReport) -> None:
    shown = list(label_only.items())[:LABEL_ONLY_SHOWN]
    report.warn(
        f"{npy}: {len(label_only)} "
        + ("image is" if len(label_only) == 1 else "images are")
        + " labelled with a class that has no pixel in the mask "
        "(e.g. a small object all void (255), or labels from the XML annotations); fine for training on "
        "image labels, their masks score that class as absent: "
        + ", ".join(f"{i} ({names})" for i, names in shown)
        + (f" (and {len(label_only) - len(shown)} more)" if len(label_only) > len(shown) else "")
    )


def check_pseudo_labels(
    root: str | os.PathLike,
    split: str,
    pseudo_dir: str | os.PathLike,
    *,
    max_problems: int = 50,
    progress: bool = True,
    skip: Collection[str] = (),
    only: Collection[str] | None = None,
    what: str = "pseudo label",
) -> CheckReport:
    """check-data's mask rules over a folder of segmentation targets (``data.pseudo_dir``, e.g. `wsss pseudo`'s
    output) for the ids of ``split``: each ``<id>.png`` present, a readable single-channel or palette PNG of
    its image's size, holding class indices or 255 (an RGB PNG met mid-training stopped it with a
    DataLoader traceback). Pseudo labels are not held to the image labels (a refiner may add a class).
    ``skip``: ids whose target is elsewhere (a true mask, ``data.true_masks``); ``only``: just these ids (a
    ``data.true_masks`` folder, which holds the masked photos' files only); ``what``: the files' name in messages."""
    root, pseudo_dir = Path(root), Path(pseudo_dir)
    report = CheckReport(root=pseudo_dir, max_problems=max_problems)
    if not pseudo_dir.is_dir():
        key = "data.pseudo_dir" if what == "pseudo label" else "data.true_masks"
        report.add(f"{pseudo_dir}: {what} directory not found ({key})")
        return report
    class_names = read_classes(root)
    skip = set(skip)
    ids = [i for i in read_split(root, split) if i not in skip and (only is None or i in only)]
    report.n_images = len(ids)
    desc = f"{root / CLASSES_FILE} ({len(class_names)} classes)"
    for id in _progress(ids, progress):
        path = pseudo_dir / f"{id}.png"
        if not path.is_file():
            report.add(f"{path}: {what} not found (id {id!r} of split {split!r})")
            continue
        image = find_image(root, id)
        size = image_size(image) if image is not None else None
        problems, _ = check_mask(
            path, size, None, class_names, label_file=path, id=id, classes_desc=desc, image_path=image
        )
        for p in problems:
            report.add(p)
    return report
