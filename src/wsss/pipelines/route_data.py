"""The route's data (:mod:`wsss.pipelines.route`): the facts its choices read of a dataset (:func:`data_facts`) or of
what ``wsss prepare folder`` will write (:func:`planned_facts`), and the files that name its inputs by content
(:func:`data_files`), which ``OUT/route.json`` records."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wsss.pipelines.route_values import DataFacts

SIZE_SAMPLE = 100  # photos whose headers give the mean size: evenly spaced, so a large dataset plans at once


def mean_megapixels(paths: Sequence[Path], most: int = SIZE_SAMPLE) -> float | None:
    """The mean size in megapixels of ``paths`` (at most ``most`` of them, evenly spaced, read from their headers);
    None where none is readable (the estimates then take a photo as the shipped rates' own)."""
    from wsss.utils.io import image_size

    step = max(1, -(-len(paths) // most))
    sizes = []
    for path in paths[::step]:
        try:
            h, w = image_size(path)
        except Exception:  # an unreadable photo is the data checks' to name; here it only goes uncounted
            continue
        sizes.append(h * w / 1e6)
    return round(statistics.fmean(sizes), 4) if sizes else None


def data_facts(root: str | os.PathLike) -> DataFacts:
    """The facts of the dataset ``root`` that the route's choices read (a DataError names what is missing)."""
    import numpy as np

    from wsss.data import VOCDataset
    from wsss.data.voc import available_splits

    train = VOCDataset(root, "train")
    val = VOCDataset(root, "val") if "val" in available_splits(root) else None
    counts = np.zeros(train.num_classes - 1)
    for i in train.ids:
        counts += train.labels(i) > 0
    return DataFacts(
        root=Path(root),
        class_names=list(train.class_names),
        train=list(train.ids),
        val=list(val.ids) if val is not None else [],
        masked_train=[i for i in train.ids if train.has_mask(i)],
        masked_val=[i for i in val.ids if val.has_mask(i)] if val is not None else [],
        photos_per_class=float(statistics.median(counts.tolist())) if len(counts) else 0.0,
        megapixels=mean_megapixels(
            [train.image_path(i) for i in train.ids] + ([val.image_path(i) for i in val.ids] if val else [])
        ),
    )


def data_files(paths: Sequence[Path], out: Path | None = None, flat: Sequence[Path] = ()) -> dict[str, str]:
    """What names the content of the route's inputs (the dataset, or the photos, labels, classes and masks given):
    each file's path (resolved) and the digest of its bytes (``runs.stamps.content_digest``: a file rewritten with
    its size and time kept is another). A photo replaced, added or removed, labels edited, a mask added or redrawn
    (in a CVAT export's ``SegmentationClass/`` too): another value, and the route's trainings were made of the other
    data (:func:`data_files_change` names the files). Of a dataset, the parts wsss reads (photos, masks, split lists,
    labels, classes); of a folder of ``flat``, its files (the photos, read so); of another folder, every file in it
    and its subfolders (a mask export's layout). The files are read by a few threads (most of the time is the disk's
    and the digest's, both outside Python's lock)."""
    from concurrent.futures import ThreadPoolExecutor

    from wsss.runs.stamps import content_digest

    files = [f for given in paths for f in input_files(given, out, flat=given in flat)]
    names = [str(f.resolve()) for f in files]
    with ThreadPoolExecutor(DIGEST_THREADS) as pool:
        return dict(sorted(zip(names, pool.map(content_digest, files), strict=True)))


DIGEST_THREADS = 4  # data_files' readers: the disk and the digest run outside Python's lock


def legacy_data_files(paths: Sequence[Path], out: Path | None = None) -> dict[str, Any]:
    """:func:`data_files` as an older wsss recorded it: how many files and a digest of each one's name, size and
    modification time (a folder that is no dataset: its top files). A route.json of it continues while its data is
    as it recorded; the rerun then records the files by content."""
    import hashlib

    digest, count = hashlib.sha1(usedforsecurity=False), 0
    for given in paths:
        dataset = given.is_dir() and (given / "ImageSets").is_dir()
        files = sorted(p for p in given.iterdir() if p.is_file()) if given.is_dir() and not dataset else None
        for path in files if files is not None else input_files(given, out):
            try:
                record: list[int] | None = [path.stat().st_size, path.stat().st_mtime_ns]
            except OSError:
                record = None
            digest.update(f"{path.relative_to(given) if path != given else given.name}\0{record}\n".encode())
            count += 1
    return {"files": count, "sha1": digest.hexdigest()[:16]}


def data_files_change(old: Any, new: Any, shown: int = 3) -> str:
    """How the data files ``old`` (a :func:`data_files` recorded) became ``new``, naming the first ``shown`` files
    added, removed and changed."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return f"{old!r} -> {new!r}"
    if set(old) == {"files", "sha1"}:  # a record of an older wsss: a digest of the names, sizes and times
        return f"recorded by size and time ({old['files']} files), now by content ({len(new)} files)"
    parts = []
    for what, names in (
        ("added", [n for n in new if n not in old]),
        ("removed", [n for n in old if n not in new]),
        ("changed", [n for n in new if n in old and old[n] != new[n]]),
    ):
        if names:
            more = f" and {len(names) - shown} more" if len(names) > shown else ""
            parts.append(f"{len(names)} {what}: {', '.join(names[:shown])}{more}")
    return "; ".join(parts)


def input_files(given: Path, out: Path | None, flat: bool = False) -> list[Path]:
    """The files of the input ``given`` that :func:`data_files` names (``out``, the route's folder, left out; links to
    folders followed, each folder once; hidden files and folders, a system's, left out of a folder that is no
    dataset): a dataset's parts, the top of a ``flat`` folder, or every file under another folder."""
    from wsss.data.classes import CLASSES_FILE
    from wsss.data.voc import CLS_LABELS_FILE, IMAGE_DIR, MASK_DIRS

    if not given.is_dir():
        return [given]
    if flat:
        return sorted(p for p in given.iterdir() if p.is_file() and not p.name.startswith("."))
    dataset = (given / "ImageSets").is_dir()
    parts = sorted({IMAGE_DIR, *MASK_DIRS, "ImageSets", CLS_LABELS_FILE, CLASSES_FILE}) if dataset else ["."]
    files, seen = [], {os.path.realpath(out)} if out is not None else set()
    for part in parts:
        if (given / part).is_file():
            files.append(given / part)
        for folder, dirs, names in os.walk(given / part, followlinks=True):
            if os.path.realpath(folder) in seen:  # a link back to a folder walked: no loop
                dirs[:] = []
                continue
            seen.add(os.path.realpath(folder))
            dirs[:] = sorted(d for d in dirs if dataset or not d.startswith("."))
            files += [Path(folder) / n for n in sorted(names) if dataset or not n.startswith(".")]
    return files


def planned_facts(root: Path, plan: Any) -> DataFacts:
    """The facts of the dataset ``wsss prepare folder`` would write at ``root`` (its ``FolderPlan``), as
    :func:`data_facts` reads them once it is written."""
    counts = [0] * (len(plan.class_names) - 1)
    for i in plan.train:
        for c in set(plan.labels[i]):
            counts[c - 1] += 1
    return DataFacts(
        root=root,
        class_names=list(plan.class_names),
        train=list(plan.train),
        val=list(plan.val),
        masked_train=[i for i in plan.train if i in plan.masked],
        masked_val=[i for i in plan.val if i in plan.masked],
        photos_per_class=float(statistics.median(counts)) if counts else 0.0,
        megapixels=mean_megapixels([plan.files[i] for i in [*plan.train, *plan.val] if i in plan.files]),
    )
