"""RCA's proxy labels from attention maps, a dense CRF and (optionally) saliency
(docs/methods/rca.md#proxy-labels).

Per image, with ``att`` the attention of each labelled class, min-max normalised to [0, 1]:

1. CRF (``dense_crf``, ``CRFParams.PSA``: 10 steps, Gaussian 3/3, bilateral 80/13/10) on the
   unnormalised stack ``[(1 - max_c att_c)^alpha; att_1..att_n]`` (alpha 4) -> marginals Q;
2. a (C, H, W) score stack: channel c+1 = Q of class c (absent classes 0); channel 0 (background) =
   ``1 - saliency/255`` **with** a saliency map (official: the CRF background is discarded), the CRF
   background Q[0] **without** one;
3. pixels where more than one channel exceeds ``conflict`` (0.9) -> 255; the label is the argmax;
4. ``sal_att = max(saliency, 255 * [Q_c > att_thre (0.8)])``; pixels labelled background with
   ``sal_att >= bg_thre`` (32) -> 255;
5. an image with less than ``min_fg`` (1 %) foreground pixels is ignored entirely (255).

Saliency-free default (a deviation: the official code needs external saliency maps,
docs/methods/rca.md#decisions):
the background channel is the CRF's own background, and the saliency of step 4 is replaced by the
CAM threshold map ``255 * [max_c att_c >= cam_bg_thre]``: background pixels where some class still
has attention >= ``cam_bg_thre`` (0.25) are left undecided (255). With ``free_levels = (high, low)``
(what ``wsss pseudo --refine rca`` passes: the run's CAM levels, ``--levels``) the CRF's background unary
is the constant ``high`` instead of ``(1 - max att)^alpha``, and ``low`` takes ``cam_bg_thre``'s place, so
the levels mean what they mean for every other refiner (class above high, background at or below low).
The fixed alpha 4 puts the class / background boundary at an attention of 0.28 (``(1 - a)^4 = a``), whatever
the CAMs: on ccp-dev, whose calibrated level is well above it, the labels scored far below the other refiners'
(docs/methods/rca.md#proxy-labels).

The attention comes from RCA's accumulated training-time maps (``AttentionStore``, resized to the
image like the official ``res.py``: cv2 bilinear on the uint8 maps) or from the saved CAMs of
``wsss cam``. The CRF reads the image in BGR order with ``crf_bgr`` (official: cv2's BGR,
``options.quirk_proxy_crf_bgr``) or RGB: the permutohedral lattice does not treat the three colour axes
alike, so Q differs (by up to 2.7e-3 on golden ``rca_proxy_labels.npz``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from wsss.cam.crf import CRFParams, dense_crf
from wsss.core.errors import DataError
from wsss.utils.io import open_image


@dataclass(frozen=True)
class ProxyParams:
    """The constants of gen_labels.py (docs/methods/rca.md#proxy-labels) and the saliency-free threshold."""

    alpha: float = 4.0
    conflict: float = 0.9
    att_thre: float = 0.8
    bg_thre: float = 32.0
    min_fg: float = 0.01
    cam_bg_thre: float = 0.25
    crf: CRFParams = field(default_factory=lambda: CRFParams.PSA)
    crf_bgr: bool = False  # the CRF reads the image as BGR (the official cv2 order)
    free_levels: tuple[float, float] | None = None  # saliency-free: (high, low) CAM levels (module docstring)

    @classmethod
    def from_options(cls, options: Any) -> ProxyParams:
        """From an RCA ``Options`` (its ``proxy_*`` fields); the defaults for any other method."""
        if not hasattr(options, "proxy_alpha"):
            return cls()
        o = options
        return cls(
            o.proxy_alpha,
            o.proxy_conflict,
            o.proxy_att_thre,
            o.proxy_bg_thre,
            o.proxy_min_fg,
            o.proxy_cam_bg_thre,
            crf_bgr=bool(getattr(o, "quirk_proxy_crf_bgr", False)),
        )


def minmax01(att: np.ndarray) -> np.ndarray:
    """Per-map ``(a - min) / (max - min + 1e-8)`` over the last two axes (gen_labels step 1)."""
    att = np.asarray(att, dtype=np.float32)
    lo = att.min(axis=(-2, -1), keepdims=True)
    hi = att.max(axis=(-2, -1), keepdims=True)
    return (att - lo) / (hi - lo + 1e-8)


def attention_to_image(maps: dict[int, np.ndarray], size: tuple[int, int]) -> tuple[list[int], np.ndarray]:
    """Accumulated uint8 maps ``{class: (G, G)}`` -> (sorted classes, (n, H, W) float32 in [0, 1]).

    ``res.py``: cv2 bilinear resize of the uint8 map to the image size; then min-max (gen_labels).
    """
    h, w = size
    classes = sorted(maps)
    if not classes:
        return [], np.zeros((0, h, w), dtype=np.float32)
    resized = [cv2.resize(np.asarray(maps[c], dtype=np.uint8), (w, h), interpolation=cv2.INTER_LINEAR) for c in classes]
    return classes, minmax01(np.stack(resized).astype(np.float32))


def rca_proxy_label(
    image: np.ndarray,
    att: np.ndarray,
    classes: Sequence[int],
    num_classes: int,
    saliency: np.ndarray | None = None,
    params: ProxyParams | None = None,
) -> np.ndarray:
    """The proxy label of one image (module docstring, steps 1-5) -> (H, W) uint8, 255 = ignore.

    Args:
        image: (H, W, 3) uint8 RGB (``params.crf_bgr`` feeds it to the CRF as BGR).
        att: (n, H, W) attention of ``classes`` in [0, 1].
        classes: n 0-based foreground class indices.
        num_classes: C, including background.
        saliency: (H, W) uint8 saliency (255 = salient), or None (saliency-free rule).
    """
    p = params or ProxyParams()
    att = np.asarray(att, dtype=np.float32)
    h, w = image.shape[:2]
    if att.shape != (len(classes), h, w):
        raise ValueError(f"attention {att.shape} does not match {len(classes)} classes on a {h}x{w} image")
    if len(classes) == 0:
        return np.full((h, w), 255, dtype=np.uint8)
    top = att.max(axis=0)
    levels = p.free_levels if saliency is None else None
    background = np.full_like(top, levels[0]) if levels is not None else (1.0 - top) ** p.alpha
    unary = np.concatenate([background[None], att], axis=0)
    crf_image = np.ascontiguousarray(image[..., ::-1]) if p.crf_bgr else image
    q = dense_crf(crf_image, unary, **p.crf.as_kwargs())
    gt = np.zeros((num_classes, h, w), dtype=np.float32)
    if saliency is not None:
        sal = np.asarray(saliency, dtype=np.float32)
        if sal.shape != (h, w):
            raise ValueError(f"saliency {sal.shape} does not match the image {h}x{w}")
        gt[0] = 1.0 - sal / 255.0
        sal_att = sal.copy()
    else:
        gt[0] = q[0]
        sal_att = 255.0 * (top >= (levels[1] if levels is not None else p.cam_bg_thre))
    for i, c in enumerate(classes):
        gt[c + 1] = q[i + 1]
        sal_att = np.maximum(sal_att, 255.0 * (q[i + 1] > p.att_thre))
    conflict = (gt > p.conflict).sum(axis=0) > 1
    label = gt.argmax(axis=0).astype(np.uint8)
    label[conflict] = 255
    label[(sal_att >= p.bg_thre) & (label == 0)] = 255
    if float(((label > 0) & (label < 255)).sum()) / float(h * w) < p.min_fg:
        label[...] = 255
    return label


def read_saliency(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A grayscale saliency PNG (0..255) of the image's size; DataError naming the file otherwise."""
    if not path.is_file():
        raise DataError(f"{path}: saliency map not found (--saliency DIR holds <id>.png)")
    with open_image(path, "saliency map") as im:
        sal = np.asarray(im.convert("L"), dtype=np.uint8)
    if sal.shape != tuple(size):
        raise DataError(f"{path}: saliency size {sal.shape} differs from the image size {tuple(size)}")
    return sal
