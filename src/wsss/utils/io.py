"""File I/O shared by every stage: atomic writes, images, label PNGs with the VOC palette.

Every output of the toolkit goes through ``atomic_write`` (write to a temporary name in the same
directory, then ``os.replace``), so a run killed mid-write never leaves a truncated file behind.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from wsss.core.errors import DataError  # noqa: E402,F401  (re-exported: most readers raise it)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[io.IOBase]:
    """Open a temporary file beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_stale_temps(directory: str | os.PathLike) -> int:
    """Delete the temporary files :func:`atomic_write` leaves in ``directory`` when its process is killed
    between creating and renaming one (SIGKILL runs no ``except``). Call it only where one process owns
    the directory, before that process writes again; returns how many were removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    stale = [p for p in directory.glob(".*.tmp") if p.is_file()]
    for p in stale:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return len(stale)


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """The standard PASCAL VOC colour map (bit-interleaved), as a (num_colors, 3) uint8 array."""
    palette = np.zeros((num_colors, 3), dtype=np.uint8)
    for i in range(num_colors):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


_PALETTE = voc_palette().flatten().tolist()


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an RGB image as (H, W, 3) uint8; grayscale / RGBA / palette images are converted.

    Raises DataError naming the file for a missing, truncated or unreadable image.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            im.load()  # forces a full decode: truncated files fail here, not later
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot read image ({e})") from e


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a class-index mask (palette or single-channel PNG) as (H, W) uint8.

    Palette PNGs hold indices directly; an RGB mask is rejected, because its colours would have to
    be mapped back to indices, which is a conversion the user should do knowingly.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: mask file not found")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "L"):
                arr = np.asarray(im)
            elif im.mode in ("I", "I;16"):
                arr = np.asarray(im)
                if arr.max(initial=0) > 255:
                    raise DataError(f"{path}: mask values above 255 ({int(arr.max())})")
            else:
                raise DataError(
                    f"{path}: mask has mode {im.mode}; expected a palette (P) or single-channel (L) PNG "
                    "holding class indices"
                )
            return arr.astype(np.uint8, copy=True)
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot read mask ({e})") from e


def save_label_png(path: str | os.PathLike, label: np.ndarray) -> None:
    """Write a (H, W) class-index map as a VOC-palette PNG, atomically."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"{path}: label map must be 2-D, got shape {label.shape}")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"{path}: label values must be in 0..255")
    im = Image.fromarray(label.astype(np.uint8), mode="P")
    im.putpalette(_PALETTE)
    with atomic_write(path) as f:
        im.save(f, format="PNG")


def save_npy(path: str | os.PathLike, array: np.ndarray | dict) -> None:
    """np.save, atomically (dicts are pickled, as the cls_labels.npy format requires)."""
    with atomic_write(path) as f:
        np.save(f, array, allow_pickle=isinstance(array, dict))


def save_cam(path: str | os.PathLike, cam: np.ndarray, labels: np.ndarray) -> None:
    """The CAM file format (interface.md): a dict with ``keys`` (1-based ids of the labelled classes)
    and ``cam`` ((K, H, W) float16 in [0, 1]), the rows of ``cam`` (C-1, H, W) that ``labels`` marks."""
    keys = np.flatnonzero(labels > 0.5)
    save_npy(path, {"keys": keys + 1, "cam": cam[keys].astype(np.float16)})


def load_cam(path: str | os.PathLike, num_fg: int) -> np.ndarray:
    """A saved CAM file -> (C-1, H, W) float32 with zeros for the absent classes."""
    try:
        d = np.load(path, allow_pickle=True).item()
        keys, cam = np.asarray(d["keys"]), np.asarray(d["cam"], dtype=np.float32)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{path}: cannot read CAM file ({e})") from e
    full = np.zeros((num_fg, *cam.shape[1:]), dtype=np.float32)
    full[keys - 1] = cam
    return full
