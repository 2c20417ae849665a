"""File I/O shared by every stage: images, label PNGs with the VOC palette, per-id output paths (checked to
stay inside their folder), the CAM file format and the user's text files.

Every output goes through ``wsss.core.files.atomic_write`` (write to a temporary name in the same directory,
then ``os.replace``), so a run killed mid-write never leaves a truncated file behind.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import stat
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
from PIL import Image, ImageOps

from wsss.core.errors import DataError
from wsss.core.files import atomic_write, retry_transient
from wsss.core.safe_load import read_npz

T = TypeVar("T")
R = TypeVar("R")
_END = object()


def plural(n: int, noun: str) -> str:
    """'1 image', '2 images', '2 classes' (for messages and reports)."""
    if n == 1:
        return f"{n} {noun}"
    return f"{n} {noun}es" if noun.endswith(("s", "x", "ch", "sh")) else f"{n} {noun}s"


def describe_path(path: str | os.PathLike) -> str:
    """``path`` for a message; a relative one also shows what it resolved to (it is read from the
    current directory, which is a common surprise)."""
    path = Path(path)
    return str(path) if path.is_absolute() else f"{path} (resolved from the current directory: {path.resolve()})"


def read_text_file(path: str | os.PathLike, what: str, max_bytes: int | None = None) -> str:
    """The text of a UTF-8 file the user gives (a split list, ``classes.txt``, a labels file), a byte-order
    mark at its start removed (Windows' Notepad and Excel write one: kept, it would join the first id or
    class name). DataError naming the file and ``what`` it is when it cannot be read, or when it holds more than
    ``max_bytes`` (no more than that is read: a file that is small by nature, such as a label map)."""
    try:
        if max_bytes is None:
            return Path(path).read_text(encoding="utf-8-sig")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise DataError(f"{path}: more than {max_bytes} bytes, too long for {what}")
        return data.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read {what} ({e})") from e


#: The largest JSON file read (an annotation file): well above the official COCO files, which must be read.
MAX_JSON_BYTES = 4 << 30


def read_json(path: Path, what: str = "JSON") -> Any:
    """The JSON of a regular file of at most ``MAX_JSON_BYTES`` (a FIFO is refused, not waited on); every problem of
    reading it, nesting too deep for the parser included, a one-line DataError."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise DataError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    with open(fd, encoding="utf-8-sig") as f:  # utf-8-sig: a byte order mark, as some Windows tools write, is read
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DataError(f"{path}: not a regular file, so not read as {what}")
        if info.st_size > MAX_JSON_BYTES:
            raise DataError(f"{path}: {info.st_size} bytes, more than the {MAX_JSON_BYTES} a {what} file may have")
        try:
            return json.load(f)
        except RecursionError:
            raise DataError(f"{path}: cannot read {what} (nested too deeply)") from None
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise DataError(f"{path}: cannot read {what} ({e})") from None


#: Column separators of a CSV file: ``,``, or the ``;`` (and tab) a spreadsheet writes where ``,`` is the decimal mark.
CSV_SEPARATORS = (",", ";", "\t")


def csv_rows(text: str) -> tuple[list[list[str]], str]:
    """The rows of a CSV file's text and their column separator: ``,``, or, when the header line holds no comma, the
    ``;`` or tab of a spreadsheet saved where ``,`` is the decimal mark (Excel in much of Europe)."""
    header = text.split("\n", 1)[0]
    sep = next((s for s in CSV_SEPARATORS if s in header), ",")
    return list(csv.reader(text.splitlines(), delimiter=sep)), sep


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


# EXIF orientations (tag 0x0112) that swap width and height: the photo is shown rotated by 90 degrees.
_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


# What Pillow raises for a file it cannot read: OSError (unknown format, truncated data), SyntaxError and
# ValueError (a malformed header), and DecompressionBombError (more pixels than ``Image.MAX_IMAGE_PIXELS``
# allows twice over), which derives from none of them: it used to come out of `wsss cam`, `predict`, `viz`
# and `eval` as a traceback.
IMAGE_ERRORS: tuple[type[Exception], ...] = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def max_image_pixels() -> int | None:
    """The most pixels the toolkit reads in one image (a photo, a mask, a picture inside an annotation file), or
    None for no limit: the size at which Pillow refuses a file as a decompression bomb, twice
    ``PIL.Image.MAX_IMAGE_PIXELS`` (read at each call: a Python caller raises both by raising Pillow's)."""
    limit = Image.MAX_IMAGE_PIXELS
    return None if limit is None else 2 * int(limit)


def check_image_pixels(where: str, height: int, width: int, what: str = "image") -> None:
    """DataError when ``what`` of ``where``, ``height`` x ``width`` by its header or its file's word, has more pixels
    than :func:`max_image_pixels`: checked before anything of that size is decoded or allocated."""
    limit = max_image_pixels()
    if limit is not None and height * width > limit:
        raise DataError(
            f"{where}: {what} of {width}x{height} ({height * width} pixels) is over the limit of {limit} "
            "pixels an image may have (Pillow's decompression bomb limit, twice "
            "PIL.Image.MAX_IMAGE_PIXELS, which a Python caller may raise)"
        )


@contextlib.contextmanager
def open_image(
    path: str | os.PathLike | IO[bytes], what: str = "image", name: str | None = None
) -> Iterator[Image.Image]:
    """``PIL.Image.open(path)`` as a context, every reading error in it (the block's decoding included) a
    DataError ``"<path>: cannot read <what> (...)"``: the one way the toolkit opens an image or a mask file.
    Its header size is checked against :func:`max_image_pixels` before the block decodes it. A DataError the block
    raises passes unchanged. ``name``: what messages call ``path`` (for a file object: the file that holds it)."""
    where = str(path) if name is None else name
    try:
        with Image.open(path) as im:
            check_image_pixels(where, im.height, im.width, what)
            yield im
    except DataError:
        raise
    except IMAGE_ERRORS as e:
        raise DataError(f"{where}: cannot read {what} ({e})") from e


def exif_orientation(path: str | os.PathLike) -> int:
    """The EXIF orientation tag of an image file (1 = as stored, also when absent or unreadable)."""
    try:
        with open_image(path) as im:
            return int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except (DataError, TypeError):
        return 1


def exif_swaps_sides(orientation: int) -> bool:
    """Whether EXIF ``orientation`` shows the stored image turned by 90 degrees (width and height swap)."""
    return orientation in _TRANSPOSING_ORIENTATIONS


def decode_rgb(im: Image.Image) -> np.ndarray:
    """A decoded PIL image -> (H, W, 3) uint8, scaled to the 8-bit range by what its mode means.

    Pillow's ``convert("RGB")`` clips a 16-bit or 32-bit grayscale image at 255 instead of scaling it,
    which turns a 16-bit photo white. Here: ``I;16*`` and ``I`` (PNG / TIFF 16-bit gray,
    read as 0..65535) are divided by 257 (65535 -> 255, values above 65535 clipped); ``F`` (float) in
    [0, 1] is multiplied by 255, otherwise clipped to 0..255; every other mode (1, L, P, LA, PA, RGBA,
    CMYK, YCbCr, LAB, HSV, RGB) goes through Pillow's conversion, which is exact for 8-bit data.
    """
    if im.mode.startswith("I;16") or im.mode == "I":
        gray = np.asarray(im).astype(np.float64)
        gray = np.clip(np.rint(gray / 257.0), 0, 255)
    elif im.mode == "F":
        gray = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if gray.size and gray.min() >= 0.0 and gray.max() <= 1.0:
            gray = gray * 255.0
        gray = np.clip(np.rint(gray), 0, 255)
    else:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    return np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)


def read_image(path: str | os.PathLike, max_side: int | None = None) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB, as it is shown: EXIF orientation applied, any mode
    scaled to 8 bits (:func:`decode_rgb`: 16-bit gray is scaled, not clipped).

    The one reader of images for every command (training, CAM, prediction, reports), so all see the
    photo upright. Masks are not EXIF-rotated (:func:`read_label_png`; PNG masks carry no EXIF, and
    check-data names the orientation tag when it explains a size mismatch). Raises DataError naming the
    file for a missing, truncated or unreadable image.

    ``max_side``: the image shrunk (aspect kept, bilinear) to that longest side if it is longer, for a reader
    that needs no more (``wsss viz``: a picture); a JPEG is then decoded at a reduced scale already.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    return retry_transient(lambda: _read_image(path, max_side))


def _read_image(path: Path, max_side: int | None) -> np.ndarray:
    with open_image(path) as im:
        if max_side is not None and im.format == "JPEG":
            im.draft(im.mode, (max_side, max_side))  # DCT scaling: a 1/8 decode of a 13000-px photo is 1/64 of it
        im.load()  # forces a full decode: truncated files fail here, not later
        small = _reduced(im, max_side) if max_side is not None else im
        upright = ImageOps.exif_transpose(small)
        rgb = decode_rgb(upright if upright is not None else small)
    h, w = rgb.shape[:2]
    if max_side is not None and max(h, w) > max_side:
        scale = max_side / max(h, w)  # as data.transforms.resize_long_side
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR), dtype=np.uint8).copy()
    return rgb


def _reduced(im: Image.Image, max_side: int) -> Image.Image:
    """``im`` box-averaged by the largest whole factor that keeps its longer side at ``max_side`` or more, before
    any copy of it is made (the EXIF turn, the mode conversion: each was a full-size copy, 0.5 GB for a
    13000-px photo); ``im`` itself when no factor of 2 or more fits, or for a mode Pillow cannot reduce."""
    factor = max(im.size) // max_side
    if factor < 2:
        return im
    try:
        return im.reduce(factor)
    except (ValueError, OSError):  # e.g. a palette or a 16-bit image: decoded at full size, shrunk after
        return im


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) of an image as :func:`read_image` returns it (EXIF orientation applied), from its header."""
    with open_image(path) as im:
        h, w = im.height, im.width
        orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    return (w, h) if exif_swaps_sides(orientation) else (h, w)


IGNORE = 255  # a label map's "not labelled" value (0 is the background, k the class on line k of the list)


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a class-index mask (palette or single-channel PNG) as (H, W) uint8.

    Palette PNGs hold indices directly; an RGB mask is rejected, because its colours would have to
    be mapped back to indices, which is a conversion the user should do knowingly.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: mask file not found")
    return retry_transient(lambda: _read_label_png(path))


def _read_label_png(path: Path) -> np.ndarray:
    with open_image(path, "mask") as im:
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


def save_overlay(
    path: str | os.PathLike,
    image: np.ndarray,
    label: np.ndarray,
    alpha: float = 0.5,
    class_names: Sequence[str] | None = None,
) -> None:
    """Write ``image`` ((H, W, 3) uint8) with the VOC palette colour of each class in ``label`` ((H, W)) blended
    in at ``alpha``, as a JPEG (``.jpg``/``.jpeg``) or PNG by the suffix of ``path``, atomically. Background (0)
    and ignore (255) pixels keep the photo as it is: the mask's black background would hide it. With
    ``class_names``, a legend in the top left corner names the colour of each class shown (:func:`draw_legend`)."""
    image, label = np.asarray(image), np.asarray(label)
    if image.shape[:2] != label.shape:
        raise ValueError(f"{path}: the label map {label.shape} is not the image's size {image.shape[:2]}")
    colour = voc_palette()[label.astype(np.int64)].astype(np.float32)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colour
    keep = ((label == 0) | (label == 255))[..., None]
    picture = Image.fromarray(np.where(keep, image, np.clip(np.rint(blended), 0, 255).astype(np.uint8)))
    if class_names is not None:
        shown = [int(c) for c in np.unique(label) if 0 < c < len(class_names)]
        draw_legend(picture, [(class_names[c], tuple(int(v) for v in voc_palette()[c])) for c in shown])
    jpeg = Path(path).suffix.lower() in (".jpg", ".jpeg")
    with atomic_write(path) as f:
        picture.save(f, format="JPEG" if jpeg else "PNG", **({"quality": 90} if jpeg else {}))


def draw_legend(picture: Image.Image, entries: Sequence[tuple[str, tuple[int, ...]]]) -> bool:
    """Draw a box of ``entries`` (name, RGB colour: a swatch and the name a row) in the top left corner of
    ``picture``, its text scaled to the picture's height; whether it was drawn: not on a picture too small to keep
    half of its width and height clear of it, nor without entries."""
    from PIL import ImageDraw, ImageFont

    if not entries:
        return False
    size = max(10, round(picture.height / 40))
    try:
        font = ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # an older Pillow, or one without FreeType: its bitmap font
        font = ImageFont.load_default()
    draw = ImageDraw.Draw(picture)
    row, pad = round(size * 1.4), max(2, size // 3)
    text_w = max(draw.textbbox((0, 0), name, font=font)[2] for name, _ in entries)
    box_w, box_h = 3 * pad + size + text_w, pad + row * len(entries)
    if 2 * box_w > picture.width or 2 * box_h > picture.height:
        return False
    draw.rectangle((0, 0, box_w, box_h), fill=(255, 255, 255))
    for k, (name, rgb) in enumerate(entries):
        top = pad + k * row
        draw.rectangle((pad, top, pad + size, top + size), fill=tuple(rgb), outline=(0, 0, 0))
        draw.text((2 * pad + size, top), name, fill=(0, 0, 0), font=font)
    return True


def save_npy(path: str | os.PathLike, array: np.ndarray | dict, *, pickled_dict: bool = False) -> None:
    """np.save, atomically. Plain arrays only, unless ``pickled_dict``: the PSA / ToCo cls_labels.npy
    format is a pickled dict, written so for the other codes that read it (we read it back with
    ``safe_load.read_npy``); every other output of the toolkit is pickle-free."""
    if isinstance(array, dict) != pickled_dict:
        raise TypeError(f"{path}: save_npy writes a dict only with pickled_dict=True (got {type(array).__name__})")
    with atomic_write(path) as f:
        np.save(f, array, allow_pickle=pickled_dict)


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Named arrays as an uncompressed .npz (no pickle: object arrays are refused), atomically."""
    for name, a in arrays.items():
        if np.asarray(a).dtype.hasobject:
            raise TypeError(f"{path}: array {name!r} holds Python objects; save_npz writes plain arrays only")
    with atomic_write(path) as f:
        np.savez(f, allow_pickle=False, **arrays)


def id_problem(id: str) -> str | None:
    """Why ``id`` cannot name a file inside an output folder, or None if it can: ids become file names
    (``predictions/<split>/<id>.png``), so no path separator, no ``.``/``..``, nothing absolute."""
    if not id:
        return "the id is empty"
    if "/" in id or "\\" in id:
        return "it contains a path separator"
    if id in (".", ".."):
        return f"it is {id!r}"
    if "\x00" in id:
        return "it contains a NUL character"
    return None


def per_id_path(folder: str | os.PathLike, id: str, suffix: str) -> Path:
    """``folder/<id><suffix>``, checked to stay inside ``folder``: every writer of per-id outputs
    builds its paths here, so an id from a stranger's split list cannot write (or be read) elsewhere
    (DataError)."""
    problem = id_problem(str(id))
    folder = Path(folder)
    path = folder / f"{id}{suffix}"
    if problem is None and os.path.commonpath([os.path.abspath(folder), os.path.abspath(path)]) != os.path.abspath(
        folder
    ):
        problem = "it leads outside the folder"
    if problem is not None:
        raise DataError(f"{path}: refused path for id {id!r}: {problem}")
    return path


# ---- the CAM file format (docs/run-directory.md#contents) --------------------------------------------------
# ``cams/<split>/<id>.npz``: arrays ``keys`` (1-based ids of the image's labelled classes, int64: ``class_ids``
# here) and ``cam`` ((K, H, W) float16 in [0, 1], one map per id). In memory a CAM's classes are the 0-based
# foreground indices (``classes``: class id - 1). No pickle: a CAM folder copied from elsewhere is read with
# ``allow_pickle=False``.

CAM_SUFFIX = ".npz"


def find_cam_file(folder: str | os.PathLike, id: str) -> Path | None:
    """``folder/<id>.npz``, or None if there is none."""
    path = per_id_path(folder, id, CAM_SUFFIX)
    return path if path.is_file() else None


def missing_cam_ids(folder: str | os.PathLike, ids: Iterable[str]) -> list[str]:
    """The ids of ``ids`` with no CAM file in ``folder``."""
    return [i for i in ids if find_cam_file(folder, i) is None]


def as_saved_cam(cam: np.ndarray) -> np.ndarray:
    """A CAM's values as its file holds them (float16), as float32: what is computed from a CAM just made is then
    what the same computation gives from its file read back (a seed on the threshold falls the same way)."""
    return np.asarray(cam).astype(np.float16).astype(np.float32)


def save_cam(folder: str | os.PathLike, id: str, cam: np.ndarray, labels: np.ndarray) -> Path:
    """Write ``folder/<id>.npz`` atomically: the rows of ``cam`` ((C-1, H, W)) that ``labels`` marks,
    as float16, with their 1-based class ids."""
    classes = np.flatnonzero(np.asarray(labels) > 0.5)
    return save_labelled_cam(folder, id, classes, np.asarray(cam)[classes])


def save_labelled_cam(folder: str | os.PathLike, id: str, classes: np.ndarray, cam: np.ndarray) -> Path:
    """:func:`save_cam` from the labelled classes' maps only: ``classes`` 0-based foreground, ``cam`` (K, H, W)."""
    path = per_id_path(folder, id, CAM_SUFFIX)
    class_ids = (np.asarray(classes) + 1).astype(np.int64)
    save_npz(path, keys=class_ids, cam=np.asarray(cam).astype(np.float16))
    return path


def read_cam(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """A CAM file (.npz) -> (1-based class ids (K,) int64, (K, H, W) float32). The one reader of CAM files:
    DataError naming the file if unreadable, malformed, or holding a non-finite value."""
    path = Path(path)
    d = read_npz(path, ("keys", "cam"), "CAM file")
    try:
        class_ids = np.asarray(d["keys"]).astype(np.int64).reshape(-1)
        cam = np.asarray(d["cam"], dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: not a CAM file ({e})") from e
    if cam.ndim != 3 or cam.shape[0] != class_ids.shape[0]:
        raise DataError(f"{path}: CAM of shape {cam.shape} does not fit its {class_ids.shape[0]} class ids")
    bad = int(cam.size - np.count_nonzero(np.isfinite(cam)))
    if bad:  # a NaN compares false with every level: it became a class or background without a word
        raise DataError(
            f"{path}: CAM holds {bad} non-finite value(s) (NaN or inf) of {cam.size}; "
            "make it again with `wsss cam RUN --split SPLIT --overwrite`"
        )
    return class_ids, cam


def load_labelled_cam(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """A saved CAM file -> (0-based foreground ``classes`` (K,) ascending, (K, H, W) float32)."""
    class_ids, cam = read_cam(path)
    order = np.argsort(class_ids, kind="stable")
    if (order == np.arange(order.size)).all():  # as save_cam writes them: no copy of the maps
        return class_ids - 1, cam
    return class_ids[order] - 1, cam[order]


def _checked_classes(path: Path, num_fg: int) -> tuple[np.ndarray, np.ndarray]:
    classes, cam = load_labelled_cam(path)
    if classes.size and (classes.min() < 0 or classes.max() >= num_fg):
        raise DataError(f"{path}: class ids {(classes + 1).tolist()} outside 1..{num_fg}")
    return classes, cam


def load_cam(path: str | os.PathLike, num_fg: int) -> np.ndarray:
    """A saved CAM file -> (C-1, H, W) float32 with zeros for the absent classes."""
    classes, cam = _checked_classes(Path(path), num_fg)
    full = np.zeros((num_fg, *cam.shape[1:]), dtype=np.float32)
    full[classes] = cam
    return full


def _cam_file_of(folder: str | os.PathLike, id: str) -> Path:
    path = find_cam_file(folder, id)
    if path is None:
        raise DataError(f"{per_id_path(folder, id, CAM_SUFFIX)}: no CAM file for id {id!r}")
    return path


def load_cam_of(folder: str | os.PathLike, id: str, num_fg: int) -> np.ndarray:
    """The saved CAM of ``id`` in ``folder`` (see :func:`load_cam`); DataError if there is none."""
    return load_cam(_cam_file_of(folder, id), num_fg)


def load_labelled_cam_of(folder: str | os.PathLike, id: str, num_fg: int) -> tuple[np.ndarray, np.ndarray]:
    """The saved CAM of ``id`` in ``folder`` as :func:`load_labelled_cam` gives it (the maps of the classes in the
    file only), its classes checked against the ``num_fg`` foreground classes as :func:`load_cam` checks them."""
    return _checked_classes(_cam_file_of(folder, id), num_fg)


def read_in_order(read: Callable[[T], R], items: Sequence[T], ahead: int = 0) -> Iterator[R]:
    """``read(item)`` for each item, in order; with ``ahead`` > 0, up to ``ahead`` of the next items are read in
    that many threads while the caller works on the current one (a loader's prefetch: PNG, zlib and file reads
    release the GIL). An error of ``read`` is raised when its item's turn comes, as without read-ahead. Close the
    iterator (``contextlib.closing``) when leaving early: the reads in flight are then waited for."""
    if ahead <= 0:
        yield from map(read, items)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="wsss-read") as pool:
        pending = deque(pool.submit(read, item) for item in items[:ahead])
        following = iter(items[ahead:])
        try:
            while pending:
                result = pending.popleft().result()
                nxt = next(following, _END)
                if nxt is not _END:
                    pending.append(pool.submit(read, nxt))
                yield result
        finally:
            for f in pending:
                f.cancel()
