"""Label Studio's JSON export as ``--masks`` / ``--labels`` (docs/datasets.md#masks-from-labelling-tools), and its
brush RLE both ways (``wsss export masks --format labelstudio`` writes it).

An export is a list of tasks, each with ``data.image`` (the photo: ``/data/upload/1/3f2a1b9c-a.jpg`` for an uploaded
one, whose ``<8 hex>-`` prefix Label Studio added; ``/data/local-files/?d=photos/a.jpg`` for a served one) and its
``annotations``, each a ``result`` list of regions drawn in their order, the later on top:

- ``polygonlabels``: points in percent of the photo (x / 100 * ``original_width``), filled with PIL, outline included,
  as the LabelMe reader fills a polygon;
- ``brushlabels``: ``value.rle`` in Label Studio's own RLE (thi-ng's rle-pack) of the photo's RGBA pixels; a pixel is
  painted where its alpha is not 0, the layer ``label_studio_sdk.converter.brush`` decodes.

A task's annotation is its last one that was not cancelled (an earlier one, e.g. a reviewer's first pass, is named in a
warning). A file from a stranger is checked before anything is decoded or allocated: the declared photo size is
bounded, an RLE must hold exactly width * height * 4 values, points must be finite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
from PIL import Image, ImageDraw

from wsss.core.config import MAX_SIDE
from wsss.core.errors import DataError
from wsss.utils.io import check_image_pixels, read_json

#: The region types that draw an area; any other region (a choice, a rectangle of another tag) is skipped, named.
AREA_TYPES = ("polygonlabels", "brushlabels")
#: Label Studio's RLE header: the number of values (32 bits), the word size - 1 (5 bits), four run-length widths - 1.
RLE_SIZES = (3, 4, 8, 16)
UPLOAD_PREFIX = re.compile(r"^[0-9a-fA-F]{8}-")


def is_label_studio_json(path: Path) -> bool:
    """Whether a ``.json`` file is a Label Studio export: its top level is a list (COCO's is an object). Only the
    first character that is not white space is read."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    return head.startswith(b"[")


def photo_name(image: str) -> str:
    """The file name of a task's ``data.image``: the ``d=`` of a local-files URL, else the URL's path, last part."""
    parts = urlsplit(str(image))
    served = parse_qs(parts.query).get("d")
    path = served[0] if served else unquote(parts.path)
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def encode_rle(values: np.ndarray) -> list[int]:
    """Label Studio's RLE of a flat uint8 array, byte for byte what ``label_studio_sdk.converter.brush.encode_rle``
    writes (word size 8, run widths 3, 4, 8, 16 bits; a run over 65,536 split)."""
    flat = np.asarray(values, dtype=np.uint8).ravel()
    bits = [f"{flat.size:032b}", f"{8 - 1:05b}", *(f"{s - 1:04b}" for s in RLE_SIZES)]
    if flat.size:
        ends = np.append(np.flatnonzero(flat[1:] != flat[:-1]), flat.size - 1)
        lengths = np.diff(np.append(-1, ends))
        for length, value in zip(lengths.tolist(), flat[ends].tolist()):
            bits.append(_run_bits(length, value))
    text = "".join(bits)
    text += "0" * (8 - len(text) % 8)  # as Label Studio: a whole zero byte when the bits already fill the last
    return list(np.packbits(np.frombuffer(text.encode("ascii"), np.uint8) - 48).tolist())


def _run_bits(length: int, value: int) -> str:
    if length == 1:
        return f"000000{value:08b}"
    for index, width in enumerate(RLE_SIZES[:3]):
        if length <= 1 << width:
            return f"1{index:02b}{length - 1:0{width}b}{value:08b}"
    out = []
    while length > 1 << 16:
        out.append(f"111{(1 << 16) - 1:016b}{value:08b}")
        length -= 1 << 16
    return "".join(out) + f"111{length - 1:016b}{value:08b}"


class _Bits:
    """Reads big-endian bit fields off an RLE's bytes; DataError past the end."""

    def __init__(self, data: np.ndarray, where: str) -> None:
        self.bits = np.unpackbits(data)
        self.at = 0
        self.where = where

    def read(self, n: int) -> int:
        if self.at + n > self.bits.size:
            raise DataError(f"{self.where}: the RLE ends inside a value (cut or not Label Studio's RLE)")
        out = 0
        for b in self.bits[self.at : self.at + n].tolist():
            out = (out << 1) | b
        self.at += n
        return out


def decode_rle(rle: Any, size: int, where: str, channel: int | None = None) -> np.ndarray:
    """The ``size`` uint8 values of a Label Studio RLE, decoded as ``label_studio_sdk.converter.brush.decode_rle``
    decodes them; with ``channel`` (of RGBA: 3 is alpha) only that channel's ``size // 4`` values, so that a brush's
    mask costs a byte a pixel, not four. DataError (naming ``where``) when its header does not declare ``size``
    values, before any allocation of them, or when it is cut."""
    if not isinstance(rle, list) or not rle or not all(isinstance(v, int) and 0 <= v <= 255 for v in rle):
        raise DataError(f"{where}: 'rle' is not a list of bytes (0..255)")
    bits = _Bits(np.asarray(rle, dtype=np.uint8), where)
    num, word = bits.read(32), bits.read(5) + 1
    sizes = [bits.read(4) + 1 for _ in range(4)]
    if num != size:
        raise DataError(f"{where}: the RLE holds {num:,} values, the photo's RGBA pixels are {size:,}")
    if word > 8:
        raise DataError(f"{where}: RLE words of {word} bits; Label Studio writes 8")
    step, first = (1, 0) if channel is None else (4, channel)
    out = np.zeros(-(-(num - first) // step), dtype=np.uint8)
    i = 0
    while i < num:
        run = bits.read(1)
        j = i + 1 + bits.read(sizes[bits.read(2)])
        if run:  # a run past the end is cut there, as Label Studio's decoder cuts it
            out[-(-(i - first) // step) : -(-(min(j, num) - first) // step)] = bits.read(word)
            i = j
            continue
        if j > num:
            raise DataError(f"{where}: the RLE's values run past the photo's {num:,}")
        for k in range(i, j):
            value = bits.read(word)
            if k % step == first:
                out[k // step] = value
        i = j
    return out


@dataclass
class Region:
    """One region of a task's annotation that draws an area: its class name, its photo's (height, width)."""

    kind: str  # one of AREA_TYPES
    label: str
    value: dict[str, Any]
    size: tuple[int, int]
    where: str


@dataclass
class Task:
    """A task with an annotation: its photo's file name, its last annotation's regions of an area in their order."""

    where: str
    photo: str
    regions: list[Region]
    annotations: int  # how many it has that were not cancelled
    skipped: list[str]  # the regions that draw no area


def read_tasks(path: Path) -> list[Task]:
    """The tasks of an export that have an annotation (not cancelled); DataError for a file that is not an export."""
    data = read_json(path, "Label Studio JSON")
    if not isinstance(data, list) or not all(isinstance(t, dict) and "data" in t for t in data):
        raise DataError(f"{path}: not a Label Studio JSON export (a list of tasks, each with 'data' and 'annotations')")
    out = []
    for n, task in enumerate(data, start=1):
        where = f"{path} task {task.get('id', n)}"
        done = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
        if not done:
            continue  # not annotated (its predictions are drafts): no mask, no label
        data_ = task["data"] if isinstance(task["data"], dict) else {}
        photo = photo_name(data_.get("image", ""))
        if not photo:
            raise DataError(f"{where}: no photo (data.image)")
        regions, skipped = _regions(done[-1], where)
        out.append(Task(where, photo, regions, len(done), skipped))
    return out


def _regions(annotation: dict[str, Any], where: str) -> tuple[list[Region], list[str]]:
    regions, skipped = [], []
    for i, region in enumerate(annotation.get("result") or [], start=1):
        at = f"{where} region {region.get('id', i) if isinstance(region, dict) else i}"
        kind = region.get("type") if isinstance(region, dict) else None
        value = region.get("value") if isinstance(region, dict) else None
        if kind not in AREA_TYPES or not isinstance(value, dict):
            skipped.append(at)
            continue
        names = value.get(kind)
        if not isinstance(names, list) or len(names) != 1:
            raise DataError(f"{at}: {kind} names {names!r}; one class a region")
        regions.append(Region(kind, str(names[0]), value, _size(region, at), at))
    sizes = {r.size for r in regions}
    if len(sizes) > 1:
        shown = ", ".join(f"{w}x{h}" for h, w in sorted(sizes))
        raise DataError(f"{where}: its regions declare different photo sizes ({shown})")
    return regions, skipped


def _size(region: dict[str, Any], where: str) -> tuple[int, int]:
    """(height, width) a region declares, bounded before any mask of it is made."""
    try:
        w, h = int(region["original_width"]), int(region["original_height"])
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{where}: no photo size (original_width / original_height: {e})") from None
    if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE):
        raise DataError(f"{where}: photo size {w}x{h} is out of bounds (sides 1..{MAX_SIDE})")
    check_image_pixels(where, h, w, "the photo size")  # the limit of every image wsss reads
    return h, w


def polygon_points(region: Region) -> np.ndarray:
    """(N, 2) pixel coordinates of a polygon region's points (given in percent of the photo)."""
    try:
        xy = np.asarray(region.value["points"], dtype=np.float64).reshape(-1, 2)
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{region.where}: unreadable points ({e})") from None
    if not np.isfinite(xy).all():
        raise DataError(f"{region.where}: points that are not finite numbers")
    if len(xy) < 3:
        raise DataError(f"{region.where}: a polygon needs 3 points, it has {len(xy)}")
    h, w = region.size
    return xy / 100.0 * np.array([w, h])


def region_mask(region: Region, xy: np.ndarray | None = None) -> np.ndarray:
    """(h, w) bool mask of a region: a brush's painted pixels (alpha not 0), a polygon (its pixel points ``xy``)
    filled with PIL, outline included."""
    h, w = region.size
    if region.kind == "brushlabels":
        if region.value.get("format", "rle") != "rle":
            raise DataError(f"{region.where}: brush format {region.value.get('format')!r}; Label Studio's is 'rle'")
        alpha = decode_rle(region.value.get("rle"), h * w * 4, region.where, channel=3)
        return alpha.reshape(h, w) > 0
    layer = Image.new("1", (w, h), 0)
    points = polygon_points(region) if xy is None else xy
    ImageDraw.Draw(layer).polygon([tuple(p) for p in points.tolist()], outline=1, fill=1)
    return np.asarray(layer, dtype=bool)


def without_upload_prefix(name: str) -> str:
    """A file name without the ``<8 hex>-`` Label Studio puts before an uploaded photo's name."""
    return UPLOAD_PREFIX.sub("", name, count=1)
