"""Multi-scale + flip inference for CAMs and segmentation logits (methods.md 2.5, 2.11, 3.10).

Both helpers take a plain callable, so they work with any model: ``cam_fn`` / ``seg_fn`` receive a
batch that holds the images followed by their horizontal flips, (2B,3,h,w), and return maps for
that batch. Everything follows the input's dtype and device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from wsss.core.config import CAM_EMPTY_FALLBACKS as EMPTY_FALLBACKS

CamOutput = torch.Tensor | tuple[torch.Tensor, ...]


def minmax_normalize(cam: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-image, per-channel min-max normalisation of (B,K,H,W) maps (methods.md 2.5).

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
    of every official code (methods.md 2.5-2.6) turns into zeros: no seed pixel can name it.

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


def resize_maps(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear (align_corners=False) resize of (B, K, h, w) maps to ``size``; K may be 0 (the labelled
    classes of an image without labels), which ``F.interpolate`` refuses."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[1] == 0:
        return x.new_zeros((*x.shape[:2], *size))
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


_FUSIONS = ("max", "sum", "mean")


def _check_fusion(name: str, how: str) -> None:
    if how not in _FUSIONS:
        raise ValueError(f"unknown {name} {how!r} (max, sum or mean)")


def labelled_classes(labels: torch.Tensor) -> torch.Tensor:
    """The foreground channels labelled in any image of a (B, C-1) multi-hot batch, sorted (long)."""
    return torch.nonzero(labels.reshape(-1, labels.shape[-1]).amax(dim=0) > 0.5).flatten()


def expand_classes(maps: torch.Tensor, classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, k, H, W) maps of the channels ``classes`` -> (B, ``num_classes``, H, W), zero elsewhere."""
    full = maps.new_zeros((maps.shape[0], num_classes, *maps.shape[2:]))
    return full.index_copy_(1, classes.to(maps.device), maps)


def _fuse(a: torch.Tensor, b: torch.Tensor, how: str) -> torch.Tensor:
    if how == "max":
        return torch.maximum(a, b)
    if how == "sum":
        return a + b
    return (a + b) / 2  # "mean"


@torch.no_grad()
def multi_scale_cam(
    cam_fn: Callable[[torch.Tensor], CamOutput],
    images: torch.Tensor,
    scales: Sequence[float],
    *,
    flip_fuse: str = "max",
    normalize: str = "minmax",
    unflipped: CamOutput | None = None,
    classes: torch.Tensor | Sequence[int] | None = None,
    compact: bool = False,
    relu_per_pass: bool = False,
    empty_fallback: str = "none",
) -> CamOutput:
    """Multi-scale, flip-fused, normalised CAMs (methods.md 2.5, ``multi_scale_cam2``).

    For each scale s, in the given order: resize ``images`` (B,3,H,W) to (int(s*H), int(s*W))
    (bilinear, align_corners=False; no resize at s = 1), concatenate with the horizontal flip, call
    ``cam_fn`` on the (2B,3,h,w) batch, upsample every returned map to (H,W) (bilinear,
    align_corners=False), fuse each image with its flipped-back twin (``flip_fuse``: elementwise
    ``"max"`` as in ToCo/SeCo, or ``"sum"``/``"mean"``) and apply a ReLU. ``relu_per_pass``: the ReLU
    comes first, on each pass at the network's resolution, as PSA / SC-CAM's ``forward_cam`` applies it
    (``Method.cam_relu_per_pass``). The scales are summed and
    each image/channel is normalised: ``normalize="minmax"`` (:func:`minmax_normalize`, eps 1e-5, ToCo/SeCo)
    or ``"max"`` (:func:`max_normalize`: divided by max + 1e-5, PSA / SC-CAM, whose flips are summed:
    ``flip_fuse="sum"``; golden ``psa_infer_cls.npz``, ``sccam_infer_cls_*.npz``) or ``"none"`` (the raw
    sum, e.g. for :func:`merge_subcategory_cams`).

    ``cam_fn`` may return one tensor or a tuple of (2B,K,h',w') tensors (e.g. ``(cam_aux, cam)``);
    the result has the same structure and order, each (B,K,H,W) (in [0,1) under "minmax" and "max").
    The official function always runs scale 1.0 first, whatever the list says: pass scales starting with 1.0 (the
    ToCo/SeCo configs do) to get the same summation order. Runs under ``torch.no_grad()``.

    ``unflipped``: ``cam_fn(images)`` already computed (e.g. by the training forward, detached);
    at scale 1.0 only the flipped images are then run. The maps are the same (no dropout), so the
    result is too, for a third less work at the largest usual scale.

    ``classes``: the only channels whose maps are upsampled, fused and normalised (e.g.
    :func:`labelled_classes` of the batch's labels); every step after ``cam_fn`` is per channel, so
    their maps are those of the all-class path, and the others come out zero (a COCO image holds
    about 3 of 80 classes: the upsampling and fusion of the other 77 were most of a CPU CAM's cost).
    With ``compact`` the result holds only the ``classes`` channels, in their order (B, k, H, W).
    A map that ``cam_fn`` returns twice (the same tensor, e.g. a model without an aux head) is
    processed once.

    ``empty_fallback`` (``"none"``, ``"minmax"``, ``"peak_odds"``): a channel whose ReLU'd sum is zero everywhere
    gets a map made from the same sum without any ReLU instead (:func:`fill_empty_maps`; pass it for labelled
    classes only).
    """
    if not scales:
        raise ValueError("multi_scale_cam needs at least one scale")
    _check_fusion("flip_fuse", flip_fuse)
    norm = _cam_normalizer(normalize)
    b, _, h, w = images.shape
    idx = None if classes is None else torch.as_tensor(classes, dtype=torch.long, device=images.device).flatten()
    acc: list[list[torch.Tensor]] | None = None
    if empty_fallback not in EMPTY_FALLBACKS:
        raise ValueError(f"unknown empty_fallback {empty_fallback!r} ({', '.join(EMPTY_FALLBACKS)})")
    fill = None if empty_fallback == "none" else (empty_fallback, len(scales) * (2 if flip_fuse == "sum" else 1))
    unrelu: list[list[torch.Tensor]] | None = None  # the passes fused before any ReLU (empty_fallback)
    same: list[int] = []
    single, num_channels = False, 0
    for s in scales:
        x = resize_maps(images, _scaled_size(h, w, float(s), None))
        reuse = unflipped is not None and float(s) == 1.0
        raw = cam_fn(x.flip(-1) if reuse else torch.cat([x, x.flip(-1)], dim=0))
        single = torch.is_tensor(raw)
        outs = (raw,) if single else tuple(raw)
        if acc is None:
            acc = [[] for _ in outs]
            unrelu = [[] for _ in outs] if fill else None
            # outputs that are one tensor (a model without an aux head) are processed once
            same = [next(j for j in range(i + 1) if outs[j] is outs[i]) for i in range(len(outs))]
            num_channels = outs[0].shape[1]
        elif len(outs) != len(acc):
            raise ValueError("cam_fn returned a different number of maps at different scales")
        kept = ((unflipped,) if torch.is_tensor(unflipped) else unflipped) if reuse else None
        _add_fused_scale(acc, unrelu, outs, same, kept, idx, b, (h, w), flip_fuse, relu_per_pass)
    assert acc is not None
    fused = _sum_and_normalize(acc, unrelu, fill, same, norm, idx, None if compact else num_channels)
    return fused[0] if single else tuple(fused)


def _cam_normalizer(normalize: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if normalize not in _NORMS:
        raise ValueError(f"unknown normalize {normalize!r} (minmax, max or none)")
    return {"minmax": minmax_normalize, "max": max_normalize, "none": lambda x: x}[normalize]


def _add_fused_scale(
    acc: list[list[torch.Tensor]],
    unrelu: list[list[torch.Tensor]] | None,
    outs: tuple[torch.Tensor, ...],
    same: list[int],
    kept: Sequence[torch.Tensor] | None,
    idx: torch.Tensor | None,
    b: int,
    size: tuple[int, int],
    flip_fuse: str,
    relu_per_pass: bool,
) -> None:
    """One scale of :func:`multi_scale_cam`: each distinct map of ``outs`` ((2B or B, K, h', w'); with
    ``kept``, the unflipped half computed before) upsampled to ``size``, fused with its flipped-back twin,
    ReLU'd (``relu_per_pass``: before all that) and appended to its list in ``acc``; with ``unrelu``, also
    upsampled and fused without any ReLU there."""
    for i, m in enumerate(outs):
        if same[i] != i:
            continue
        if kept is not None:
            m = torch.cat([kept[i], m], dim=0)
        if idx is not None:  # the channels are independent from here on
            m = m.index_select(1, idx)
        raw = resize_maps(m, size) if unrelu is not None or not relu_per_pass else None
        if unrelu is not None:
            unrelu[i].append(_fuse(raw[:b], raw[b:].flip(-1), flip_fuse))
        # relu_per_pass: the ReLU before the upsampling (the one after the fusion is then a no-op)
        up = resize_maps(F.relu(m), size) if relu_per_pass else raw
        acc[i].append(F.relu(_fuse(up[:b], up[b:].flip(-1), flip_fuse)))


def _sum_and_normalize(
    acc: list[list[torch.Tensor]],
    unrelu: list[list[torch.Tensor]] | None,
    fill: tuple[str, int] | None,
    same: list[int],
    norm: Callable[[torch.Tensor], torch.Tensor],
    idx: torch.Tensor | None,
    expand_to: int | None,
) -> list[torch.Tensor]:
    """The scales of each map summed and normalised; with ``idx`` and ``expand_to``, the kept channels
    put back among ``expand_to`` channels (zeros elsewhere). A repeated map is the same tensor again.
    With ``unrelu`` and ``fill`` (how, passes per sum), the empty maps are filled (:func:`fill_empty_maps`)."""
    fused: list[torch.Tensor] = []
    for i, maps in enumerate(acc):
        if same[i] != i:
            fused.append(fused[same[i]])
            continue
        activated = torch.stack(maps, dim=0).sum(dim=0)
        cam = norm(activated)
        if unrelu is not None and fill is not None:
            cam = fill_empty_maps(cam, activated, torch.stack(unrelu[i], dim=0).sum(dim=0), *fill)
        if idx is not None and expand_to is not None:
            cam = expand_classes(cam, idx, expand_to)
        fused.append(cam)
    return fused


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
) -> torch.Tensor:
    """Multi-scale + flip segmentation logits for inference (methods.md 2.11, 3.10).

    For each scale s: resize ``images`` (B,3,H,W) to (int(s*H), int(s*W)) (bilinear,
    align_corners=False), or to the square (int(square_size*s),)*2 when ``square_size`` is given
    (``square_size=448`` reproduces SeCo's VOC script, which does not keep the aspect); run
    ``seg_fn`` on [x; flip(x)]; upsample the logits to ``out_size`` (bilinear, align_corners=False);
    fuse the flip (``"sum"`` as in ToCo/SeCo, or ``"max"``/``"mean"``). The scales are then fused by
    ``scale_fuse``: elementwise ``"max"`` (ToCo/SeCo), ``"sum"`` or ``"mean"``. Returns raw fused
    logits (B,C,*out_size); runs under ``torch.no_grad()``.
    """
    if not scales:
        raise ValueError("multi_scale_logits needs at least one scale")
    _check_fusion("flip_fuse", flip_fuse)
    _check_fusion("scale_fuse", scale_fuse)
    b, _, h, w = images.shape
    out_size = (int(out_size[0]), int(out_size[1]))
    per_scale = []
    for s in scales:
        x = resize_maps(images, _scaled_size(h, w, float(s), square_size))
        logits = resize_maps(seg_fn(torch.cat([x, x.flip(-1)], dim=0)), out_size)
        per_scale.append(_fuse(logits[:b], logits[b:].flip(-1), flip_fuse))
    stacked = torch.stack(per_scale, dim=0)
    if scale_fuse == "max":
        return stacked.max(dim=0).values
    if scale_fuse == "sum":
        return stacked.sum(dim=0)
    return stacked.mean(dim=0)
