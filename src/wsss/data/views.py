"""Views of a dataset in the VOC layout: the same photos, other splits, and masks for only some of them, without
copying or touching the dataset itself (``wsss route``'s folds over the masked photos, ``pipelines/route_stage.py``; the
experiments' folds and mask counts, ``experiments/data_views.py``).

A view is a folder that links the dataset's photos, class names and image labels, writes its own split files
and links the masks of the ids it is given only, as a user's folder with a few masks drawn looks
(``wsss prepare folder --masks``): ``wsss sweep-bkg`` then scores the seeds on those masks, and
``data.true_masks=auto`` trains on them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from wsss.data.classes import CLASSES_FILE
from wsss.data.voc import CLS_LABELS_FILE, IMAGE_DIR, MASK_DIRS, SPLIT_DIR

VIEW_MASKS = "SegmentationClass"


def fold_split(ids: Sequence[str], fold: int, folds: int) -> tuple[list[str], list[str]]:
    """(train, val) of fold ``fold`` of ``folds``: the sorted ids dealt round-robin, fold f's val the ids at
    positions f, f + folds, f + 2 folds, ... (each id in exactly one fold's val; the folds' sizes differ by at
    most one), train the others."""
    if not 0 <= fold < folds or folds < 2:
        raise ValueError(f"fold {fold} of {folds}: need 0 <= fold < folds and folds >= 2")
    ordered = sorted(dict.fromkeys(ids))
    val = ordered[fold::folds]
    held = set(val)
    return [i for i in ordered if i not in held], val


def make_view(
    src: str | os.PathLike, dest: str | os.PathLike, splits: Mapping[str, Sequence[str]], masked: Collection[str]
) -> Path:
    """The view ``dest`` of data set ``src``: its photos, ``classes.txt`` and ``cls_labels.npy`` linked, one split
    file per entry of ``splits``, and ``SegmentationClass/`` holding links to the masks of ``masked`` only.
    Rebuilt unless ``dest`` already holds this very view (its ``view.json``); ``dest`` is the experiment's own."""
    src, dest = Path(src).resolve(), Path(dest)
    spec = {"source": str(src), "splits": {k: list(v) for k, v in splits.items()}, "masked": sorted(masked)}
    if (dest / "view.json").is_file() and json.loads((dest / "view.json").read_text()) == spec:
        return dest
    if dest.exists():
        _remove_view(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / SPLIT_DIR).mkdir(parents=True)
    (tmp / VIEW_MASKS).mkdir()
    (tmp / IMAGE_DIR).symlink_to(src / IMAGE_DIR, target_is_directory=True)
    for name in (CLASSES_FILE, CLS_LABELS_FILE):
        if (src / name).exists():
            (tmp / name).symlink_to(src / name)
    for name, ids in splits.items():
        (tmp / SPLIT_DIR / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    for i in masked:
        path = next((src / d / f"{i}.png" for d in MASK_DIRS if (src / d / f"{i}.png").is_file()), None)
        if path is None:
            raise ValueError(f"{src}: id {i} has no mask to link")
        (tmp / VIEW_MASKS / f"{i}.png").symlink_to(path)
    (tmp / "view.json").write_text(json.dumps(spec, indent=1) + "\n")
    if not dest.exists():
        tmp.rename(dest)
        return dest
    _move_into(tmp, dest)  # beside a file of someone else's, which stays
    return dest


def _move_into(src: Path, dest: Path) -> None:
    """The entries of ``src`` moved into the folder ``dest`` (a folder of both: merged), then ``src`` removed."""
    for entry in src.iterdir():
        target = dest / entry.name
        if entry.is_dir() and not entry.is_symlink() and target.is_dir() and not target.is_symlink():
            _move_into(entry, target)
        else:
            entry.rename(target)
    src.rmdir()


def _remove_view(dest: Path) -> None:
    """The entries a view holds (its links, split files and ``view.json``) removed from ``dest``, and ``dest`` with
    them when nothing else is left: a file of someone else's there stays (a folder is never removed whole)."""
    for name in (IMAGE_DIR, CLASSES_FILE, CLS_LABELS_FILE, "view.json"):
        if (dest / name).is_symlink() or (dest / name).is_file():
            (dest / name).unlink()
    for sub, suffix in ((SPLIT_DIR, ".txt"), (VIEW_MASKS, ".png")):
        folder = dest / sub
        if folder.is_dir():
            for p in folder.iterdir():
                if p.name.endswith(suffix) and (p.is_file() or p.is_symlink()):
                    p.unlink()
    for folder in sorted(
        (p for p in dest.rglob("*") if p.is_dir() and not p.is_symlink()), key=lambda p: -len(p.parts)
    ):
        if not any(folder.iterdir()):
            folder.rmdir()
    if not any(dest.iterdir()):
        dest.rmdir()
