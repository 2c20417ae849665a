"""Masks and image labels from what labelling tools export, for ``wsss prepare folder --masks / --labels``
(docs/datasets.md#masks-from-labelling-tools).

One reader per format, each giving the class-index masks (0 = background, 255 = ignore) of the photos it names:

- :class:`IndexPngs`: a folder of ``<photo stem>.png`` class-index masks;
- :class:`CocoJson`: a COCO instances file (CVAT, Label Studio, Roboflow and LabelMe's converter write one): polygons
  and RLE decoded by pycocotools, overlaps by ``wsss prepare coco``'s rule (crowds first, then the smaller instance on
  top), but a crowd is painted with its class: a tool's crowd (CVAT writes every brush mask as one) is pixels of
  its class;
- :class:`CvatMasks`: CVAT's "Segmentation mask 1.1" export: colour PNGs in ``SegmentationClass/`` whose colours
  ``labelmap.txt`` names;
- :class:`LabelmeFolder`: a folder of LabelMe JSON files, one per photo, shapes drawn in their order (the later on
  top) with PIL as LabelMe's own converter draws them;
- :class:`LabelStudioJson`: Label Studio's JSON export (a list of tasks), its polygon and brush regions decoded by
  ``wsss.data.prepare.labelstudio``.

:func:`open_masks` tells the format from what it is given. Class names are matched to the class list by
``wsss.data.classes.ClassLookup``, as a labels file's are; ``background`` / ``_background_`` are class 0.
"""

from __future__ import annotations

import base64
import io
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from wsss.core.errors import DataError
from wsss.data.classes import ClassLookup
from wsss.data.photos import is_photo
from wsss.data.prepare import first
from wsss.data.prepare.coco import (
    FAR_OUTSIDE,
    IGNORE,
    annotations_by_image,
    has_area,
    load_coco_json,
    read_json,
    semantic_mask,
)
from wsss.data.prepare.labelstudio import (
    AREA_TYPES,
    is_label_studio_json,
    polygon_points,
    read_tasks,
    region_mask,
    without_upload_prefix,
)
from wsss.utils.io import check_image_pixels, open_image, read_label_png, read_text_file

#: Names a tool gives the background (LabelMe's converter: ``_background_``; CVAT: ``background``): class 0.
BACKGROUND_NAMES = ("background", "_background_")
#: How far (pixels) a point may lie outside its photo before it is reported: tools store float edge coordinates.
OUTSIDE_SLACK = 1.0
#: LabelMe's label of pixels to ignore (its examples' ``labels.txt``; ``labelme2voc`` writes 255): not a class.
LABELME_IGNORE = "__ignore__"
#: The most a CVAT ``labelmap.txt`` may hold (a line per label: a few KB) and the most of a line an error quotes.
LABELMAP_MAX_BYTES = 1 << 20
QUOTED_CHARS = 80
#: LabelMe shapes that enclose an area; lines and points do not, and draw nothing (their labels still count).
LABELME_AREAS = ("polygon", "rectangle", "circle", "mask", "oriented_rectangle")
LABELME_NO_AREA = ("line", "linestrip", "point", "points")
#: Roboflow's export renames each photo ``<stem>_<ext>.rf.<hash>.<ext>`` (``a_jpg.rf.3f2a.jpg`` for ``a.jpg``).
ROBOFLOW_NAME = re.compile(r"(?P<stem>.+)_(?P<ext>[A-Za-z0-9]+)\.rf\.[0-9A-Za-z]+\.[A-Za-z0-9]+")
#: How an annotation file's images are matched to the photos, for the error when none is.
MATCH_RULE = (
    "each image is the photo of its file name, a path's folders aside (Roboflow's NAME_jpg.rf.HASH.jpg is "
    "also NAME.jpg)"
)


def _class_of(name: str, lookup: ClassLookup, background: str, number: int) -> int | None:
    """0 for a background name (the class list's own, or a tool's), else the lookup's class (None: unknown)."""
    if name == background or name.casefold() in BACKGROUND_NAMES:
        return 0
    return lookup.lookup(name, number)


def _file_name(path: str) -> str:
    """The file name of a path a tool wrote (``../images/a.jpg``, ``images\\a.jpg``)."""
    return str(path).replace("\\", "/").rsplit("/", 1)[-1]


class _Shapes:
    """Warnings about shapes that reach outside their photo, collected once however often a mask is made."""

    def __init__(self) -> None:
        self.clipped: dict[str, None] = {}
        self.outside: dict[str, None] = {}
        self.no_area: dict[str, None] = {}

    def check(self, xs: np.ndarray, ys: np.ndarray, h: int, w: int, where: str) -> None:
        if xs.size == 0:
            return
        lo, hi = -OUTSIDE_SLACK, OUTSIDE_SLACK
        if xs.max() < 0 or ys.max() < 0 or xs.min() > w or ys.min() > h:
            self.outside[where] = None
        elif xs.min() < lo or ys.min() < lo or xs.max() > w + hi or ys.max() > h + hi:
            self.clipped[where] = None

    @staticmethod
    def drawable(xy: np.ndarray, h: int, w: int, where: str) -> None:
        """DataError for a point that is not a finite number, or lies farther outside the photo than
        ``FAR_OUTSIDE`` times its sides (PIL would draw noise or nothing there, not the shape cut at the edge)."""
        finite = np.isfinite(xy).all(axis=1)
        if not finite.all():
            x, y = xy[np.argmin(finite)].tolist()
            raise DataError(f"{where}: point ({x}, {y}) is not a finite number")
        far = FAR_OUTSIDE * np.array([w, h]) + OUTSIDE_SLACK
        beyond = ((xy < -far) | (xy > np.array([w, h]) + far)).any(axis=1)
        if beyond.any():
            x, y = xy[np.argmax(beyond)].tolist()
            raise DataError(
                f"{where}: point ({x}, {y}) lies far outside the {w}x{h} photo (more than its own "
                "width or height past an edge): the file's coordinates are wrong"
            )

    def warnings(self) -> list[str]:
        out = []
        if self.clipped:
            out.append(
                f"{len(self.clipped)} shape(s) reach outside their photo and were cut at its edge: "
                f"{first(self.clipped)}"
            )
        if self.outside:
            out.append(
                f"{len(self.outside)} shape(s) lie wholly outside their photo and draw nothing: {first(self.outside)}"
            )
        if self.no_area:
            out.append(
                f"{len(self.no_area)} LabelMe line or point shape(s) enclose no area and draw nothing in the "
                f"masks (their classes are still the photo's labels): {first(self.no_area)}"
            )
        return out


class MaskSource:
    """Masks by key (a photo's file name, or stem for PNG masks): :meth:`find` the key of a photo, :meth:`read` its
    mask, :meth:`where` names it in messages."""

    kind = ""
    #: Whether, without a labels file, each photo is labelled with the classes of its mask (:meth:`labels`); else
    #: it has none yet (``wsss tag`` labels it: the way of a folder of class-index PNGs).
    labels_without_labels_file = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self.shapes = _Shapes()
        self.notes: list[str] = []  # warnings met while opening (class names taken but for case ...)
        self.keys: dict[str, Any] = {}

    def find(self, image: Path) -> str | None:
        return image.name if image.name in self.keys else None

    def where(self, key: str) -> str:
        return f"{self.path} ({key})"

    def read(self, key: str) -> np.ndarray:
        raise NotImplementedError

    def converted(self, key: str) -> np.ndarray | None:
        """The mask to check; None where the check reads the file itself (:class:`IndexPngs`)."""
        return self.read(key)

    def declared_size(self, key: str) -> tuple[int, int] | None:
        """The (h, w) the annotation gives its mask, compared with the photo's before :meth:`read` draws it at that
        size; None where unknown until read."""
        return None

    def check_matched(self, images: list[Path], folder: Path) -> None:
        """DataError where a photo of ``images`` (from ``folder``) must match a key and none does (an annotation
        file); by default a source that matches no photo is legal, said in a warning."""

    def ambiguity(self) -> list[str]:
        """Warnings about photos that :meth:`find` matched to no key because several would do."""
        return []

    def unmatched(self, images: list[Path]) -> list[str]:
        """The keys of no photo in ``images``: skipped, and named in a warning."""
        found = {self.find(p) for p in images}
        return sorted(k for k in self.keys if k not in found)

    def warnings(self) -> list[str]:
        return self.notes + self.shapes.warnings()

    def labels(self) -> dict[str, tuple[list[int], str]]:
        """{photo file name: (its classes 1..C-1, where)}: the classes drawn in each photo."""
        raise DataError(
            f"{self.path}: {self.kind} gives no image labels; --labels takes a COCO .json file, a "
            "folder of LabelMe .json files, or a .csv / .txt labels file"
        )


class IndexPngs(MaskSource):
    kind = "class-index PNGs"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.keys = {p.stem: p for p in sorted(path.glob("*.png")) if not p.name.startswith(".")}
        if self.keys and path.name == "SegmentationClass" and (path.parent / "labelmap.txt").is_file():
            _not_cvat_colours(path, next(iter(self.keys.values())))

    def find(self, image: Path) -> str | None:
        return image.stem if image.stem in self.keys else None

    def where(self, key: str) -> str:
        return str(self.keys[key])

    def read(self, key: str) -> np.ndarray:
        return read_label_png(self.keys[key])

    def declared_size(self, key: str) -> tuple[int, int] | None:
        with open_image(self.keys[key], "mask") as im:  # the header only: nothing decoded
            return im.height, im.width

    def converted(self, key: str) -> np.ndarray | None:
        return None

    def unmatched(self, images: list[Path]) -> list[str]:
        return [self.keys[k].name for k in super().unmatched(images)]


def _not_cvat_colours(folder: Path, png: Path) -> None:
    """DataError when ``folder``, CVAT's ``SegmentationClass/`` (``labelmap.txt`` beside it), holds colour masks:
    the export folder is the one to give, not this one."""
    with open_image(png, "mask") as im:
        mode = im.mode
    if mode not in ("P", "L", "I", "I;16"):
        raise DataError(
            f"{folder}: this looks like CVAT's SegmentationClass/ folder ({png.name} is a colour mask, "
            f"mode {mode}): give the export folder that holds labelmap.txt, {folder.parent}"
        )


class CocoJson(MaskSource):
    """A COCO instances file. ``for_masks``: read as ``--masks``, where a file none of whose annotations has an area
    (boxes only) is an error; as ``--labels`` its boxes label their photos."""

    kind = "COCO JSON"

    def __init__(self, path: Path, class_names: list[str], for_masks: bool = True) -> None:
        super().__init__(path)
        data = load_coco_json(path)
        lookup = ClassLookup(class_names, unit="category id")
        used = {a["category_id"] for a in data["annotations"]}  # Roboflow lists a category "objects" nothing uses
        to_class = {
            c["id"]: _class_of(c["name"], lookup, class_names[0], c["id"])
            for c in data["categories"]
            if c["id"] in used
        }
        lookup.check(path)
        self.notes += [w for w in [lookup.case_warning(path)] if w]
        by_image = annotations_by_image(data, to_class, path)
        self.keys = {}
        self.no_area: dict[str, None] = {}  # boxes (an empty segmentation) and polygons of under 3 points
        for im in data["images"]:
            if not by_image.get(im["id"]):  # not annotated (tools list every photo of a task): no mask, no label
                continue
            name = _file_name(im["file_name"])
            if name in self.keys:
                raise DataError(f"{path}: two images named {name!r} (ids {self.keys[name]['id']} and {im['id']})")
            self.keys[name] = {"id": im["id"], "h": im["height"], "w": im["width"], "anns": by_image[im["id"]]}
            self.no_area.update(
                {
                    f"{self.where(name)} annotation {a['id']}": None
                    for a in by_image[im["id"]]
                    if not has_area(a["segmentation"])
                }
            )
        if not self.keys:
            raise DataError(f"{path}: no image has an annotation")
        if for_masks and len(self.no_area) == sum(len(im["anns"]) for im in self.keys.values()):
            raise DataError(
                f"{path}: no annotation has an area (each is a box with no segmentation, or a polygon of "
                "fewer than 3 points), so every mask would be all background; give the file as --labels "
                "only, or export the shapes as polygons or masks"
            )
        self.roboflow = _roboflow_names(self.keys)
        self.ambiguous: dict[str, None] = {}  # photos with two Roboflow names in the file: matched to neither

    def find(self, image: Path) -> str | None:
        if image.name in self.keys:
            return image.name
        names = self.roboflow.get((image.stem, image.suffix[1:].lower()), [])
        if len(names) > 1:
            self.ambiguous[f"{image.name} ({', '.join(names)})"] = None
        return names[0] if len(names) == 1 else None

    def check_matched(self, images: list[Path], folder: Path) -> None:
        if not any(self.find(p) is not None for p in images):
            raise DataError(
                f"{self.path}: none of its {len(self.keys)} annotated images is a photo of {folder} "
                f"({MATCH_RULE}): {first(self.keys)}"
            )

    def where(self, key: str) -> str:
        return f"{self.path} (image {self.keys[key]['id']}, {key})"

    def declared_size(self, key: str) -> tuple[int, int] | None:
        return self.keys[key]["h"], self.keys[key]["w"]

    def read(self, key: str) -> np.ndarray:
        im = self.keys[key]
        try:
            mask = semantic_mask(im["anns"], im["h"], im["w"], crowds_as_class=True)
        except DataError as e:
            raise DataError(f"{self.where(key)}: {e}") from None
        for a in im["anns"]:  # each segmentation passed semantic_mask's checks
            if isinstance(a["segmentation"], list):
                for poly in a["segmentation"]:
                    xy = np.asarray(poly, dtype=np.float64)
                    self.shapes.check(xy[0::2], xy[1::2], im["h"], im["w"], f"{self.where(key)} annotation {a['id']}")
        return mask

    def warnings(self) -> list[str]:
        out = super().warnings()
        if self.no_area:
            out.append(
                f"{len(self.no_area)} annotation(s) are boxes with no segmentation (or polygons of fewer than "
                f"3 points): they draw nothing in the masks: {first(self.no_area)}"
            )
        return out + self.ambiguity()

    def ambiguity(self) -> list[str]:
        if not self.ambiguous:
            return []
        return [
            f"{len(self.ambiguous)} photo(s) have two or more Roboflow names in {self.path} (NAME_jpg.rf.HASH.jpg) "
            f"and match none of them: {first(self.ambiguous)}"
        ]

    def labels(self) -> dict[str, tuple[list[int], str]]:
        # every class drawn, crowds included (a tool's crowd is pixels of its class), and those of boxes
        return {k: (sorted({a["cls"] for a in im["anns"] if a["cls"]}), self.where(k)) for k, im in self.keys.items()}


def _roboflow_names(keys: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    """{(photo stem, suffix in lower case): the keys that Roboflow's renaming made of that photo's name}."""
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    for key in keys:
        m = ROBOFLOW_NAME.fullmatch(key)
        if m is not None:
            out[(m["stem"], m["ext"].lower())].append(key)
    return dict(out)


def read_labelmap(path: Path, class_names: list[str]) -> dict[tuple[int, int, int], int]:
    """{(r, g, b): class index} of a CVAT ``labelmap.txt`` (lines ``name:r,g,b:parts:actions``, ``#`` comments)."""
    lookup = ClassLookup(class_names)
    colours: dict[tuple[int, int, int], tuple[int | None, int]] = {}
    text = read_text_file(path, "label map", max_bytes=LABELMAP_MAX_BYTES)
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.rsplit(":", 3)
        rgb = _rgb(parts[1]) if len(parts) == 4 else None
        if rgb is None:
            quoted = line if len(line) <= QUOTED_CHARS else line[:QUOTED_CHARS] + "..."
            raise DataError(f"{path}:{n}: not a label map line 'name:r,g,b:parts:actions': {quoted!r}")
        cls = _class_of(parts[0].strip(), lookup, class_names[0], n)
        if rgb in colours and colours[rgb][0] != cls:
            raise DataError(f"{path}:{n}: colour {','.join(map(str, rgb))} is already that of line {colours[rgb][1]}")
        colours[rgb] = (cls, n)
    lookup.check(path)
    out = {rgb: cls for rgb, (cls, _) in colours.items() if cls is not None}
    out.setdefault((0, 0, 0), 0)  # CVAT paints what no shape covers black, its background
    return out


def _rgb(text: str) -> tuple[int, int, int] | None:
    """``r,g,b`` as three 0..255 ints; None when it is not that."""
    try:
        r, g, b = (int(v) for v in text.split(","))
    except ValueError:
        return None
    return (r, g, b) if all(0 <= v <= 255 for v in (r, g, b)) else None


def _colour_code(rgb: tuple[int, int, int]) -> int:
    """An opaque RGB colour as the uint32 its RGBA bytes read as (little-endian)."""
    r, g, b = rgb
    return r | (g << 8) | (b << 16) | (255 << 24)


class CvatMasks(IndexPngs):
    kind = "CVAT segmentation mask export"
    labels_without_labels_file = True

    def __init__(self, path: Path, class_names: list[str]) -> None:
        MaskSource.__init__(self, path)
        self.labelmap = path / "labelmap.txt"
        self.colours = read_labelmap(self.labelmap, class_names)
        folder = path / "SegmentationClass"
        if not folder.is_dir():
            raise DataError(f"{path}: a CVAT segmentation mask export holds SegmentationClass/ beside labelmap.txt")
        self.keys = {p.stem: p for p in sorted(folder.glob("*.png")) if not p.name.startswith(".")}
        self.blank: dict[str, None] = {}  # masks all background: legal, but perhaps of a photo nobody annotated

    def converted(self, key: str) -> np.ndarray | None:
        return self.read(key)

    def warnings(self) -> list[str]:
        blank = [
            f"{len(self.blank)} mask(s) of {self.path} are all background (CVAT can export a blank mask for a "
            f"photo nobody annotated; leave such photos out of the export): {first(self.blank)}"
        ]
        return super().warnings() + (blank if self.blank else [])

    def read(self, key: str) -> np.ndarray:
        path = self.keys[key]
        codes, classes = self._classes(key)
        mask = np.zeros(codes.shape, dtype=np.uint8)
        for code, cls in classes.items():
            if cls:  # one pass per colour present: no (H, W) index array, a few bytes a pixel in all
                mask[codes == code] = cls
        if not mask.any():
            self.blank[path.name] = None
        return mask

    def labels(self) -> dict[str, tuple[list[int], str]]:
        """The classes present in each mask; a mask that cannot be read is left out here: the check names it."""
        out = {}
        for k in self.keys:
            try:
                out[k] = (sorted({c for c in self._classes(k)[1].values() if 0 < c < IGNORE}), self.where(k))
            except DataError:
                continue
        return out

    def _classes(self, key: str) -> tuple[np.ndarray, dict[int, int]]:
        """The mask's colours as (H, W) codes (its RGBA bytes read as one little-endian uint32: no per-channel
        arithmetic over the pixels), and {code present: its class}; DataError naming the colours ``labelmap.txt``
        does not name."""
        path = self.keys[key]
        with open_image(path, "mask") as im:
            colour = im.convert("RGB")
            found = colour.getcolors(maxcolors=len(self.colours))  # None: more colours than the label map names
            codes = np.asarray(colour.convert("RGBA")).view("<u4")[..., 0]
            del colour
        table = {_colour_code(rgb): c for rgb, c in self.colours.items()}
        values = [_colour_code(rgb) for _, rgb in found] if found else np.unique(codes).tolist()
        unknown = [v for v in values if v not in table]
        if unknown:
            shown = first(f"{v & 255},{(v >> 8) & 255},{(v >> 16) & 255}" for v in unknown)
            raise DataError(f"{path}: colours that {self.labelmap} does not name: {shown}")
        return codes, {v: table[v] for v in values}


class LabelmeFolder(MaskSource):
    kind = "LabelMe JSON"
    labels_without_labels_file = True

    def __init__(self, path: Path, class_names: list[str]) -> None:
        super().__init__(path)
        self.keys = {}
        self.by_stem: dict[str, str] = {}  # JSON file stem -> key: the photo of that stem, as LabelMe's converters
        case = []
        for p in sorted(path.glob("*.json")):
            data = read_json(p)
            if not isinstance(data, dict) or "shapes" not in data:
                self.notes.append(f"{p}: not a LabelMe file (no 'shapes'): left out")
                continue
            lookup = ClassLookup(class_names, unit="shape")
            try:
                shapes = [
                    (_labelme_class(str(s["label"]), lookup, class_names[0], i), s)
                    for i, s in enumerate(data["shapes"], start=1)
                ]
                name, h, w = _file_name(data["imagePath"]), int(data["imageHeight"]), int(data["imageWidth"])
            except (KeyError, TypeError, ValueError, OverflowError) as e:
                raise DataError(f"{p}: not a LabelMe file ({type(e).__name__}: {e})") from None
            if h <= 0 or w <= 0:
                raise DataError(f"{p}: imageHeight {h} and imageWidth {w} must both be positive")
            check_image_pixels(str(p), h, w, "imageWidth x imageHeight")
            lookup.check(p)
            case += [w for w in [lookup.case_warning(p)] if w]
            if name in self.keys:
                raise DataError(f"{p}: imagePath {name!r} is also that of {self.keys[name]['file']}")
            self.keys[name] = {"file": p, "h": h, "w": w, "shapes": shapes}
            self.by_stem[p.stem] = name
        self.notes += case

    def find(self, image: Path) -> str | None:
        """The file whose imagePath names ``image``; else, when imagePath names no photo beside ``image`` (LabelMe's
        tutorial names the JSON itself; a moved photo), the file named as ``image`` is."""
        if image.name in self.keys:
            return image.name
        key = self.by_stem.get(image.stem)
        if key is None or (is_photo(Path(key)) and (image.parent / key).is_file()):
            return None
        return key

    def where(self, key: str) -> str:
        return str(self.keys[key]["file"])

    def declared_size(self, key: str) -> tuple[int, int] | None:
        return self.keys[key]["h"], self.keys[key]["w"]

    def read(self, key: str) -> np.ndarray:
        """Each shape drawn in its turn, the later on top, as LabelMe's own converter does (PIL, outline included)."""
        entry = self.keys[key]
        h, w = entry["h"], entry["w"]
        out = np.zeros((h, w), dtype=np.uint8)
        for i, (cls, shape) in enumerate(entry["shapes"], start=1):
            where = f"{entry['file']} shape {i}"
            kind = shape.get("shape_type") or "polygon"  # LabelMe 3 wrote no shape_type for polygons
            if kind in LABELME_NO_AREA:
                self.shapes.no_area[where] = None
                continue
            if kind not in LABELME_AREAS:
                raise DataError(
                    f"{where}: unknown shape_type {kind!r} (known: {', '.join(LABELME_AREAS)}, "
                    f"{', '.join(LABELME_NO_AREA)})"
                )
            try:
                xy = np.asarray(shape["points"], dtype=np.float64).reshape(-1, 2)
            except (KeyError, TypeError, ValueError, OverflowError) as e:
                raise DataError(f"{where}: unreadable points ({e})") from None
            self.shapes.drawable(xy, h, w, where)
            self.shapes.check(xy[:, 0], xy[:, 1], h, w, where)
            out[_labelme_area(kind, xy, shape, h, w, where)] = cls
        return out

    def labels(self) -> dict[str, tuple[list[int], str]]:
        """Keyed by imagePath's file name, or by the JSON file's stem where that names no photo."""
        out = {}
        for k, e in self.keys.items():
            drawn = sorted({c for c, _ in e["shapes"] if c is not None and 0 < c < IGNORE})
            out[k if is_photo(Path(k)) else e["file"].stem] = (drawn, str(e["file"]))
        return out


def _labelme_class(name: str, lookup: ClassLookup, background: str, number: int) -> int | None:
    """:func:`_class_of`, LabelMe's ``__ignore__`` the ignore index."""
    return IGNORE if name == LABELME_IGNORE else _class_of(name, lookup, background, number)


def _labelme_area(kind: str, xy: np.ndarray, shape: dict[str, Any], h: int, w: int, where: str) -> np.ndarray:
    """(h, w) bool mask of one LabelMe shape of an area (``LABELME_AREAS``), drawn as ``labelme.utils.shape_to_mask``
    draws it: PIL with the outline, a circle of its centre and a point on it, an oriented rectangle as the polygon
    of its 4 corners, a mask shape's PNG at its corner."""
    need = {"polygon": 3, "rectangle": 2, "circle": 2, "mask": 1, "oriented_rectangle": 4}[kind]
    if len(xy) < need:
        raise DataError(f"{where}: a {kind} needs {need} points, it has {len(xy)}")
    layer = Image.new("1", (w, h), 0)
    draw = ImageDraw.Draw(layer)
    pts = [tuple(p) for p in xy.tolist()]
    if kind in ("polygon", "oriented_rectangle"):
        draw.polygon(pts, outline=1, fill=1)
    elif kind == "rectangle":  # two opposite corners, in either order
        draw.rectangle([*xy.min(axis=0).tolist(), *xy.max(axis=0).tolist()], outline=1, fill=1)
    elif kind == "circle":
        r = float(np.hypot(*(xy[1] - xy[0])))
        cx, cy = xy[0].tolist()
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=1, fill=1)
    else:
        return _labelme_mask_shape(xy, shape, h, w, where)
    return np.asarray(layer, dtype=bool)


def _labelme_mask_shape(xy: np.ndarray, shape: dict[str, Any], h: int, w: int, where: str) -> np.ndarray:
    """A ``mask`` shape: a base64 PNG of its box, placed as labelme places it: its top-left corner at the first point
    rounded, cut to the box of whole-number corners (else the PNG's own size)."""
    try:
        data = base64.b64decode(shape["mask"])
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{where}: unreadable mask ({type(e).__name__}: {e})") from None
    with open_image(io.BytesIO(data), "mask", name=where) as im:
        bits = np.asarray(im) > 0
    bits = bits if bits.ndim == 2 else bits.any(axis=-1)
    corners = np.round(xy[:2]).astype(np.int64)
    x0, y0 = corners[0].tolist()
    if len(xy) >= 2 and np.array_equal(xy[:2], np.trunc(xy[:2])):
        x1, y1 = corners[1].tolist()
        bits = bits[: max(y1 - y0 + 1, 0), : max(x1 - x0 + 1, 0)]
    out = np.zeros((h, w), dtype=bool)
    ys, xs = (
        slice(max(y0, 0), max(min(y0 + bits.shape[0], h), 0)),
        slice(max(x0, 0), max(min(x0 + bits.shape[1], w), 0)),
    )
    out[ys, xs] = bits[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
    return out


FORMATS = "a folder of class-index PNGs, a COCO .json file, a CVAT segmentation mask export folder or a folder of "
FORMATS += "LabelMe .json files, or a Label Studio JSON export"


def open_masks(path: Path, class_names: list[str]) -> MaskSource:
    """The reader of ``--masks``, told from what it is: a ``.json`` file is COCO; a folder with ``labelmap.txt`` is
    CVAT's export; a folder of ``.json`` files is LabelMe's; any other folder holds class-index PNGs."""
    if path.is_file():
        if path.suffix.lower() == ".json":
            return _json_file(path, class_names)
        raise DataError(f"{path}: --masks takes {FORMATS}")
    if not path.is_dir():
        raise DataError(f"{path}: mask folder not found (--masks takes {FORMATS})")
    if (path / "labelmap.txt").is_file():
        return CvatMasks(path, class_names)
    if any(not p.name.startswith(".") for p in path.glob("*.json")):
        labelme = LabelmeFolder(path, class_names)
        if labelme.keys:  # else the JSON files are something else's: the PNGs are the masks
            return labelme
    return IndexPngs(path)


def is_annotation_labels(path: Path) -> bool:
    """Whether ``--labels`` names an annotation file (COCO .json) or folder (LabelMe) rather than a labels file."""
    return path.is_dir() or (path.is_file() and path.suffix.lower() == ".json")


def read_annotation_labels(
    path: Path, class_names: list[str], photos: list[Path] | None = None
) -> tuple[dict[str, tuple[list[int], str]], list[str], str]:
    """{photo file name: (classes drawn in it, where)}, the warnings and the format of a COCO file or a folder of
    LabelMe files or a Label Studio export given as ``--labels``. ``photos``: an entry that matches one of them under
    another name (Roboflow's, Label Studio's upload prefix) is given under the photo's name."""
    source = _json_file(path, class_names, for_masks=False) if path.is_file() else LabelmeFolder(path, class_names)
    if not source.keys:
        raise DataError(
            f"{path}: --labels takes a labels file (.csv, .txt), a COCO .json file or a folder of LabelMe "
            ".json files; this folder holds no LabelMe file"
        )
    table = source.labels()
    names = {p.name for p in photos or []}
    for photo in photos or []:
        key = source.find(photo)
        if key is not None and key not in names and key in table:
            table[photo.name] = table.pop(key)
    return table, source.notes + source.ambiguity(), source.kind


def _json_file(path: Path, class_names: list[str], for_masks: bool = True) -> MaskSource:
    """The reader of a ``.json`` file: Label Studio's export is a list of tasks, COCO's an object."""
    if is_label_studio_json(path):
        return LabelStudioJson(path, class_names)
    return CocoJson(path, class_names, for_masks=for_masks)


class LabelStudioJson(MaskSource):
    """Label Studio's JSON export (``wsss.data.prepare.labelstudio``): a mask per task with an annotation, keyed by
    its photo's file name; a photo is found by that name, else by the name after the upload prefix."""

    kind = "Label Studio JSON export"

    def __init__(self, path: Path, class_names: list[str]) -> None:
        super().__init__(path)
        lookup = ClassLookup(class_names, unit="task")
        said: dict[str, dict[str, None]] = {"earlier": {}, "blank": {}, "skipped": {}}
        for n, task in enumerate(read_tasks(path), start=1):
            classes = [_class_of(r.label, lookup, class_names[0], n) for r in task.regions]
            said["skipped"].update(dict.fromkeys(task.skipped))
            if task.annotations > 1:
                said["earlier"][task.where] = None
            if task.photo in self.keys:
                raise DataError(f"{task.where}: photo {task.photo!r} is also that of {self.keys[task.photo]['where']}")
            if not task.regions:  # nothing drawn, and so no photo size: no mask can be made of it
                said["blank"][task.where] = None
                continue
            self.keys[task.photo] = {"where": task.where, "regions": list(zip(classes, task.regions))}
        lookup.check(path)
        self.notes += [w for w in [lookup.case_warning(path)] if w] + _label_studio_notes(path, said)
        if not self.keys:
            raise DataError(f"{path}: no task has an annotation that draws a polygon or brush region")
        self.stripped: dict[str, str] = {}
        for key in self.keys:
            self.stripped.setdefault(without_upload_prefix(key), key)

    def find(self, image: Path) -> str | None:
        return image.name if image.name in self.keys else self.stripped.get(image.name)

    def where(self, key: str) -> str:
        return f"{self.keys[key]['where']} ({key})"

    def declared_size(self, key: str) -> tuple[int, int] | None:
        return self.keys[key]["regions"][0][1].size

    def read(self, key: str) -> np.ndarray:
        """The regions drawn in their order, the later on top."""
        regions = self.keys[key]["regions"]
        h, w = regions[0][1].size
        out = np.zeros((h, w), dtype=np.uint8)
        for cls, region in regions:
            xy = polygon_points(region) if region.kind == "polygonlabels" else None
            if xy is not None:
                self.shapes.check(xy[:, 0], xy[:, 1], h, w, region.where)
            out[region_mask(region, xy)] = cls
        return out

    def labels(self) -> dict[str, tuple[list[int], str]]:
        return {k: (sorted({c for c, _ in e["regions"] if c}), self.where(k)) for k, e in self.keys.items()}


def _label_studio_notes(path: Path, said: dict[str, dict[str, None]]) -> list[str]:
    out = []
    if said["earlier"]:
        out.append(
            f"{len(said['earlier'])} task(s) of {path} have more than one annotation; the last was read: "
            f"{first(said['earlier'])}"
        )
    if said["skipped"]:
        out.append(
            f"{len(said['skipped'])} region(s) of {path} draw no area (not "
            f"{' / '.join(AREA_TYPES)}) and were skipped: {first(said['skipped'])}"
        )
    if said["blank"]:
        out.append(
            f"{len(said['blank'])} annotated task(s) of {path} draw no polygon or brush region, so their "
            f"photo's size is unknown, and were left out: {first(said['blank'])}"
        )
    return out
