"""Converters from the official downloads (and custom folders) to the toolkit's VOC layout.

- ``prepare_voc``: VOC 2012 devkit + SBD -> ``SegmentationClassAug``, ``train_aug.txt``,
  ``cls_labels.npy`` (docs/datasets.md#voc-layout).
- ``prepare_coco``: COCO 2014 instance json -> VOC-style masks with 81 classes (docs/datasets.md#coco).
- ``prepare_folder``: a folder of images + a CSV / txt of image-level labels (+ optional masks).

Shared here: how images are placed in ``JPEGImages`` (hard link, symlink or copy), the worker pool
with a progress bar, and the summary every converter prints. Every output is written atomically
and an existing output is kept, so an interrupted conversion continues where it stopped.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from wsss.core.choices import IMAGE_MODES
from wsss.core.errors import DataError, UsageError
from wsss.core.files import atomic_write, is_temp_file, remove_stale_temps

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class PrepareSummary:
    """What a converter wrote: counts by name, warnings, and the output root."""

    out: Path
    counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def format(self) -> str:
        lines = [f"prepared {self.out}"]
        width = max((len(k) for k in self.counts), default=0)
        lines += [f"  {k:<{width}}  {v:>8,}" for k, v in self.counts.items()]
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def place_image(src: Path, dst: Path, mode: str) -> bool:
    """Put ``src`` at ``dst`` by ``mode`` (link = hard link, falling back to a copy across devices;
    symlink = absolute symbolic link; copy; none = nothing). An existing ``dst`` is kept.

    Returns True if something was written.
    """
    if mode not in IMAGE_MODES:
        raise UsageError(f"image mode must be one of {', '.join(IMAGE_MODES)}, got {mode!r}")
    if mode == "none" or dst.exists() or dst.is_symlink():
        return False
    if not src.is_file():
        raise DataError(f"{src}: image file not found")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if mode == "symlink":
        tmp = dst.with_name(f".{dst.name}.tmp-link")
        tmp.unlink(missing_ok=True)
        os.symlink(src.resolve(), tmp)
        os.replace(tmp, dst)
        return True
    if mode == "link":
        tmp = dst.with_name(f".{dst.name}.tmp-link")
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
            os.replace(tmp, dst)
            return True
        except OSError:  # another file system, or links not supported: copy
            tmp.unlink(missing_ok=True)
    with open(src, "rb") as fin, atomic_write(dst) as fout:
        shutil.copyfileobj(fin, fout)
    return True


def remove_stale_outputs(out: Path, *folders: str) -> None:
    """Before a prepare writes into ``out``: delete the temporary files a killed earlier run left in
    ``out``, its split lists' folder and each of ``folders`` (``core.files.remove_stale_temps``)."""
    for folder in ("", "ImageSets/Segmentation", *folders):
        remove_stale_temps(out / folder)


# What made a dataset root: ``prepare_voc`` and ``prepare_coco`` write their release's name here, so that ``wsss data
# fetch`` prepares again over its own dataset (SBD added to VOC 2012) and refuses another's.
PREPARED_FILE = ".prepared"


def mark_prepared(root: Path, release: str) -> None:
    """Record that ``root`` holds the dataset prepared from ``release`` ("voc", "coco")."""
    with atomic_write(root / PREPARED_FILE, "w") as f:
        f.write(f"{release}\n")


def prepared_from(root: Path) -> str | None:
    """The release ``root`` was prepared from (:func:`mark_prepared`); None when unmarked."""
    try:
        return (root / PREPARED_FILE).read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


# What preparing a release writes in its dataset root (docs/datasets.md#voc-layout): the masks' folder, the photos'
# (unless --image-mode none), the split lists, the image labels and the class list.
RELEASE_MASKS = {"voc": "SegmentationClassAug", "coco": "SegmentationClass"}
DATASET_FILES = ("classes.txt", "cls_labels.npy", "ImageSets/Segmentation")


def has_files(folder: Path) -> bool:
    """Whether ``folder`` holds a file other than a killed write's temporary (``core.files.is_temp_file``)."""
    return folder.is_dir() and any(not is_temp_file(p.name) for p in folder.iterdir())


def held_outputs(out: Path, names: Iterable[str], inputs: dict[str, Path | None]) -> list[Path]:
    """The outputs ``names`` that ``out`` already holds. An input (``inputs``: flag -> path) that is one of them or
    inside one is a UsageError naming it: replacing the output would delete the input (
    ``--masks OUT/SegmentationClass --overwrite`` deleted the masks, then failed)."""
    found = [out / n for n in names if (out / n).is_file() or has_files(out / n)]
    for flag, path in inputs.items():
        held = next((p for p in found if path is not None and _within(path, p)), None)
        if held is not None:
            where = "is" if path.resolve() == held.resolve() else "is inside"
            raise UsageError(
                f"{path}: the input of {flag} {where} {held}, an output of this command (--overwrite would delete "
                f"it); move it out of {out} or choose another --out"
            )
    return found


def _within(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or inside it (links resolved: the same files by any name)."""
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def remove_outputs(paths: Iterable[Path]) -> None:
    """Remove earlier outputs that ``overwrite`` replaces (a link: the link alone, never what it points to)."""
    for path in paths:
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def prepared_here(out: Path, release: str) -> bool:
    """Whether ``out`` holds the dataset prepared from ``release``: marked (:func:`mark_prepared`), or unmarked with
    the release's masks folder and class list (a wsss before the marker)."""
    from wsss.data.classes import COCO_CLASSES, VOC_CLASSES, read_classes

    made = prepared_from(out)
    if made is not None:
        return made == release
    if not (out / RELEASE_MASKS[release]).is_dir():
        return False
    try:
        return read_classes(out) == (COCO_CLASSES if release == "coco" else VOC_CLASSES)
    except (DataError, OSError):
        return False


def release_outputs(
    out: Path, release: str, command: str, *, images: str, overwrite: bool, inputs: dict[str, Path | None]
) -> list[Path]:
    """What preparing ``release`` into ``out`` must replace first: nothing when ``out`` is empty or holds this
    release's dataset (a rerun continues it, its finished masks kept); else, when ``out`` holds files, the outputs
    found there with ``overwrite`` (the caller removes them, so that no user's photo is paired with the release's
    masks and no split list or class list is mixed), and a UsageError naming them without it. An input
    inside them is refused either way (:func:`held_outputs`)."""
    if not out.is_dir() or not any(out.iterdir()) or prepared_here(out, release):
        return []
    names = [RELEASE_MASKS[release], *DATASET_FILES, *([] if images == "none" else ["JPEGImages"])]
    found = held_outputs(out, names, inputs)
    if not overwrite:
        shown = [
            str(f.relative_to(out))
            for p in found
            for f in (sorted(p.glob("*.txt")) if p.name == "Segmentation" else [p])
        ] or sorted(p.name for p in out.iterdir())
        raise UsageError(
            f"{out}: holds files that `{command}` did not prepare; preparing the release there would replace or mix "
            f"with {', '.join(shown[:5])}{' ...' if len(shown) > 5 else ''}; give another --out, or pass --overwrite "
            "to replace them"
        )
    return found


def write_split(root: Path, name: str, ids: Iterable[str]) -> Path:
    """``root/ImageSets/Segmentation/<name>.txt``: one id a line, atomically."""
    path = root / "ImageSets" / "Segmentation" / f"{name}.txt"
    with atomic_write(path, "w") as f:
        f.write("".join(f"{i}\n" for i in ids))
    return path


def parallel_map(
    fn: Callable[[T], R],
    items: list[T],
    *,
    workers: int = 0,
    desc: str = "",
    progress: bool = True,
    chunksize: int = 16,
) -> Iterator[R]:
    """``fn`` over ``items`` in a process pool (``workers`` > 0) or in-process, with a tqdm bar.

    Results come in completion order. ``fn`` must be a picklable top-level function.
    """
    bar = tqdm(total=len(items), desc=desc, unit="img", disable=not progress, dynamic_ncols=True)
    try:
        if workers <= 0 or len(items) <= 1:
            for item in items:
                yield fn(item)
                bar.update()
            return
        # Not "fork": a fork copies the locks other threads hold at that moment (a progress bar's monitor thread,
        # a writer thread of an earlier job in the same process), and a worker can wait on one forever (seen in
        # the test suite: a pool worker stuck on a futex). The forkserver forks from a clean one-thread process.
        ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(min(workers, len(items))) as pool:
            for res in pool.imap_unordered(fn, items, chunksize=max(1, min(chunksize, len(items) // workers))):
                yield res
                bar.update()
    finally:
        bar.close()


def default_workers() -> int:
    return max(1, (os.cpu_count() or 1))


def first(items: Iterable[Any], n: int = 5) -> str:
    """The first ``n`` items joined for an error message, with a count of the rest."""
    items = list(items)
    text = ", ".join(str(i) for i in items[:n])
    return text + (f" (and {len(items) - n} more)" if len(items) > n else "")


from wsss.data.prepare.coco import prepare_coco  # noqa: E402
from wsss.data.prepare.folder import prepare_folder  # noqa: E402
from wsss.data.prepare.voc import prepare_voc  # noqa: E402

__all__ = ["PrepareSummary", "place_image", "prepare_coco", "prepare_folder", "prepare_voc"]
