"""``wsss prepare folder``: a custom dataset from a folder of images and a file of image labels.

Inputs:

- ``--images DIR``: JPEG, PNG or WebP files (by suffix, in any case: ``IMG_0001.JPG``; not those of its
  subfolders, nor hidden files; anything else in it is named in a warning). The id of an image is its file stem,
  each run of whitespace in it replaced by ``_`` (``IMG 0001.jpg`` is ``IMG_0001``: split lists hold one id a
  line), said in a warning; the dataset holds the image under its id.
- ``--classes FILE``: class names, one a line, background first (the ``classes.txt`` format).
- ``--labels FILE``: the image-level labels, in one of three forms:

  * ``.csv`` with a header ``image,labels``: one row per image, the second column lists class
    names separated by ``;`` (``cat;dog``), or is empty for an image with no foreground class; a file whose
    names are all classes only when split by spaces, ``|`` or ``,`` (quoted) instead is read so, with a warning;
  * ``.csv`` with a header ``image,<class>,<class>,...`` (every foreground class): 0/1 columns;
  * ``.txt``: ``<image> <class> <class> ...`` whitespace-separated (names without spaces, or
    class indices 1..C-1 as in the masks).

  ``image`` is a file name (``a.jpg``) or a stem (``a``) in ``--images``; a path (``photos/a.jpg``, as some
  labelling tools export) is matched by its file name, said in a warning. A class name that differs from one
  of ``--classes`` only in case (``Cat`` for ``cat``) is that class, said in a warning; every unknown one is
  listed in one error (``wsss.data.classes.ClassLookup``).
  Without ``--labels`` every image is taken with no foreground class yet (``cls_labels.npy`` all zero),
  for ``wsss tag`` to label from CLIP scores and the class names (runs/tag.py); masks are then not checked
  against labels, only for values and size. A CVAT export or a LabelMe folder given as ``--masks`` labels each
  photo it has a mask of with the classes in that mask (``MaskSource.labels_without_labels_file``).
- ``--masks PATH`` (optional): masks for some or all images: a folder of ``<image file stem>.png`` class-index
  masks (0 = background, 255 = ignore), a COCO .json file, a CVAT segmentation mask export or a folder of LabelMe
  .json files (``prepare.annotations``, docs/datasets.md#masks-from-labelling-tools). ``--labels`` takes the COCO
  file or the LabelMe folder too: each photo labelled with the classes drawn in it.

Output ``ROOT``: ``JPEGImages/`` (hard links by default), ``SegmentationClass/`` (the masks, re-written as
VOC-palette PNGs after checking values and sizes), ``cls_labels.npy``, ``classes.txt``,
``ImageSets/Segmentation/train.txt`` and ``val.txt``: a seeded random share (``val_fraction``) of the images with a
mask when masks are given (by default 0.2 of them, and at most half: the rest stay in train), and none without masks
by default (validation needs masks, and training without a val split skips it), nor when no mask of ``--masks``
matches a photo (a warning says so). An ``out`` holding a dataset is refused unless ``overwrite``; an input inside
an output that ``overwrite`` would replace (``--masks OUT/SegmentationClass``) is refused, never deleted.

Every input is checked before anything is written, with check-data's rules: an image that does not
decode fully (a truncated JPEG), a mask with values that are not classes, of another size than its
image, or showing a class the image's label does not list is a problem; all of them are listed in
one error and nothing is written. A labelled class with no pixel in the mask is legal (a warning).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from wsss.core.errors import DataError, UsageError
from wsss.data.check import PROGRESS_MIN, check_image, check_mask, size_problem
from wsss.data.classes import (
    NAME_SEPARATOR,
    OTHER_SEPARATORS,
    ClassLookup,
    read_class_list,
    split_names,
    write_classes,
)
from wsss.data.photos import PHOTO_SUFFIXES, is_photo
from wsss.data.prepare import (
    PrepareSummary,
    first,
    has_files,
    held_outputs,
    place_image,
    remove_outputs,
    remove_stale_outputs,
    write_split,
)
from wsss.data.prepare.annotations import (
    MATCH_RULE,
    MaskSource,
    is_annotation_labels,
    open_masks,
    read_annotation_labels,
)
from wsss.data.voc import IMAGE_EXTS, write_cls_labels
from wsss.utils.io import csv_rows, per_id_path, read_text_file, save_label_png

MAX_LISTED = 50  # input problems listed in the error (all are counted)


def listed_once(firsts: dict[str, str], key: str, where: str) -> None:
    """Record that the image ``key`` has a row at ``where`` ("file:line"); DataError naming both rows when it had one
    (``firsts``: key -> its first row): a labels file or a ``tags.csv`` lists each photo once."""
    if key in firsts:
        raise DataError(f"{where}: image {key!r} is listed twice (first at {firsts[key]})")
    firsts[key] = where


def read_label_file(path: Path, class_names: list[str]) -> tuple[dict[str, tuple[list[int], str]], list[str]]:
    """{image key: (class indices 1..C-1, "file:line" for messages)} from a .csv or .txt label file, and its
    warnings. Class names are matched by ``ClassLookup``: one that differs from a class only in case is taken
    as it (a warning names each), and every unknown one is listed in one DataError."""
    if not path.is_file():
        raise DataError(f"{path}: label file not found")
    lookup = ClassLookup(class_names)
    out: dict[str, tuple[list[int], str]] = {}
    firsts: dict[str, str] = {}

    def add(key: str, classes: list[int], where: str) -> None:
        listed_once(firsts, key, where)
        out[key] = (sorted(set(classes)), where)

    text = read_text_file(path, "label file")
    warnings: list[str] = []
    rows = (
        _csv_label_rows(path, text, lookup, warnings)
        if path.suffix.lower() == ".csv"
        else _txt_label_rows(text, path, len(class_names), lookup)
    )
    for key, classes, where in rows:
        add(key, classes, where)
    lookup.check(path)  # every unknown class name of the file, in one error
    if not out:
        raise DataError(f"{path}: no labelled images")
    return out, warnings + [w for w in [lookup.case_warning(path)] if w]


def _csv_label_rows(
    path: Path, text: str, lookup: ClassLookup, warnings: list[str]
) -> Iterator[tuple[str, list[int], str]]:
    """(image key, class indices, "file:line") of a CSV label file: ``image,labels`` (classes joined by ``;``, or
    by the one other common separator that makes every name a class: ``ClassLookup.separator``, said in
    ``warnings``) or the wide ``image,<class>,...`` with 0/1 columns. Unknown class names are left out
    (``lookup`` has them)."""
    rows, column_sep = csv_rows(text)
    if not rows:
        raise DataError(f"{path}: empty label file")
    if column_sep != ",":
        warnings.append(
            f"{path}: columns separated by {column_sep!r}, not ',' (a spreadsheet's CSV where ',' is the "
            "decimal mark): read so"
        )
    header = [h.strip() for h in rows[0]]
    wide = len(header) > 2 or (len(header) == 2 and lookup.knows(header[1]))
    if not wide and header != ["image", "labels"]:
        raise DataError(
            f"{path}:1: header must be 'image,labels' or 'image,<class>,<class>,...', got {','.join(header)!r}"
        )
    columns = [lookup.lookup(h, 1) for h in header[1:]] if wide else []
    sep = NAME_SEPARATOR if wide else lookup.separator([r[1] for r in rows[1:] if len(r) == len(header)])
    if sep != NAME_SEPARATOR:
        warnings.append(
            f"{path}: the classes of each row are separated by {OTHER_SEPARATORS[sep]}, not "
            f"{NAME_SEPARATOR!r}: read so, as every name of every row is then a class"
        )
    for n, row in enumerate(rows[1:], start=2):
        where = f"{path}:{n}"
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{where}: {len(row)} columns, the header has {len(header)}")
        if wide:
            classes = []
            for h, c, v in zip(header[1:], columns, row[1:]):
                if v.strip() not in ("0", "1", ""):
                    raise DataError(f"{where}: column {h!r} must be 0 or 1, got {v!r}")
                if v.strip() == "1" and c is not None:
                    classes.append(c)
        else:
            found = [lookup.lookup(name, n) for name in split_names(row[1], sep)]
            classes = [c for c in found if c is not None]
        yield row[0].strip(), classes, where


def _txt_label_rows(
    text: str, path: Path, num_classes: int, lookup: ClassLookup
) -> Iterator[tuple[str, list[int], str]]:
    """(image key, class indices, "file:line") of a text label file: ``<image> <class> <class> ...`` (names or
    1-based indices), ``#`` comments. Unknown class names are left out (``lookup`` has them)."""
    for n, line in enumerate(text.splitlines(), start=1):
        where = f"{path}:{n}"
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        classes = []
        for tok in parts[1:]:
            if tok not in lookup.index and tok.isdigit() and 1 <= int(tok) < num_classes:
                classes.append(int(tok))
            elif (c := lookup.lookup(tok, n)) is not None:
                classes.append(c)
        yield parts[0], classes, where


DEFAULT_VAL_FRACTION = 0.2  # with masks and no --val-fraction: a val split to validate training on


@dataclass
class FolderPlan:
    """What ``prepare_folder`` would write, from its inputs read and checked (nothing written): the class names,
    each id's foreground classes (``labels``), its photo (``files``), the train and val ids and the ids whose mask
    passed (``masked``)."""

    class_names: list[str]
    labels: dict[str, list[int]]
    files: dict[str, Path]
    train: list[str]
    val: list[str]
    masked: set[str]
    label_only: list[str] = field(default_factory=list)  # masked ids labelled with a class their mask lacks
    by_path: list[str] = field(default_factory=list)  # the label rows naming their photo by a path
    warnings: list[str] = field(default_factory=list)  # as prepare folder would print them (plan_folder)
    notes: list[str] = field(default_factory=list)


def plan_folder(
    images: str | os.PathLike,
    labels: str | os.PathLike | None,
    classes: str | os.PathLike,
    *,
    masks: str | os.PathLike | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    image_mode: str = "link",
    progress: bool = True,
    out: str | os.PathLike | None = None,
    check: bool = True,
) -> FolderPlan:
    """The dataset ``prepare_folder`` would make of these inputs, every input read and checked as it checks them
    (one DataError listing the problems), nothing written: ``wsss route --plan`` makes its choices from it.
    ``check`` False: the photos and masks are not decoded (each photo with a mask file counts as masked), for a
    caller that runs ``prepare_folder`` next, which checks them."""
    read = _read_folder(images, labels, classes, masks, val_fraction, image_mode)
    plan = _checked(read, Path(out) if out is not None else None, seed, progress, check)
    said = PrepareSummary(out=Path(out) if out is not None else Path(images), notes=list(read.notes))
    said.warnings += plan.warnings[len(read.warnings) :]  # the val split's
    _say_what_was_read(read, plan, said)
    plan.warnings, plan.notes = said.warnings, said.notes
    return plan


@dataclass
class _Read:
    images: Path
    labels: Path | None
    classes: Path
    masks: Path | None
    source: MaskSource | None
    val_fraction: float
    class_names: list[str]
    files: dict[str, Path]
    entries: dict[str, list[int]]
    by_path: list[str]
    warnings: list[str]
    notes: list[str]
    mask_labels: bool = False  # no labels file: the photos with a mask are labelled with its classes


def _read_folder(
    images: str | os.PathLike,
    labels: str | os.PathLike | None,
    classes: str | os.PathLike,
    masks: str | os.PathLike | None,
    val_fraction: float | None,
    image_mode: str,
) -> _Read:
    """The inputs read (the photos listed, the class list and the labels parsed), not yet checked photo by photo."""
    images, classes = Path(images), Path(classes)
    labels = Path(labels) if labels is not None else None
    masks = Path(masks) if masks is not None else None
    if val_fraction is None:
        val_fraction = DEFAULT_VAL_FRACTION if masks is not None else 0.0
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"val_fraction must be in [0, 1), got {val_fraction}")
    said = PrepareSummary(out=images)  # the notes of the reading
    class_names, files, entries, by_path, label_warnings = _read_inputs(images, classes, labels, image_mode, said)
    source = open_masks(masks, class_names) if masks is not None else None
    if source is not None:
        source.check_matched(list(files.values()), images)
        said.notes.append(f"masks: {masks} read as {source.kind}")
    mask_labels = source is not None and labels is None and source.labels_without_labels_file
    if source is not None and masks is not None and mask_labels:
        entries.update(_match_labels(source.labels(), files, masks, images, skip_missing=True)[0])
        said.notes.append(
            f"labels: no labels file, so each photo with a mask of {masks} is labelled with the classes in its mask"
        )
    return _Read(
        images,
        labels,
        classes,
        masks,
        source,
        val_fraction,
        class_names,
        files,
        entries,
        by_path,
        label_warnings,
        said.notes,
        mask_labels,
    )


def _checked(read: _Read, out: Path | None, seed: int, progress: bool, check: bool = True) -> FolderPlan:
    """Every photo and mask of ``read`` checked (:func:`_check_inputs`; ``check`` False: the photos that have a
    mask, unread), and the val split drawn."""
    ids = sorted(read.entries)
    if check:
        with_mask, label_only = _check_inputs(
            ids, read.files, read.entries, read.source, read.class_names, read.labels, read.classes, out, progress
        )
    else:
        source = read.source
        with_mask, label_only = {i for i in ids if source is not None and source.find(read.files[i]) is not None}, []
    warnings = list(read.warnings)
    val = _val_ids(ids, with_mask, read.val_fraction, seed, warnings, read.masks, read.images)
    return FolderPlan(
        class_names=read.class_names,
        labels=read.entries,
        files=read.files,
        train=[i for i in ids if i not in val],
        val=sorted(val),
        masked=with_mask,
        label_only=label_only,
        by_path=read.by_path,
        warnings=warnings,
    )


def prepare_folder(
    images: str | os.PathLike,
    labels: str | os.PathLike | None,
    classes: str | os.PathLike,
    out: str | os.PathLike,
    *,
    masks: str | os.PathLike | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    image_mode: str = "link",
    progress: bool = True,
    overwrite: bool = False,
) -> PrepareSummary:
    """Build a VOC-layout dataset at ``out`` from a custom folder (module docstring).

    An ``out`` that already holds a dataset is refused (UsageError) unless ``overwrite``: then, once the
    inputs passed their checks, its outputs are removed first, so a re-run writes what a fresh run would
    (a re-run without masks kept the old val.txt and masks).

    Every input is checked before anything is written (check-data's rules: images decode fully,
    masks hold classes or 255 at the image's size, no mask class missing from the image's label); all
    problems are raised in one DataError, and ``out`` is left as it was. ``val_fraction`` None: 0.2
    of the images with masks when there are masks (at most half of them), else no val split (training
    then skips validation).
    """
    out = Path(out)
    read = _read_folder(images, labels, classes, masks, val_fraction, image_mode)
    images, labels, classes, masks, source = read.images, read.labels, read.classes, read.masks, read.source
    summary = PrepareSummary(out=out)
    summary.notes += read.notes
    inputs = {"--images": images, "--labels": labels, "--classes": classes, "--masks": masks}
    previous = _previous_outputs(out, images, image_mode, overwrite, inputs)
    plan = _checked(read, out, seed, progress)
    remove_outputs(previous)
    class_names, files, entries, with_mask = plan.class_names, plan.files, plan.labels, plan.masked
    ids, val = sorted(entries), set(plan.val)

    # ---- write ---------------------------------------------------------------------------------
    # The split lists are written last: a dataset without them is visibly unfinished, while lists
    # without cls_labels.npy / classes.txt beside them would read as a VOC dataset.
    placed = _place_files(out, ids, files, with_mask, source, image_mode)
    summary.counts.update({"masks": len(with_mask)} if masks is not None else {})
    summary.warnings += plan.warnings[len(read.warnings) :]  # the val split's
    _write_image_labels(out, entries, class_names)
    if val:
        write_split(out, "val", sorted(val))
    write_split(out, "train", [i for i in ids if i not in val])
    summary.counts.update({"images": len(ids), "train": len(ids) - len(val), "val": len(val), "images_placed": placed})
    if not val:
        summary.notes.append("no val split (no masks, or val_fraction 0): training runs without validation")
    _say_what_was_read(read, plan, summary)
    return summary


def _say_what_was_read(read: _Read, plan: FolderPlan, summary: PrepareSummary) -> None:
    """The warnings and notes of the inputs read and checked, in ``summary``: what ``prepare folder`` prints after
    writing, and ``wsss route --plan`` before anything is written."""
    images, labels, masks, source = read.images, read.labels, read.masks, read.source
    files, entries = plan.files, plan.labels
    ids = sorted(entries)
    renamed = [f"{files[id].name!r} -> {id}" for id in ids if id != files[id].stem]
    left_out = _left_out(images)
    if left_out:
        summary.warnings.append(
            f"left out of {images}, not being JPEG, PNG or WebP photos (subfolders are not read): {first(left_out)}"
        )
    summary.warnings += read.warnings  # class names taken for a class that differs only in case
    if read.by_path:
        summary.warnings.append(
            f"{len(read.by_path)} label row(s) name their image by a path: each is matched to "
            f"the photo of its file name in {images}: {first(read.by_path)}"
        )
    unmatched = source.unmatched(list(files.values())) if source is not None else []
    # a file given as both --masks and --labels: its warnings once (the labels' are in already)
    summary.warnings += [w for w in source.warnings() if w not in summary.warnings] if source is not None else []
    if unmatched and not (labels is not None and masks is not None and labels.resolve() == masks.resolve()):
        summary.warnings.append(
            f"{len(unmatched)} mask(s) in {masks} match no photo in {images} and were skipped: {first(unmatched)}"
        )
    if renamed:
        summary.warnings.append(
            f"{len(renamed)} image name(s) contain whitespace, which an id cannot (split lists "
            f"hold one id a line): each run of it is '_' in the id: {first(renamed)}"
        )
    if labels is None:
        who = "image without a mask" if read.mask_labels else "image"
        summary.notes.append(f"no labels file: every {who} has no class yet; `wsss tag` labels them from CLIP scores")
    else:
        _warn_about_labels(files, entries, plan.label_only, images, summary)


def _place_files(
    out: Path, ids: list[str], files: dict[str, Path], with_mask: set[str], source: MaskSource | None, image_mode: str
) -> int:
    """The masks (``SegmentationClass``, re-encoded) and the images (``JPEGImages``, by ``image_mode``) of the
    dataset at ``out``; returns how many images were placed."""
    remove_stale_outputs(out, "SegmentationClass", "JPEGImages")
    for id in sorted(with_mask):  # each has its mask in ``source`` (``_check_inputs``)
        dst = per_id_path(out / "SegmentationClass", id, ".png")
        key = source.find(files[id]) if source is not None else None
        if not dst.is_file() and source is not None and key is not None:
            save_label_png(dst, source.read(key))
    placed = 0
    for id in ids:
        src = files[id]
        placed += place_image(src, per_id_path(out / "JPEGImages", id, _placed_suffix(src)), image_mode)
    return placed


def _read_inputs(
    images: Path, classes: Path, labels: Path | None, image_mode: str, summary: PrepareSummary
) -> tuple[list[str], dict[str, Path], dict[str, list[int]], list[str], list[str]]:
    """The class names, the image files by id, each id's foreground classes (none yet without a labels file:
    ``wsss tag`` writes them), the label rows that name their image by a path and the labels file's warnings;
    DataError naming what is missing. Labels from an annotation file (COCO, LabelMe) are the classes drawn in each
    photo; its photos not in ``images`` are skipped with a warning, as its masks are."""
    if not images.is_dir():
        raise DataError(f"{images}: image folder not found")
    class_names = read_class_list(classes)
    files = _image_files(images, image_mode)
    if labels is None:  # every image, no foreground class yet (wsss tag writes the labels)
        entries: dict[str, list[int]] = {id: [] for id in files}
        by_path: list[str] = []
        label_warnings: list[str] = []
        if not entries:
            raise DataError(f"{images}: no images ({', '.join(PHOTO_SUFFIXES)}, in any case)")
    elif is_annotation_labels(labels):
        table, label_warnings, kind = read_annotation_labels(labels, class_names, list(files.values()))
        summary.notes.append(f"labels: the classes drawn in each photo of {labels}, read as {kind}")
        entries, by_path, missing = _match_labels(table, files, labels, images, skip_missing=True)
        if not entries:
            raise DataError(
                f"{labels}: none of its {len(table)} labelled photos is in {images} ({MATCH_RULE}): {first(table)}"
            )
        if missing:
            label_warnings.append(
                f"{len(missing)} photo(s) of {labels} are not in {images} and were skipped: {first(missing)}"
            )
    else:
        table, label_warnings = read_label_file(labels, class_names)
        entries, by_path, _ = _match_labels(table, files, labels, images)
    return class_names, files, entries, by_path, label_warnings


def _previous_outputs(
    out: Path, images: Path, image_mode: str, overwrite: bool, inputs: dict[str, Path | None]
) -> list[Path]:
    """The outputs of an earlier run in ``out`` (the temporary files of a killed one aside), to remove with
    ``overwrite``; UsageError without it. ``JPEGImages`` is never among them when it is where the photos
    are (``--image-mode none``, or ``--images`` pointing at it). An input inside one of them is refused
    (``prepare.held_outputs``)."""
    keep_images = image_mode == "none" or (out / "JPEGImages").resolve() == images.resolve()
    names = ["ImageSets/Segmentation", "SegmentationClass", "cls_labels.npy", "classes.txt"]
    names += [] if keep_images else ["JPEGImages"]
    found = held_outputs(out, names, inputs)
    if found and not overwrite:
        what = "a dataset" if has_files(out / "ImageSets/Segmentation") else "an unfinished dataset (no split lists)"
        raise UsageError(
            f"{out}: already holds {what} ({', '.join(str(p.relative_to(out)) for p in found)}); pass --overwrite "
            "to replace it (the re-run then writes what a fresh run would), or choose another --out"
        )
    return found


def image_id(stem: str) -> str:
    """The id of an image of stem ``stem``: the stem, each run of whitespace replaced by ``_``. Split lists hold
    one id a line and other tools cut a line at its first blank, so an id holds none; a photo named
    ``IMG 0001 (1).jpg`` is legal all the same, and its id is ``IMG_0001_(1)``."""
    return re.sub(r"\s+", "_", stem)


def _image_files(images: Path, image_mode: str) -> dict[str, Path]:
    """id (:func:`image_id` of the file stem) -> image file, of the photos ``wsss predict --images`` reads too
    (``data.photos.is_photo``); two images with one id are an error, and so is a name the dataset could not find
    where the photos keep their names (``image_mode`` none: each must be named as ``_place_files`` would place it)."""
    files: dict[str, Path] = {}
    for p in sorted(images.iterdir()):
        if p.is_file() and is_photo(p) and not p.name.startswith("."):
            id = image_id(p.stem)
            if id in files:
                raise DataError(f"{images}: two images with the id {id!r}: {files[id].name}, {p.name}")
            files[id] = p
    if image_mode == "none":  # the photos stay as they are named: each must already be named as it would be placed
        misnamed = [p.name for id, p in files.items() if f"{id}{_placed_suffix(p)}" != p.name]
        if misnamed:
            raise DataError(
                f"{images}: --image-mode none keeps the photos' names, and {len(misnamed)} are not names the dataset "
                f"looks a photo up by (an id holds no whitespace; the suffix is one of {', '.join(IMAGE_EXTS)}): "
                f"{first(misnamed)}; another --image-mode places them under such names"
            )
    return files


def _left_out(images: Path) -> list[str]:
    """What ``--images`` holds that is not read as a photo: other files and subfolders (hidden ones aside), but for
    the ``<photo stem>.json`` files LabelMe saves beside each photo."""
    found = [p for p in sorted(images.iterdir()) if not p.name.startswith(".")]
    stems = {p.stem for p in found if p.is_file() and is_photo(p)}
    return [
        f"{p.name}/" if p.is_dir() else p.name
        for p in found
        if not (p.is_file() and (is_photo(p) or (p.suffix.lower() == ".json" and p.stem in stems)))
    ]


def _placed_suffix(image: Path) -> str:
    """The suffix the dataset holds ``image`` under: its own where the dataset looks for it, else lower-case."""
    return image.suffix if image.suffix in IMAGE_EXTS else image.suffix.lower()


def _match_labels(
    table: dict[str, tuple[list[int], str]],
    files: dict[str, Path],
    labels: Path,
    images: Path,
    skip_missing: bool = False,
) -> tuple[dict[str, list[int]], list[str], list[str]]:
    """id -> its class indices, each label row matched to an image by file name or stem; the rows whose image
    is a path (``photos/a.jpg``, as labelling tools export), matched by its last part, for a warning; and the rows of
    no image, an error unless ``skip_missing``. Two rows of one image are an error naming both."""
    by_name = {**{p.stem: id for id, p in files.items()}, **{p.name: id for id, p in files.items()}}
    entries: dict[str, tuple[list[int], str]] = {}
    missing, by_path = [], []
    for key, (cls, where) in table.items():
        name = key.replace("\\", "/").rsplit("/", 1)[-1]  # a path's file name, on any system
        id = by_name.get(name, name if name in files else None)  # the file's name or stem, or its id
        if id is None:
            missing.append(f"{key} ({where})")
            continue
        if id in entries:
            raise DataError(f"{where}: image {key!r} is labelled twice (first at {entries[id][1]})")
        entries[id] = (cls, where)
        if name != key:
            by_path.append(f"{key} ({where})")
    if missing and not skip_missing:
        raise DataError(f"{labels}: {len(missing)} labelled images are not in {images}: {first(missing)}")
    return {id: cls for id, (cls, _) in entries.items()}, by_path, missing


def _check_inputs(
    ids: list[str],
    files: dict[str, Path],
    entries: dict[str, list[int]],
    source: MaskSource | None,
    class_names: list[str],
    labels: Path | None,
    classes: Path,
    out: Path | None,
    progress: bool,
) -> tuple[set[str], list[str]]:
    """Check every input first: nothing is written unless all of it is usable (one DataError listing
    the problems). Returns the ids whose mask passed and those labelled with a class absent from it."""
    num_classes = len(class_names)
    problems: list[str] = []
    with_mask: set[str] = set()  # ids whose mask passed; masks are read again when written (memory)
    label_only: list[str] = []
    for id in tqdm(ids, desc="checking", unit="img", disable=not progress or len(ids) < PROGRESS_MIN, leave=False):
        size, err = check_image(files[id])
        if err:
            problems.append(err)
        key = source.find(files[id]) if source is not None else None
        if source is None or key is None:
            continue
        try:
            declared = source.declared_size(key)  # compared before the mask is drawn: a small file may declare GBs
            problem = size_problem(source.where(key), declared, size, files[id]) if declared is not None else None
            if problem is not None:
                problems.append(problem)
                continue
            mask = source.converted(key)
        except DataError as e:  # an annotation that converts to no mask: listed with the others
            problems.append(str(e))
            continue
        labelled = entries[id] if labels is not None else None  # unlabelled: masks checked for values and size
        errs, fg = check_mask(
            source.where(key),
            size,
            labelled,
            class_names,
            label_file=str(labels),
            id=id,
            classes_desc=f"{classes} ({num_classes} classes)",
            image_path=files[id],
            mask=mask,
        )
        problems += errs
        if errs or fg is None:
            continue
        if set(entries[id]) - set(fg.tolist()):
            label_only.append(id)
        with_mask.add(id)
    if problems:
        shown = problems[:MAX_LISTED]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise DataError(
            f"{len(problems)} problem(s) in the inputs; nothing was written"
            + (f" to {out}" if out is not None else "")
            + ":\n"
            + "\n".join(f"  - {p}" for p in shown)
            + more
        )
    return with_mask, label_only


def _val_ids(
    ids: list[str],
    with_mask: set[str],
    val_fraction: float,
    seed: int,
    warnings: list[str],
    masks: Path | None = None,
    images: Path | None = None,
) -> set[str]:
    """The val split: ``val_fraction`` of the images with masks when there are any (at most half of them:
    the others stay in train, where ``wsss sweep-bkg`` measures the seeds), else of all the images; none when
    ``masks`` were given and none matched (a val split of photos without masks would score nothing)."""
    if masks is not None and not with_mask:
        warnings.append(
            f"no mask of {masks} matches a photo of {images} (by its file name): no val split, and no photo has a mask"
        )
        return set()
    pool = sorted(with_mask) if with_mask else ids
    n_val = int(round(val_fraction * len(pool)))
    if with_mask and n_val > len(pool) // 2:
        warnings.append(
            f"val_fraction {val_fraction} asks for {n_val} of the {len(pool)} masked images; "
            f"val takes {len(pool) // 2}, the other half stays in train"
        )
        n_val = len(pool) // 2
    n_val = min(n_val, len(ids) - 1)
    return set(np.random.default_rng(seed).permutation(pool)[:n_val].tolist()) if n_val > 0 else set()


def _write_image_labels(out: Path, entries: dict[str, list[int]], class_names: list[str]) -> None:
    vecs = {}
    for id, cls in entries.items():
        v = np.zeros(len(class_names) - 1, dtype=np.float32)
        v[[c - 1 for c in cls]] = 1.0
        vecs[id] = v
    write_cls_labels(out, vecs)
    write_classes(out, class_names)


def _warn_about_labels(
    files: dict[str, Path], entries: dict[str, list[int]], label_only: list[str], images: Path, summary: PrepareSummary
) -> None:
    unlabelled = sorted(set(files) - set(entries))
    if unlabelled:
        summary.warnings.append(
            f"{len(unlabelled)} images in {images} have no label and were left out: "
            f"{first(files[i].name for i in unlabelled)}"
        )
    empty = sorted(i for i, c in entries.items() if not c)
    if empty:
        summary.warnings.append(f"{len(empty)} images have no foreground class: {first(empty)}")
    if label_only:
        summary.warnings.append(
            f"{len(label_only)} images are labelled with a class that has no pixel in their mask (legal, e.g. "
            f"a small object all void): {first(label_only)}"
        )
