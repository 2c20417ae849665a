"""``wsss synth``: the synthetic dataset's files in the VOC layout, each image drawn by :mod:`wsss.data.synth`
(its design, and why it is built so, is there); written in parallel, each file by a rename, resumable."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from wsss.core.errors import OutputError, UsageError
from wsss.core.files import TEMP_SUFFIX, atomic_write, output_error, write_os_error
from wsss.data.classes import write_classes
from wsss.data.synth import (
    CLASS_NAMES,
    CONTEXT_CLASS,
    CONTEXT_NAMES,
    FG,
    P_CONTEXT_WITH_CLASS,
    P_CONTEXT_WITHOUT_CLASS,
    P_RIDER_ON_HORSE,
    render_sample,
)
from wsss.data.voc import SPLIT_DIR, write_cls_labels
from wsss.utils.io import per_id_path, voc_palette


def _sample_id(split: str, index: int, n: int) -> str:
    return f"{split}_{index:0{max(5, len(str(n - 1)))}d}"


_PALETTE = voc_palette().flatten().tolist()


def encode_label_png(mask: np.ndarray) -> bytes:
    """PNG bytes of a class-index map with the VOC palette (the bytes ``save_label_png`` writes)."""
    im = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
    im.putpalette(_PALETTE)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _put(path: Path, data: bytes) -> None:
    """Write via a temporary name + rename (never a truncated file), without the per-file fsync of
    ``atomic_write``: thousands of small files would otherwise cost 1-6 ms each on a busy disk. A full disk or
    an unwritable folder is an ``OutputError`` naming ``path`` (the OS's error of a write names no file: the
    command said "output: cannot write")."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if write_os_error(e) is not None:
            raise output_error(path, e) from e
        raise


def _write_one(args: tuple) -> tuple[str, np.ndarray, dict]:
    out, seed, split, index, n, size, fmt, (p_with, p_without) = args
    out = Path(out)
    sid = _sample_id(split, index, n)
    smp = render_sample(seed, split, index, size, context_with=p_with, context_without=p_without)
    buf = io.BytesIO()
    if fmt == "jpg":
        Image.fromarray(smp.image).save(buf, format="JPEG", quality=95, subsampling=0)
    else:
        Image.fromarray(smp.image).save(buf, format="PNG")
    _put(per_id_path(out / "JPEGImages", sid, f".{fmt}"), buf.getvalue())
    _put(per_id_path(out / "SegmentationClass", sid, ".png"), encode_label_png(smp.mask))
    _put(per_id_path(out / "SegmentationContext", sid, ".png"), encode_label_png(smp.context))
    meta = {"objects": smp.objects, "contexts": smp.contexts, "rider_on_horse": smp.mounted}
    return sid, smp.labels, meta


def generate_synthetic(
    out: str | os.PathLike,
    n_train: int = 800,
    n_val: int = 200,
    size: int = 128,
    seed: int = 0,
    n_workers: int = 0,
    *,
    image_format: str = "jpg",
    context_with: float = P_CONTEXT_WITH_CLASS,
    context_without: float = P_CONTEXT_WITHOUT_CLASS,
    verbose: bool = True,
    overwrite: bool = False,
) -> dict:
    """Write the synthetic co-occurrence dataset (see the module docstring) to ``out``.

    ``context_with`` / ``context_without``: the probability of the water (rails) band in an image with
    a boat (train) and in one without (defaults 0.85 / 0.10; ``synth_meta.json`` records them).

    Returns counts: ``{"train", "val", "images", "class_images": {name: n}, "context_images":
    {name: n}, "rider_on_horse", "seconds"}``, also printed when ``verbose``.

    A folder that already holds a dataset (split lists, ``classes.txt``, ``cls_labels.npy`` or images) is
    refused (UsageError), unless ``overwrite``: then the folders and files this function writes are removed
    first, so no image of the old dataset stays beside the new one.
    """
    _check_synthetic_args(n_train, n_val, size, image_format, context_with, context_without)
    t0 = time.perf_counter()
    out = Path(out)
    _clear_old_dataset(out, overwrite, verbose)
    for d in ("JPEGImages", "SegmentationClass", "SegmentationContext", str(SPLIT_DIR)):
        _mkdir(out / d)
    with atomic_write(out / PARTIAL_MARKER, "w") as f:  # removed last: until then the folder is a partial one
        f.write("wsss synth is writing this dataset; a rerun of wsss synth replaces it\n")
    write_classes(out, CLASS_NAMES)

    jobs = [
        (str(out), seed, split, i, n, size, image_format, (context_with, context_without))
        for split, n in (("train", n_train), ("val", n_val))
        for i in range(n)
    ]
    if n_workers and n_workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=n_workers) as ex:
            results = list(ex.map(_write_one, jobs, chunksize=max(1, len(jobs) // (8 * n_workers))))
    else:
        results = [_write_one(j) for j in jobs]

    labels = {sid: lab for sid, lab, _ in results}
    per_image = {sid: meta for sid, _, meta in results}
    write_cls_labels(out, labels)
    for split, n in (("train", n_train), ("val", n_val)):
        with atomic_write(out / SPLIT_DIR / f"{split}.txt", "w") as f:
            f.write("".join(f"{_sample_id(split, i, n)}\n" for i in range(n)))
    _write_design(out, seed, size, context_with, context_without, per_image)
    (out / PARTIAL_MARKER).unlink()
    counts = _synthetic_counts(n_train, n_val, labels, per_image, t0)
    if verbose:
        print(_describe(out, size, counts))
    return counts


def _describe(out: Path, size: int, counts: dict) -> str:
    """What ``generate_synthetic`` prints: the split sizes, the time, the images per class and context."""
    cls_txt = ", ".join(f"{k} {v}" for k, v in counts["class_images"].items())
    ctx_txt = ", ".join(f"{k} {v}" for k, v in counts["context_images"].items())
    return (
        f"synthetic dataset at {out}: {counts['train']} train + {counts['val']} val images of {size}px "
        f"in {counts['seconds']:.1f}s\n  images per class: {cls_txt}\n  contexts: {ctx_txt}; "
        f"rider on horse: {counts['rider_on_horse']}"
    )


SYNTH_OUTPUTS = (
    "JPEGImages",
    "SegmentationClass",
    "SegmentationContext",
    str(SPLIT_DIR),
    "classes.txt",
    "cls_labels.npy",
    "synth_meta.json",
)
# Present while ``generate_synthetic`` writes: a folder holding it is a synth stopped part-way (a full disk, a
# kill), which a rerun replaces without --overwrite; it used to be refused as "already holds a dataset".
PARTIAL_MARKER = ".wsss_synth_incomplete"


def _clear_old_dataset(out: Path, overwrite: bool, verbose: bool = True) -> None:
    """UsageError if ``out`` holds a dataset (any of ``SYNTH_OUTPUTS``, a folder counting when not empty);
    with ``overwrite``, or when it is a synth stopped part-way (``PARTIAL_MARKER``), those are removed."""
    found = [
        name
        for name in SYNTH_OUTPUTS
        if (out / name).is_file() or (out / name).is_dir() and any((out / name).iterdir())
    ]
    partial = (out / PARTIAL_MARKER).is_file()
    if not found and not partial:
        return
    if not overwrite and not partial:
        raise UsageError(
            f"{out}: already holds a dataset ({', '.join(found)}); pass --overwrite to replace it, "
            "or choose another folder"
        )
    if partial and verbose:
        print(f"{out}: replacing the partial dataset of a wsss synth that stopped part-way")
    try:
        for name in found:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    except OSError as e:
        raise OutputError(f"{e.filename or out}: cannot remove the old dataset ({e.strerror or e})") from e


def _mkdir(path: Path) -> None:
    """``path`` and its parents, an unwritable place an ``OutputError`` naming it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if write_os_error(e) is not None:
            raise output_error(path, e) from e
        raise


def _check_synthetic_args(
    n_train: int, n_val: int, size: int, image_format: str, context_with: float, context_without: float
) -> None:
    if n_train < 0 or n_val < 0:
        raise UsageError("n_train and n_val must be >= 0")
    if size < 32:
        raise UsageError(f"size must be at least 32 px, got {size}")
    if image_format not in ("jpg", "png"):
        raise UsageError("image_format must be 'jpg' or 'png'")
    for name, p in (("context_with", context_with), ("context_without", context_without)):
        if not 0.0 <= p <= 1.0:
            raise UsageError(f"{name} is a probability in [0, 1], got {p}")


def _write_design(
    out: Path, seed: int, size: int, context_with: float, context_without: float, per_image: dict[str, dict]
) -> None:
    """``synth_meta.json``: the generator's settings and each image's objects and contexts."""
    design = {
        "generator": "wsss.data.synth",
        "seed": seed,
        "size": size,
        "classes": CLASS_NAMES,
        "contexts": {
            str(k): {"name": CONTEXT_NAMES[k], "accompanies": CLASS_NAMES[CONTEXT_CLASS[k]]} for k in CONTEXT_NAMES
        },
        "p_context_with_class": context_with,
        "p_context_without_class": context_without,
        "p_rider_on_horse": P_RIDER_ON_HORSE,
        "images": per_image,
    }
    with atomic_write(out / "synth_meta.json", "w") as f:
        json.dump(design, f, indent=1, sort_keys=True)


def _synthetic_counts(
    n_train: int, n_val: int, labels: dict[str, np.ndarray], per_image: dict[str, dict], t0: float
) -> dict:
    lab = np.stack(list(labels.values())) if labels else np.zeros((0, len(FG)), np.float32)
    counts = {
        "train": n_train,
        "val": n_val,
        "images": n_train + n_val,
        "class_images": {CLASS_NAMES[c]: int(lab[:, c - 1].sum()) for c in FG},
        "context_images": {
            name: sum(name in m["contexts"] for m in per_image.values()) for name in CONTEXT_NAMES.values()
        },
        "rider_on_horse": sum(m["rider_on_horse"] for m in per_image.values()),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return counts
