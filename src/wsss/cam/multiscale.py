"""Multi-scale + flip inference for CAMs and segmentation logits (docs/methods/seco.md#ms-cam,
#inference).

``CamPasses`` and ``multi_scale_logits`` take a plain callable, so they work with any model: ``cam_fn`` /
``seg_fn`` receive a batch that holds the images followed by their horizontal flips, (2B,3,h,w), and return
maps for that batch. Everything follows the input's dtype and device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from wsss.core.config import CAM_EMPTY_FALLBACKS as EMPTY_FALLBACKS
from wsss.core.config import FUSE_AT, FUSIONS, SCALE_RESIZES

CamOutput = torch.Tensor | tuple[torch.Tensor, ...]


def minmax_normalize(cam: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-image, per-channel min-max normalisation of (B,K,H,W) maps (docs/methods/seco.md#ms-cam).

    ``cam = cam - min_hw(cam); cam = cam / (max_hw(cam) + eps)``, so the result lies in [0, 1).
    """
    cam = cam - cam.amin(dim=(-2, -1), keepdim=True)
    return cam / (cam.amax(dim=(-2, -1), keepdim=True) + eps)


def max_normalize(cam: torch.Tensor, eps: float = 1e-5, block: int = 1) -> torch.Tensor:
    """PSA / SC-CAM normalisation of (B,K,H,W) maps (``infer_cls.py``): divided by ``max + eps``, no min
    subtraction. ``block`` = 1: one max per channel; ``block`` = K: one scalar per block of K channels
    (the max over its channels and pixels: SC-CAM's sub-category CAM, ``cls200_cam_norm``)."""
    b, k, h, w = cam.shape
    if k % block:
        raise ValueError(f"{k} channels are not blocks of {block}")
    peak = cam.reshape(b, k // block, block * h * w).amax(dim=-1)  # (B, K/block); K may be 0
    return cam / (peak.repeat_interleave(block, dim=1)[..., None, None] + eps)


def fill_empty_maps(
    cam: torch.Tensor, activated: torch.Tensor, raw: torch.Tensor, how: str, passes: int = 1
) -> torch.Tensor:
    """``cam`` (B,K,H,W, normalised) with every channel whose ``activated`` map (the ReLU'd sum) is zero at every
    pixel replaced by a map made from ``raw`` (the same sum before any ReLU; ``infer.cam_empty_fallback``, issue
    31). A labelled class the classifier does not see in a photo has a negative map everywhere, which the ReLU
    of every official code (docs/methods/seco.md#ms-cam) turns into zeros: no seed pixel can name it.

    - ``"minmax"``: ``raw`` min-max normalised. Its peak becomes 1 like any other class's, and so does most of
      a smooth map: on ccp-dev it gave the class most of the photo (BENCHMARKS.md, "ccp-dev").
    - ``"peak_odds"``: ``exp(raw / passes - max(raw / passes))``, ``raw / passes`` being the map in logits (the
      mean of the summed passes): each pixel's odds of the class against those of the class's most likely
      pixel. 1 at the peak, 0.55 half a logit (0.6) below it, 0.14 two logits below it.
    - ``"none"``: ``cam`` as it is.

    A raw map that is constant stays zero under ``"minmax"``; the fallback leaves every other channel alone."""
    if how not in EMPTY_FALLBACKS:
        raise ValueError(f"unknown empty-map fallback {how!r} ({', '.join(EMPTY_FALLBACKS)})")
    if how == "none":
        return cam
    empty = activated.amax(dim=(-2, -1), keepdim=True) <= 0
    if not bool(empty.any()):
        return cam
    if how == "minmax":
        filled = minmax_normalize(raw)
    else:
        logits = raw / passes
        filled = torch.exp(logits - logits.amax(dim=(-2, -1), keepdim=True))
    return torch.where(empty, filled.to(cam.dtype), cam)


def merge_subcategory_cams(sub: torch.Tensor, k: int, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """SC-CAM's "cls200" CAM (``infer_cls.py``): the fused (B, (C-1)*K, H, W) sub-category CAM normalised by
    one scalar per block of K (:func:`max_normalize`), then merged to its parent by the pixelwise max over
    the K. Returns (normalised sub-category CAMs, merged (B, C-1, H, W))."""
    norm = max_normalize(sub, eps, block=k)
    b, n, h, w = norm.shape
    return norm, norm.view(b, n // k, k, h, w).amax(dim=2)


_NORMS = ("minmax", "max", "none")


def _scaled_size(h: int, w: int, s: float, square_size: int | None) -> tuple[int, int]:
    if square_size is not None:
        side = max(1, int(square_size * s))
        return side, side
    return max(1, int(s * h)), max(1, int(s * w))  # a 1-pixel side at scale 0.5 stays 1 pixel


def resize_long(x: torch.Tensor, long_side: int) -> torch.Tensor:
    """``x`` (B, K, h, w) resized (bilinear, align_corners=False) to (int(h r), int(w r)), r = long_side / max(h, w):
    up or down (``infer.resize_long``; WeCLIP+'s ``test_msc_flip_voc.py``, docs/methods/weclip_plus.md#test)."""
    h, w = x.shape[-2:]
    r = long_side / max(h, w)
    return resize_maps(x, (max(1, int(h * r)), max(1, int(w * r))))


def resize_maps(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear (align_corners=False) resize of (B, K, h, w) maps to ``size``; K may be 0 (the labelled
    classes of an image without labels), which ``F.interpolate`` refuses."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[1] == 0:
        return x.new_zeros((*x.shape[:2], *size))
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def _check_fusion(name: str, how: str) -> None:
    if how not in FUSIONS:
        raise ValueError(f"unknown {name} {how!r} (max, sum or mean)")


def labelled_classes(labels: torch.Tensor) -> torch.Tensor:
    """The foreground channels labelled in any image of a (B, C-1) multi-hot batch, sorted (long)."""
    return torch.nonzero(labels.reshape(-1, labels.shape[-1]).amax(dim=0) > 0.5).flatten()


def expand_classes(maps: torch.Tensor, classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, k, H, W) maps of the channels ``classes`` -> (B, ``num_classes``, H, W), zero elsewhere."""
    full = maps.new_zeros((maps.shape[0], num_classes, *maps.shape[2:]))
    return full.index_copy_(1, classes.to(maps.device), maps)


def fuse_pair(a: torch.Tensor, b: torch.Tensor, how: str) -> torch.Tensor:
    """Two maps fused as ``how`` says: ``"max"``, ``"sum"`` or ``"mean"`` (an image's and its flip's)."""
    if how == "max":
        return torch.maximum(a, b)
    if how == "sum":
        return a + b
    return (a + b) / 2  # "mean"


RELU_ORDERS = ("after_fusion", "per_pass")


@dataclass(frozen=True)
class CamPasses:
    """The multi-scale + flip CAM step (docs/methods/seco.md#ms-cam, the official ``multi_scale_cam2``) as named stages.

    Calling it on a ``cam_fn`` and images (B, 3, H, W) runs, for each scale in the given order:

    1. :meth:`scale_batch`: the images resized to (int(s*H), int(s*W)) (bilinear, align_corners=False; none
       at s = 1) and batched with their horizontal flips, (2B, 3, h, w), through ``cam_fn``, which returns
       one (2B, K, h', w') map or a tuple of them (e.g. ``(cam, cam_aux)``);
    2. only the ``classes`` channels go on (every later stage is per channel);
    3. ``relu="per_pass"``: the ReLU here, at the network's resolution (PSA / SC-CAM ``forward_cam``);
    4. upsampled to (H, W) (bilinear, align_corners=False);
    5. :meth:`fuse_flip`: each image with its flipped-back twin (``flip_fuse``: ``"max"`` ToCo/SeCo,
       ``"sum"`` PSA/SC-CAM, ``"mean"``);
    6. ``relu="after_fusion"``: the ReLU here (ToCo/SeCo; a no-op after a per-pass ReLU);

    then, over the scales:

    7. summed;
    8. normalised per image and channel (``normalize``: :func:`minmax_normalize` ToCo/SeCo, :func:`max_normalize`
       PSA/SC-CAM, or ``"none"``, the raw sum);
    9. :meth:`fill_empty` (``empty_fallback``, for labelled classes only): a channel that is zero everywhere
       gets a map made from the same sum taken without any ReLU (:func:`fill_empty_maps`);
    10. put back among all channels (zeros elsewhere), or, with ``compact``, kept as the ``classes`` alone.

    A map that ``cam_fn`` returns twice (the same tensor: a model without an aux head) is processed once.
    The official function runs scale 1.0 first whatever its list says: pass scales starting with 1.0 for the
    same summation order. A method builds the passes it needs with ``Method.cam_passes`` (its ReLU order and
    the run's ``infer`` settings).
    """

    scales: tuple[float, ...]
    flip_fuse: str = "max"
    relu: str = "after_fusion"
    normalize: str = "minmax"
    empty_fallback: str = "none"

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        if not self.scales:
            raise ValueError("CamPasses needs at least one scale")
        _check_fusion("flip_fuse", self.flip_fuse)
        for name, value, allowed in (
            ("relu", self.relu, RELU_ORDERS),
            ("normalize", self.normalize, _NORMS),
            ("empty_fallback", self.empty_fallback, EMPTY_FALLBACKS),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r} ({', '.join(allowed)})")

    # -- the stages ---------------------------------------------------------------------------------
    @staticmethod
    def scale_batch(images: torch.Tensor, scale: float, flipped_only: bool = False) -> torch.Tensor:
        """Stage 1's input: ``images`` resized by ``scale``, followed by their flips (only the flips when the
        unflipped maps were computed already)."""
        x = resize_maps(images, _scaled_size(*images.shape[-2:], scale, None))
        return x.flip(-1) if flipped_only else torch.cat([x, x.flip(-1)], dim=0)

    def fuse_flip(self, maps: torch.Tensor) -> torch.Tensor:
        """Stage 5: (2B, K, H, W) -> (B, K, H, W), each image fused with its flipped-back twin."""
        b = maps.shape[0] // 2
        return fuse_pair(maps[:b], maps[b:].flip(-1), self.flip_fuse)

    def activated_pass(
        self, maps: torch.Tensor, size: tuple[int, int], upsampled: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Stages 3-6 for one scale's (2B, K, h', w') maps: the ReLU'd, upsampled, flip-fused (B, K, H, W) map.
        ``upsampled``: ``maps`` upsampled to ``size`` already (for the raw pass), reused after the fusion."""
        if self.relu == "per_pass":
            return F.relu(self.fuse_flip(resize_maps(F.relu(maps), size)))  # the last ReLU is then a no-op
        return F.relu(self.fuse_flip(upsampled if upsampled is not None else resize_maps(maps, size)))

    def raw_pass(self, upsampled: torch.Tensor) -> torch.Tensor:
        """The same pass with no ReLU at all, from the upsampled maps: what :meth:`fill_empty` fills from."""
        return self.fuse_flip(upsampled)

    def normalized(self, summed: torch.Tensor) -> torch.Tensor:
        """Stage 8."""
        if self.normalize == "minmax":
            return minmax_normalize(summed)
        return max_normalize(summed) if self.normalize == "max" else summed

    def fill_empty(self, cam: torch.Tensor, summed: torch.Tensor, raw_summed: torch.Tensor) -> torch.Tensor:
        """Stage 9: :func:`fill_empty_maps` with the passes' count in each sum (a flip sum counts twice)."""
        passes = len(self.scales) * (2 if self.flip_fuse == "sum" else 1)
        return fill_empty_maps(cam, summed, raw_summed, self.empty_fallback, passes)

    # -- the whole step ----------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        cam_fn: Callable[[torch.Tensor], CamOutput],
        images: torch.Tensor,
        *,
        classes: torch.Tensor | Sequence[int] | None = None,
        compact: bool = False,
        unflipped: CamOutput | None = None,
    ) -> CamOutput:
        """The fused CAMs of ``images``, in the structure ``cam_fn`` returns, each (B, K, H, W) (in [0, 1)
        under "minmax" and "max"; K the ``classes`` with ``compact``). ``unflipped``: ``cam_fn(images)``
        computed already (the training forward, detached): at scale 1.0 only the flips are then run, for
        the same maps (no dropout). Runs under ``torch.no_grad()``."""
        size = (images.shape[-2], images.shape[-1])
        idx = None if classes is None else torch.as_tensor(classes, dtype=torch.long, device=images.device).flatten()
        fill = self.empty_fallback != "none"
        passes: list[list[torch.Tensor]] | None = None  # per distinct map, its activated pass at each scale
        raw: list[list[torch.Tensor]] = []  # and its raw pass (empty_fallback only)
        same: list[int] = []
        single, num_channels = False, 0
        for s in self.scales:
            reuse = unflipped is not None and s == 1.0
            out = cam_fn(self.scale_batch(images, s, flipped_only=reuse))
            single = torch.is_tensor(out)
            outs = (out,) if single else tuple(out)
            if passes is None:
                same = [next(j for j in range(i + 1) if outs[j] is outs[i]) for i in range(len(outs))]
                passes, raw, num_channels = [[] for _ in outs], [[] for _ in outs], outs[0].shape[1]
            elif len(outs) != len(passes):
                raise ValueError("cam_fn returned a different number of maps at different scales")
            kept = ((unflipped,) if torch.is_tensor(unflipped) else unflipped) if reuse else None
            for i, m in enumerate(outs):
                if same[i] != i:
                    continue
                m = torch.cat([kept[i], m], dim=0) if kept is not None else m
                m = m.index_select(1, idx) if idx is not None else m
                up = resize_maps(m, size) if fill or self.relu == "after_fusion" else None
                passes[i].append(self.activated_pass(m, size, up))
                if fill:
                    raw[i].append(self.raw_pass(up))
        assert passes is not None
        fused: list[torch.Tensor] = []
        for i, maps in enumerate(passes):
            if same[i] != i:
                fused.append(fused[same[i]])
                continue
            summed = torch.stack(maps, dim=0).sum(dim=0)  # stage 7, as the official sum of the stacked scales
            cam = self.normalized(summed)
            if fill:
                cam = self.fill_empty(cam, summed, torch.stack(raw[i], dim=0).sum(dim=0))
            fused.append(expand_classes(cam, idx, num_channels) if idx is not None and not compact else cam)
        return fused[0] if single else tuple(fused)


def upsample_rows(maps: torch.Tensor, out_size: Sequence[int], rows: slice) -> torch.Tensor:
    """Rows ``rows`` of ``resize_maps(maps, out_size)`` (bilinear, align_corners=False), computed from the source
    rows they read: the same numbers up to float rounding, without the whole upsampled map in memory.

    The source row of output row r is ``max((r + 0.5) * h / H - 0.5, 0)`` (PyTorch's rule), blended between its
    two neighbours; the width is then upsampled by ``F.interpolate`` at an unchanged height (an exact copy of
    the rows)."""
    h, H = maps.shape[-2], int(out_size[0])
    # the coordinates in the precision PyTorch uses for this dtype (double for float64, else float)
    coord = torch.float64 if maps.dtype == torch.float64 else torch.float32
    r = torch.arange(rows.start, rows.stop, device=maps.device, dtype=coord)
    src = ((r + 0.5) * (h / H) - 0.5).clamp(min=0)
    y0 = src.floor().long().clamp(max=h - 1)
    y1 = (y0 + 1).clamp(max=h - 1)
    wy = (src - y0).to(maps.dtype).view(-1, 1)
    band = maps[..., y0, :] * (1 - wy) + maps[..., y1, :] * wy
    return resize_maps(band, (band.shape[-2], int(out_size[1])))


# Output pixels times channels per chunk of the chunked upsampling (float32: 64 MB a map): a 6000x4000 photo's
# full-size logits of every scale and flip were several GB.
CHUNK_ELEMENTS = 1 << 24


@torch.no_grad()
def multi_scale_logits(
    seg_fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    scales: Sequence[float],
    out_size: tuple[int, int],
    *,
    flip_fuse: str = "sum",
    scale_fuse: str = "max",
    square_size: int | None = None,
    long_side: int | None = None,
    scale_resize: str = "size",
    fuse_at: str = "image",
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Multi-scale + flip segmentation logits for inference (docs/methods/seco.md#inference; the keyword
    arguments are the ``infer`` config's keys of the same names, ``long_side`` its ``resize_long``: docs/configs.md).

    With ``long_side``, ``images`` (B,3,H,W) are first resized to that long side (:func:`resize_long`). For each
    scale s: resize them to (int(s*H), int(s*W)) (bilinear, align_corners=False; ``scale_resize="size"``), or by
    ``F.interpolate(scale_factor=s)`` (``"factor"``: the size floor(s*H), the sampling step exactly 1/s, as
    WeCLIP+'s test), or to the square (int(square_size*s),)*2 when ``square_size`` is given
    (``square_size=448`` reproduces SeCo's VOC script, which does not keep the aspect); run
    ``seg_fn`` on [x; flip(x)]; upsample the logits to ``out_size`` (bilinear, align_corners=False);
    fuse the flip (``"sum"`` as in ToCo/SeCo, or ``"max"``/``"mean"``). The scales are then fused by
    ``scale_fuse``: elementwise ``"max"`` (ToCo/SeCo), ``"sum"`` or ``"mean"``. ``fuse_at="grid"``: the
    flips and the scales are fused on the first scale's output grid instead (each scale's logits resized
    to it), and the fused logits upsampled to ``out_size`` (WeCLIP+'s ``test_msc_flip_voc.py``,
    docs/methods/weclip_plus.md#test). Returns raw fused logits (B,C,*out_size), or ``reduce`` of them (e.g. the
    softmax, or the argmax with its channel kept); runs under ``torch.no_grad()``.

    The upsampling, the fusions and ``reduce`` run over bands of output rows (:func:`upsample_rows`,
    :data:`CHUNK_ELEMENTS`), so only the result is ever whole at ``out_size``.
    """
    if not scales:
        raise ValueError("multi_scale_logits needs at least one scale")
    _check_fusion("flip_fuse", flip_fuse)
    _check_fusion("scale_fuse", scale_fuse)
    if scale_resize not in SCALE_RESIZES or fuse_at not in FUSE_AT:
        raise ValueError(f"unknown scale_resize {scale_resize!r} or fuse_at {fuse_at!r} ({SCALE_RESIZES}, {FUSE_AT})")
    if long_side is not None:
        images = resize_long(images, long_side)
    b, _, h, w = images.shape
    out_size = (int(out_size[0]), int(out_size[1]))
    low = []  # each scale's logits of [x; flip(x)] at the network's resolution
    for s in scales:
        if scale_resize == "factor" and square_size is None and float(s) != 1.0:
            x = F.interpolate(images, scale_factor=float(s), mode="bilinear", align_corners=False)
        else:
            x = resize_maps(images, _scaled_size(h, w, float(s), square_size))
        low.append(seg_fn(torch.cat([x, x.flip(-1)], dim=0)))
    if fuse_at == "grid":  # one map, fused on the first scale's grid: what is upsampled below
        grid = tuple(low[0].shape[-2:])
        on_grid = [resize_maps(logits, grid) for logits in low]
        low = [_fuse_scales([fuse_pair(m[:b], m[b:].flip(-1), flip_fuse) for m in on_grid], scale_fuse)]
    band = max(1, CHUNK_ELEMENTS // (2 * low[0].shape[1] * out_size[1]))
    out: torch.Tensor | None = None
    for r0 in range(0, out_size[0], band):
        rows = slice(r0, min(out_size[0], r0 + band))
        if fuse_at == "grid":
            fused = upsample_rows(low[0], out_size, rows)
        else:
            per_scale = []
            for logits in low:
                up = upsample_rows(logits, out_size, rows)
                per_scale.append(fuse_pair(up[:b], up[b:].flip(-1), flip_fuse))
            fused = _fuse_scales(per_scale, scale_fuse)
        fused = reduce(fused) if reduce is not None else fused
        if out is None:
            out = fused.new_empty((*fused.shape[:2], *out_size))
        out[..., rows, :] = fused
    assert out is not None
    return out


def _fuse_scales(maps: list[torch.Tensor], how: str) -> torch.Tensor:
    fused = maps[0]
    for m in maps[1:]:
        fused = torch.maximum(fused, m) if how == "max" else fused + m
    return fused / len(maps) if how == "mean" else fused
