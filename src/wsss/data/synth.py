"""A synthetic co-occurrence dataset in the VOC layout: the testbed of the tests, the demo and the
CPU benchmarks.

Weakly supervised segmentation learns pixels from image-level labels, so a classifier is free to
use anything that predicts a label, including *context*: VOC's "boat" is nearly always on water,
"train" on rails, and CAMs spill onto water and rails (the co-occurrence problem that SeCo, RCA and
SC-CAM address). This generator reproduces that problem on small images, with ground truth for
everything.

Classes (``classes.txt``: background + 6)

====  ========  ===========================================  ==============  ===================
id    class     shape                                        colour (hue)    texture
====  ========  ===========================================  ==============  ===================
1     boat      trapezoid hull + triangular sail + mast      red (0) / white horizontal stripes
2     train     long body, window row, 4 round wheels        yellow (48)     windows (dark rects)
3     horse     ellipse body, neck, head, 4 legs, tail       brown (25)      blotchy noise
4     rider     round head, torso, arm bar (a cross)         green (115)     vertical stripes
5     bird      five-pointed star                            violet (275)    dots
6     bottle    body + shoulders + narrow neck               teal (170)      noise + highlight
====  ========  ===========================================  ==============  ===================

Each instance varies its hue (+-8..25 deg), saturation and value; with probability 0.2 its hue is
drawn uniformly instead (colour alone is not a reliable cue), and shapes vary in aspect ratio.

Contexts (ground truth = BACKGROUND; image-wide horizontal bands)

=========  =====================================  ==============  ================================
context    look                                   accompanies     frequency
=========  =====================================  ==============  ================================
water      blue band, wavy top, wave stripes      boat            85 % of boat images (the boat
                                                                  floats in it); 10 % of images
                                                                  without a boat
rails      brown gravel, dark sleepers, 2 rails   train           85 % of train images (the train
                                                                  stands on it); 10 % of images
                                                                  without a train
=========  =====================================  ==============  ================================

The two frequencies are parameters (``context_with`` / ``context_without``, ``wsss synth --context-with
P --context-without P``): ``--context-with 0.95 --context-without 0.03`` makes the context a near-sure
cue of its class, as rails are of trains in VOC (BENCHMARKS.md: the CAM baseline preset's segmentation
then calls far more of the rails "train" than with the defaults).

Co-occurring pair: a rider sits on the horse (touching, overlapping its back) in 70 % of horse
images; riders also appear alone (without a horse) in other images.

Per image: 1-3 object groups (P = 0.5 / 0.35 / 0.15), classes drawn without replacement (rider
with half weight), plus the mounted rider; at most 3 objects. Each object covers about 5-35 % of
the image (less when there are several). Background: a smooth random colour field + pixel noise.
Masks: a void band (255) of ``2 * max(1, round(size / 128))`` px around every object boundary,
like VOC. ``cls_labels.npy`` is computed from the final masks, so labels and masks always agree.

Extra outputs, beyond the VOC layout (nothing requires them): ``SegmentationContext/<id>.png``
(1 = water, 2 = rails, only at pixels that are background in the ground truth: the pixels where a
CAM of boat/train is a co-occurrence false positive) and ``synth_meta.json`` (design + per-image
objects and contexts).

Determinism: image ``i`` of split ``s`` is drawn from ``np.random.default_rng([seed, s, i])``, so
images are independent of each other and of ``n_workers``; the same seed gives byte-identical files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache, lru_cache

import cv2
import numpy as np

CLASS_NAMES: list[str] = ["background", "boat", "train", "horse", "rider", "bird", "bottle"]
BOAT, TRAIN, HORSE, RIDER, BIRD, BOTTLE = range(1, 7)
FG = [BOAT, TRAIN, HORSE, RIDER, BIRD, BOTTLE]

CONTEXT_NAMES = {1: "water", 2: "rails"}
WATER, RAILS = 1, 2
CONTEXT_CLASS = {WATER: BOAT, RAILS: TRAIN}

P_CONTEXT_WITH_CLASS = 0.85
P_CONTEXT_WITHOUT_CLASS = 0.10
P_RIDER_ON_HORSE = 0.70
P_N_GROUPS = (0.5, 0.35, 0.15)
GROUP_WEIGHTS = {BOAT: 1.0, TRAIN: 1.0, HORSE: 1.0, RIDER: 0.5, BIRD: 1.0, BOTTLE: 1.0}
P_RANDOM_HUE = 0.2
MAX_AREA = {1: 0.4, 2: 0.25, 3: 0.18}  # max fraction of the image per object, by object count
MIN_AREA = 0.06

SPLIT_CODES = {"train": 0, "val": 1}

# class -> (hue deg, hue jitter, sat range, val range)
_COLOURS = {
    BOAT: (0.0, 12.0, (0.6, 0.9), (0.65, 0.95)),
    TRAIN: (48.0, 8.0, (0.65, 0.95), (0.8, 0.98)),
    HORSE: (25.0, 8.0, (0.45, 0.8), (0.3, 0.6)),
    RIDER: (115.0, 15.0, (0.5, 0.9), (0.5, 0.9)),
    BIRD: (275.0, 15.0, (0.45, 0.85), (0.55, 0.9)),
    BOTTLE: (170.0, 10.0, (0.5, 0.85), (0.45, 0.8)),
}
_ASPECT = {BOAT: 1.3, TRAIN: 2.4, HORSE: 1.35, RIDER: 0.62, BIRD: 1.0, BOTTLE: 0.42}  # w / h

_SHIFT = 4  # cv2 fixed-point bits for sub-pixel drawing
_ONE = 1 << _SHIFT


# --------------------------------------------------------------------------------------------------
# shapes: each returns a list of (part, primitive) in unit-box coordinates (x right, y down)
# --------------------------------------------------------------------------------------------------


def _shape(cls: int) -> list[tuple[str, tuple]]:
    if cls == BOAT:
        return [
            ("main", ("poly", [(0.0, 0.6), (1.0, 0.6), (0.8, 1.0), (0.2, 1.0)])),
            ("mast", ("poly", [(0.44, 0.0), (0.49, 0.0), (0.49, 0.62), (0.44, 0.62)])),
            ("sail", ("poly", [(0.49, 0.04), (0.49, 0.56), (0.88, 0.56)])),
            ("sail", ("poly", [(0.43, 0.1), (0.43, 0.56), (0.15, 0.56)])),
        ]
    if cls == TRAIN:
        parts = [
            ("main", ("poly", [(0.0, 0.05), (0.9, 0.05), (1.0, 0.3), (1.0, 0.85), (0.0, 0.85)])),
        ]
        for x in (0.12, 0.32, 0.52, 0.72):
            parts.append(("window", ("poly", [(x, 0.18), (x + 0.12, 0.18), (x + 0.12, 0.45), (x, 0.45)])))
        for x in (0.12, 0.3, 0.7, 0.88):
            parts.append(("wheel", ("ellipse", (x, 0.86, 0.07, 0.14))))
        return parts
    if cls == HORSE:
        return [
            ("main", ("ellipse", (0.45, 0.42, 0.32, 0.18))),
            ("main", ("poly", [(0.66, 0.36), (0.78, 0.08), (0.88, 0.12), (0.78, 0.45)])),
            ("main", ("ellipse", (0.88, 0.14, 0.11, 0.08))),
            ("main", ("poly", [(0.2, 0.5), (0.27, 0.5), (0.26, 1.0), (0.2, 1.0)])),
            ("main", ("poly", [(0.32, 0.5), (0.39, 0.5), (0.38, 1.0), (0.32, 1.0)])),
            ("main", ("poly", [(0.56, 0.5), (0.63, 0.5), (0.62, 1.0), (0.56, 1.0)])),
            ("main", ("poly", [(0.67, 0.5), (0.74, 0.5), (0.73, 1.0), (0.67, 1.0)])),
            ("dark", ("poly", [(0.15, 0.34), (0.0, 0.7), (0.05, 0.72), (0.17, 0.42)])),
        ]
    if cls == RIDER:
        return [
            ("main", ("poly", [(0.28, 0.3), (0.72, 0.3), (0.68, 1.0), (0.32, 1.0)])),
            ("main", ("poly", [(0.0, 0.34), (1.0, 0.34), (1.0, 0.47), (0.0, 0.47)])),
            ("skin", ("ellipse", (0.5, 0.15, 0.2, 0.14))),
        ]
    if cls == BIRD:
        ang = -np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, 0.5, 0.21)
        pts = np.stack([0.5 + rad * np.cos(ang), 0.53 + rad * np.sin(ang) * 1.02], 1)
        return [("main", ("poly", [tuple(p) for p in pts]))]
    if cls == BOTTLE:
        return [
            ("main", ("poly", [(0.05, 0.45), (0.95, 0.45), (0.95, 1.0), (0.05, 1.0)])),
            ("main", ("poly", [(0.05, 0.46), (0.35, 0.25), (0.65, 0.25), (0.95, 0.46)])),
            ("main", ("poly", [(0.36, 0.0), (0.64, 0.0), (0.64, 0.27), (0.36, 0.27)])),
            ("cap", ("poly", [(0.33, 0.0), (0.67, 0.0), (0.67, 0.08), (0.33, 0.08)])),
        ]
    raise ValueError(cls)


def _draw(canvas: np.ndarray, prim: tuple, x0: float, y0: float, w: float, h: float) -> None:
    """Fill one primitive (unit-box coordinates mapped to the box x0, y0, w, h) with 1."""
    kind, spec = prim
    if kind == "poly":
        pts = np.asarray(spec, dtype=np.float64)
        pix = np.stack([x0 + pts[:, 0] * w, y0 + pts[:, 1] * h], 1)
        cv2.fillPoly(canvas, [np.rint(pix * _ONE).astype(np.int32)], 1, cv2.LINE_8, _SHIFT)
    else:
        cx, cy, rx, ry = spec
        center = (round((x0 + cx * w) * _ONE), round((y0 + cy * h) * _ONE))
        axes = (max(1, round(rx * w * _ONE)), max(1, round(ry * h * _ONE)))
        cv2.ellipse(canvas, center, axes, 0, 0, 360, 1, -1, cv2.LINE_8, _SHIFT)


@cache
def _fill_factor(cls: int) -> float:
    """Fraction of the bounding box that the shape covers (measured once at 200 px)."""
    w = 200.0
    h = w / _ASPECT[cls]
    canvas = np.zeros((int(h) + 2, int(w) + 2), np.uint8)
    for _, prim in _shape(cls):
        _draw(canvas, prim, 0.0, 0.0, w, h)
    return float(canvas.sum()) / (w * h)


# --------------------------------------------------------------------------------------------------
# colours and textures (float32 images in [0, 1])
# --------------------------------------------------------------------------------------------------


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    px = np.array([[[h % 360.0, s, v]]], dtype=np.float32)
    return cv2.cvtColor(px, cv2.COLOR_HSV2RGB)[0, 0]


def _class_colour(cls: int, rng: np.random.Generator) -> np.ndarray:
    hue, jit, (s0, s1), (v0, v1) = _COLOURS[cls]
    h = rng.uniform(0, 360) if rng.random() < P_RANDOM_HUE else hue + rng.uniform(-jit, jit)
    s, v = rng.uniform(s0, s1), rng.uniform(v0, v1)
    if cls == BOAT and rng.random() < 0.3:  # white boats
        s, v = rng.uniform(0.0, 0.12), rng.uniform(0.85, 0.97)
    return _hsv(h, s, v)


def _smooth_noise(rng: np.random.Generator, size: int | tuple[int, int], cells: int, channels: int = 1) -> np.ndarray:
    """A smooth random field in [0, 1] of shape (h, w, channels): a coarse grid upsampled bicubically."""
    h, w = (size, size) if isinstance(size, int) else size
    grid = rng.random((cells, cells, channels), dtype=np.float32)
    out = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(out.reshape(h, w, channels), 0.0, 1.0)


@dataclass
class _Grid:
    yy: np.ndarray
    xx: np.ndarray

    def __getitem__(self, sl: tuple[slice, slice]) -> _Grid:
        return _Grid(self.yy[sl], self.xx[sl])


@lru_cache(maxsize=8)
def _grid(size: int) -> _Grid:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return _Grid(yy, xx)


def _stripes(g: _Grid, theta: float, period: float, phase: float) -> np.ndarray:
    t = g.xx * np.cos(theta) + g.yy * np.sin(theta)
    return (np.sin(2 * np.pi * t / period + phase) > 0).astype(np.float32)


def _dots(g: _Grid, period: float, radius: float, ox: float, oy: float) -> np.ndarray:
    dx = np.mod(g.xx + ox, period) - period / 2
    dy = np.mod(g.yy + oy, period) - period / 2
    return (dx * dx + dy * dy < radius * radius).astype(np.float32)


def _texture(cls: int, base: np.ndarray, box: tuple, g: _Grid, size: int, rng: np.random.Generator) -> np.ndarray:
    """Colour layer (h, w, 3) of an object's main part over the grid ``g`` (its box region)."""
    s = size / 128.0
    x0, y0, w, h = box
    col = np.broadcast_to(base, g.xx.shape + (3,)).astype(np.float32)
    if cls == BOAT:  # horizontal stripes across the hull
        f = _stripes(g, np.pi / 2, max(3.0, 0.12 * h), rng.uniform(0, 2 * np.pi))
        col = col * (1.0 - 0.3 * f[..., None])
    elif cls == HORSE:  # blotches
        blot = _smooth_noise(rng, g.xx.shape, 6)
        col = col * (0.75 + 0.5 * blot)
    elif cls == RIDER:  # vertical stripes
        f = _stripes(g, 0.0, max(3.0, rng.uniform(0.18, 0.3) * w), rng.uniform(0, 2 * np.pi))
        col = col * (1.0 - 0.35 * f[..., None])
    elif cls == BIRD:  # light dots
        p = rng.uniform(5.0, 8.0) * s
        f = _dots(g, p, 0.3 * p, rng.uniform(0, p), rng.uniform(0, p))
        col = col + (1.0 - col) * 0.6 * f[..., None]
    elif cls == BOTTLE:  # glassy: a vertical highlight
        hx = x0 + w * rng.uniform(0.2, 0.35)
        hl = np.exp(-(((g.xx - hx) / max(1.0, 0.08 * w)) ** 2))
        col = col + (1.0 - col) * 0.55 * hl[..., None]
    # TRAIN: plain body, the windows and wheels are parts
    return col


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random colour field (muted colours), upsampled from a coarse HSV grid."""
    cells = int(rng.integers(2, 5))
    f = rng.random((cells, cells, 3), dtype=np.float32)
    hsv = np.empty_like(f)
    hsv[..., 0] = np.mod(rng.uniform(0, 360) + (f[..., 0] - 0.5) * rng.uniform(30, 120), 360.0)
    hsv[..., 1] = rng.uniform(0.03, 0.2) + f[..., 1] * rng.uniform(0.0, 0.2)
    hsv[..., 2] = rng.uniform(0.4, 0.65) + f[..., 2] * rng.uniform(0.1, 0.3)
    img = cv2.resize(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), (size, size), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.5:  # faint large-scale texture
        img = img * (0.9 + 0.2 * _smooth_noise(rng, size, int(rng.integers(8, 16))))
    return img


# --------------------------------------------------------------------------------------------------
# contexts
# --------------------------------------------------------------------------------------------------


@dataclass
class _Band:
    kind: int
    top: float  # y of the band's (mean) top edge
    height: float
    amp: float = 0.0
    wavelength: float = 1.0
    phase: float = 0.0

    def top_at(self, x: np.ndarray | float) -> np.ndarray | float:
        return self.top + self.amp * np.sin(2 * np.pi * np.asarray(x) / self.wavelength + self.phase)

    def rows(self, size: int) -> slice:
        """The image rows the band can touch."""
        return slice(max(0, int(np.floor(self.top - self.amp))), min(size, int(np.ceil(self.top + self.height))))

    def mask(self, g: _Grid) -> np.ndarray:
        top = self.top_at(g.xx[0])[None, :]
        return (g.yy >= top) & (g.yy < self.top + self.height)


def _render_band(band: _Band, img: np.ndarray, g: _Grid, size: int, rng: np.random.Generator) -> None:
    """Paint the band into ``img`` in place (only its rows are computed)."""
    s = size / 128.0
    rows = band.rows(size)
    g = g[rows, :]
    m = band.mask(g)
    if band.kind == WATER:
        base = _hsv(205 + rng.uniform(-12, 12), rng.uniform(0.55, 0.85), rng.uniform(0.55, 0.85))
        period = rng.uniform(4.0, 7.0) * s
        lam = rng.uniform(15, 30) * s
        wobble = 1.5 * s * np.sin(2 * np.pi * g.xx[:1] / lam + rng.uniform(0, 6.3))
        wave = np.sin(2 * np.pi * (g.yy + wobble) / period)
        layer = base[None, None, :] * (1.0 + 0.2 * wave[..., None])
    else:
        base = _hsv(20 + rng.uniform(-10, 10), rng.uniform(0.3, 0.5), rng.uniform(0.3, 0.45))
        grit = _smooth_noise(rng, g.xx.shape, 24)
        layer = base[None, None, :] * (0.8 + 0.4 * grit)
        period = rng.uniform(7.0, 11.0) * s
        sleepers = (np.mod(g.xx[:1] + rng.uniform(0, period), period) < 0.45 * period).astype(np.float32)
        layer = layer * (1.0 - 0.45 * sleepers[..., None])
        metal = _hsv(0, 0.0, rng.uniform(0.75, 0.9))
        thick = max(1.0, 1.2 * s)
        for frac in (0.3, 0.72):
            yc = band.top + frac * band.height
            layer[np.abs(g.yy[:, 0] - yc) < thick] = metal
    img[rows][m] = layer[m]


# --------------------------------------------------------------------------------------------------
# one image
# --------------------------------------------------------------------------------------------------


@dataclass
class SynthSample:
    image: np.ndarray  # (S, S, 3) uint8
    mask: np.ndarray  # (S, S) uint8, 255 = void band
    context: np.ndarray  # (S, S) uint8: 1 water / 2 rails at GT-background pixels, else 0
    labels: np.ndarray  # (6,) float32 multi-hot from the mask
    objects: list[str] = field(default_factory=list)
    contexts: list[str] = field(default_factory=list)
    mounted: bool = False


def _choose_classes(rng: np.random.Generator) -> tuple[list[int], bool]:
    n_groups = int(rng.choice(3, p=P_N_GROUPS)) + 1
    w = np.array([GROUP_WEIGHTS[c] for c in FG], dtype=np.float64)
    chosen = [int(c) for c in rng.choice(FG, size=n_groups, replace=False, p=w / w.sum())]
    mounted = False
    if HORSE in chosen:
        mounted = bool(rng.random() < P_RIDER_ON_HORSE)
        if mounted and RIDER not in chosen:
            chosen.append(RIDER)
        elif not mounted and RIDER in chosen:
            chosen.remove(RIDER)
        while len(chosen) > 3:
            others = [c for c in chosen if c not in (HORSE, RIDER)]
            chosen.remove(others[int(rng.integers(len(others)))])
    return chosen, mounted


def _box_size(cls: int, area: float, size: int, rng: np.random.Generator) -> tuple[float, float]:
    aspect = _ASPECT[cls] * rng.uniform(0.87, 1.15)
    box_area = area * size * size / _fill_factor(cls)
    w = np.sqrt(box_area * aspect)
    h = w / aspect
    k = min(1.0, 0.95 * size / w, 0.9 * size / h)
    return float(w * k), float(h * k)


def _overlap(a: tuple, b: tuple) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    return iw * ih / max(1e-6, min(aw * ah, bw * bh))


def _place(
    w: float,
    h: float,
    size: int,
    rng: np.random.Generator,
    placed: list[tuple],
    bottom: tuple[float, float] | None = None,
    top_min: float = 0.0,
) -> tuple[float, float, float, float]:
    """A box of size w x h inside the image, its bottom edge in ``bottom`` = (lo, hi) if given,
    overlapping already placed boxes as little as possible (best of 24 tries)."""
    best, best_ov = None, np.inf
    for _ in range(24):
        x = rng.uniform(0, max(0.0, size - w))
        if bottom is not None:
            lo, hi = bottom
            yb = rng.uniform(lo, max(lo, hi))
            y = min(max(yb - h, top_min), size - h)
        else:
            y = rng.uniform(top_min, max(top_min, size - h))
        box = (x, y, w, h)
        ov = max((_overlap(box, p) for p in placed), default=0.0)
        if ov < best_ov:
            best, best_ov = box, ov
        if ov < 0.02:
            break
    return best


def _void_band(mask: np.ndarray, size: int) -> np.ndarray:
    r = max(1, round(size / 128))
    k = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
    # a 2r-px band: pixels whose (2r+1)^2 window holds more than one label; with r=1 that is the
    # pixel on each side of a boundary, i.e. ~2 px at 128 px
    edge = cv2.dilate(mask, k) != cv2.erode(mask, k)
    out = mask.copy()
    out[edge] = 255
    return out


def _sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    code = SPLIT_CODES.get(split)
    if code is None:
        code = 2 + int.from_bytes(split.encode()[:8].ljust(8, b"\0"), "little") % (2**31)
    return np.random.default_rng([int(seed), code, int(index)])


def _context_bands(
    classes: list[int], size: int, rng: np.random.Generator, context_with: float, context_without: float
) -> tuple[dict[int, bool], list[int], dict[int, _Band]]:
    """Which context bands the image has (water with boats, rails with trains, at the given rates),
    in drawing order, and their geometry."""
    s = float(size)
    has = {
        WATER: rng.random() < (context_with if BOAT in classes else context_without),
        RAILS: rng.random() < (context_with if TRAIN in classes else context_without),
    }
    kinds = [k for k in (WATER, RAILS) if has[k]]
    rng.shuffle(kinds)
    bands: dict[int, _Band] = {}
    slots = [(0.55, 0.75)] if len(kinds) == 1 else [(0.38, 0.46), (0.72, 0.8)]
    for kind, (lo, hi) in zip(kinds, slots):
        top = rng.uniform(lo, hi) * s
        height = (rng.uniform(0.22, 0.3) if kind == WATER else rng.uniform(0.15, 0.2)) * s
        if len(kinds) == 1:
            height = max(height, min(s - top, rng.uniform(0.22, 0.4) * s))
        b = _Band(kind, top, min(height, s - top))
        if kind == WATER:
            b.amp = rng.uniform(1.0, 2.5) * s / 128
            b.wavelength = rng.uniform(18, 36) * s / 128
            b.phase = rng.uniform(0, 2 * np.pi)
        bands[kind] = b
    return has, kinds, bands


def _layout_objects(
    classes: list[int],
    mounted: bool,
    has: dict[int, bool],
    bands: dict[int, _Band],
    size: int,
    rng: np.random.Generator,
) -> list[tuple[int, tuple]]:
    """The objects as (cls, box) in drawing order: boats on the water, trains on the rails, a rider
    on a mounted horse's back."""
    n_obj = len(classes)
    amax = MAX_AREA[min(n_obj, 3)]
    boxes: list[tuple] = []
    objs: list[tuple[int, tuple]] = []
    order = [c for c in classes if c != RIDER or not mounted]
    for cls in order:
        if cls == HORSE and mounted:
            area = rng.uniform(max(MIN_AREA, 0.1), max(0.12, amax))
        else:
            area = rng.uniform(MIN_AREA, amax)
        w, h = _box_size(cls, area, size, rng)
        bottom, top_min = None, 0.0
        if cls == BOAT and has[WATER]:
            b = bands[WATER]
            bottom = (b.top + 0.12 * h, min(b.top + 0.35 * h, b.top + b.height - 1))
        elif cls == TRAIN and has[RAILS]:
            b = bands[RAILS]
            bottom = (b.top + 0.45 * b.height, b.top + 0.85 * b.height)
        rider_wh = None
        if cls == HORSE and mounted:
            rw = w * rng.uniform(0.34, 0.42)
            rh = rw / (_ASPECT[RIDER] * rng.uniform(0.9, 1.1))
            rider_wh = (rw, rh)
            top_min = max(0.0, rh - 0.4 * h)  # the rider's top stays inside the image
        box = _place(w, h, size, rng, boxes, bottom, top_min)
        boxes.append(box)
        objs.append((cls, box))
        if rider_wh is not None:
            rw, rh = rider_wh
            x, y, bw, bh = box
            cx = x + bw * (0.45 + rng.uniform(-0.08, 0.08))
            yb = y + bh * rng.uniform(0.36, 0.44)  # sits on the back, overlapping it
            rbox = (cx - rw / 2, max(0.0, yb - rh), rw, rh)
            boxes.append(rbox)
            objs.append((RIDER, rbox))
    return objs


def _paint_objects(
    img: np.ndarray, label: np.ndarray, objs: list[tuple[int, tuple]], g: _Grid, size: int, rng: np.random.Generator
) -> None:
    """Draw each object's parts into ``img`` and its class into ``label``, in place."""
    for cls, box in objs:
        x, y, bw, bh = box
        # work on the box's pixel slice only
        c0, r0 = max(0, int(np.floor(x)) - 1), max(0, int(np.floor(y)) - 1)
        c1, r1 = min(size, int(np.ceil(x + bw)) + 2), min(size, int(np.ceil(y + bh)) + 2)
        if c1 <= c0 or r1 <= r0:
            continue
        sl = (slice(r0, r1), slice(c0, c1))
        base = _class_colour(cls, rng)
        layer = _texture(cls, base, box, g[sl], size, rng)
        part_colours = {
            "sail": _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.1), rng.uniform(0.85, 1.0)),
            "mast": _hsv(25, 0.6, rng.uniform(0.2, 0.35)),
            "window": _hsv(rng.uniform(190, 230), rng.uniform(0.3, 0.6), rng.uniform(0.15, 0.3)),
            "wheel": _hsv(0, 0.0, rng.uniform(0.12, 0.25)),
            "dark": base * 0.45,
            "skin": _hsv(rng.uniform(15, 35), rng.uniform(0.25, 0.5), rng.uniform(0.7, 0.95)),
            "cap": _hsv(rng.uniform(0, 360), rng.uniform(0.5, 0.9), rng.uniform(0.4, 0.8)),
        }
        img_sl, lab_sl = img[sl], label[sl]
        part_mask = np.zeros((r1 - r0, c1 - c0), np.uint8)
        for part, prim in _shape(cls):
            part_mask[:] = 0
            _draw(part_mask, prim, x - c0, y - r0, bw, bh)
            m = part_mask.astype(bool)
            img_sl[m] = layer[m] if part == "main" else part_colours[part]
            lab_sl[m] = cls


def render_sample(
    seed: int,
    split: str,
    index: int,
    size: int = 128,
    *,
    context_with: float = P_CONTEXT_WITH_CLASS,
    context_without: float = P_CONTEXT_WITHOUT_CLASS,
) -> SynthSample:
    """Draw image ``index`` of ``split`` (pure function of its arguments).

    ``context_with`` / ``context_without``: the probability of an image's water (rails) band when it
    holds a boat (train) and when it does not: how strongly the context predicts the class.
    """
    rng = _sample_rng(seed, split, index)
    g = _grid(size)

    classes, mounted = _choose_classes(rng)
    has, kinds, bands = _context_bands(classes, size, rng, context_with, context_without)

    img = _background(size, rng)
    for kind in kinds:
        _render_band(bands[kind], img, g, size, rng)

    objs = _layout_objects(classes, mounted, has, bands, size, rng)
    label = np.zeros((size, size), np.uint8)
    _paint_objects(img, label, objs, g, size, rng)

    # pixel noise, a touch of blur (soft edges, as in photos)
    img = img + 0.09 * (rng.random(img.shape, dtype=np.float32) - 0.5)  # uniform, std ~0.026
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    image = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)

    context = np.zeros((size, size), np.uint8)
    for kind in kinds:
        rows = bands[kind].rows(size)
        context[rows][bands[kind].mask(g[rows, :]) & (label[rows] == 0)] = kind
    mask = _void_band(label, size)
    context[mask != 0] = 0

    labels = (np.bincount(mask.ravel(), minlength=256)[1 : len(FG) + 1] > 0).astype(np.float32)
    return SynthSample(
        image=image,
        mask=mask,
        context=context,
        labels=labels,
        objects=[CLASS_NAMES[c] for c, _ in objs],
        contexts=[CONTEXT_NAMES[k] for k in kinds],
        mounted=mounted,
    )
