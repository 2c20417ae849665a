"""AffinityNet refinement (PSA, Ahn & Kwak, CVPR 2018; docs/methods/affinitynet.md#train-aff,
#random-walk): pure functions.

Pairs. PSA links each pixel of the feature grid to the neighbours within ``radius`` that lie in one
half-plane (``search_offsets``: (0, 1..r-1), then rows 1..r-1 with dx^2 + dy^2 < r^2; 34 offsets
for r = 5), so every unordered pair appears once. Only the *interior* pixels
``[:-(r-1), r-1:-(r-1)]`` are pair sources (``pair_indices``); pixels near the left, right and bottom
edges are reached only as targets, and a few corner pixels of the top row get no pair at all (the
official behaviour, ``interior_sources=True``). ``interior_sources=False`` pads the grid by r-1 on
the left, right and bottom first, so every pixel is a source and pairs leaving the grid are dropped.

Labels. From a label map on the feature grid (255 = undecided): a pair is valid when both ends are
decided; ``bg_pos`` = both background, ``fg_pos`` = same foreground class, ``neg`` = different
classes (PSA ``ExtractAffinityLabelInRadius``).

Affinity. ``a_ij = exp(-mean_c |f_i - f_j|)`` of the affinity features (PSA ``AffNet.forward``);
loss ``bg/4 + fg/4 + neg/2`` with each part averaged over its pairs (``affinity_loss`` returns the
three unweighted parts; the weights live in ``loss.weights``).

Random walk (PSA ``infer_aff.py``). Dense symmetric affinity matrix with a unit diagonal, raised to
``beta``, normalised over dim 0 (``T = A^beta / sum_i A^beta_ij``), squared ``logt`` times
(``T^(2^logt)``), and applied as ``cam_vec @ T`` to the CAM with a background channel
``(1 - max_c cam_c)^alpha`` pooled to the grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from wsss.core.config import NON_NEGATIVE_NUMBER, POSITIVE, setting
from wsss.core.errors import UsageError
from wsss.utils.io import IGNORE


@dataclass
class PSASeedOptions:
    """PSA's AffinityNet seeds made from a run's CAMs by `wsss pseudo RUN --refine psa`
    (docs/methods/affinitynet.md#psa-seeds): options of the methods whose CAMs feed PSA's AffinityNet in the
    shipped routes (the CAM baseline, SC-CAM), which derive their ``Options`` from this class. The CAMs of any
    other method get these defaults."""

    # background (1 - max cam)^alpha of the confident-foreground ("la") and confident-background ("ha") CRF maps
    # (PSA: 4 and 32); `--levels HIGH/LOW` replaces them for one job (``cam.affinity.alpha_for_level``)
    psa_alphas: tuple[float, float] = setting((4.0, 32.0), **NON_NEGATIVE_NUMBER)
    # PSA's seed resolution: its AffinityNet loader average-pools the la / ha CRF score maps by 8 and takes the
    # argmax there (golden psa_aff_labels.npz; ``cam.affinity.psa_seed_grid``); `--refine psa` then writes that
    # grid label, block-constant at the image size (padding -> 255). 1: the label of the full-resolution maps.
    psa_seed_stride: int = setting(1, **POSITIVE)


def search_offsets(radius: int) -> list[tuple[int, int]]:
    """PSA's neighbour offsets (dy, dx) within ``radius`` in one half-plane (34 for radius 5)."""
    if radius < 2:
        raise ValueError(f"radius must be >= 2, got {radius}")
    offsets = [(0, dx) for dx in range(1, radius)]
    for dy in range(1, radius):
        for dx in range(-radius + 1, radius):
            if dx * dx + dy * dy < radius * radius:
                offsets.append((dy, dx))
    return offsets


def _check_grid(h: int, w: int, radius: int) -> None:
    rf = radius - 1
    if h <= rf or w <= 2 * rf:
        raise ValueError(f"a {h}x{w} grid is too small for radius {radius} (needs h > {rf} and w > {2 * rf})")


def pair_indices(h: int, w: int, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices of PSA's pairs on an (h, w) grid: ``from`` (P,) and ``to`` (D, P), D offsets."""
    _check_grid(h, w, radius)
    rf = radius - 1
    full = torch.arange(h * w).view(h, w)
    ch, cw = h - rf, w - 2 * rf
    src = full[:-rf, rf : rf + cw].reshape(-1)
    dst = torch.stack([full[dy : dy + ch, rf + dx : rf + dx + cw].reshape(-1) for dy, dx in search_offsets(radius)])
    return src, dst


def _pairs(x: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., h, w) -> values at the sources (..., P) and at the targets (..., D, P)."""
    h, w = x.shape[-2:]
    _check_grid(h, w, radius)
    rf = radius - 1
    ch, cw = h - rf, w - 2 * rf
    src = x[..., :ch, rf : rf + cw].flatten(-2)
    dst = torch.stack(
        [x[..., dy : dy + ch, rf + dx : rf + dx + cw].flatten(-2) for dy, dx in search_offsets(radius)], -2
    )
    return src, dst


def pad_for_all_sources(x: torch.Tensor, radius: int, value: float) -> torch.Tensor:
    """Pad (..., h, w) by radius-1 left, right and bottom, so that every original pixel is a source."""
    rf = radius - 1
    return F.pad(x, (rf, rf, 0, rf), value=value)


def affinity_labels(
    label: torch.Tensor, radius: int, *, interior_sources: bool = True, ignore_index: int = IGNORE
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pair labels of a label map (..., h, w) on the feature grid -> ``bg_pos, fg_pos, neg`` (..., D, P) bool.

    With ``interior_sources=False`` the map is padded with ``ignore_index`` (``pad_for_all_sources``):
    pairs that leave the grid are invalid.
    """
    label = label.long()
    if not interior_sources:
        label = pad_for_all_sources(label, radius, ignore_index)
    src, dst = _pairs(label, radius)
    src = src.unsqueeze(-2)
    valid = (src != ignore_index) & (dst != ignore_index)
    same = (src == dst) & valid
    return same & (src == 0), same & (src != 0), (src != dst) & valid


def pairwise_affinity(feat: torch.Tensor, radius: int, *, interior_sources: bool = True) -> torch.Tensor:
    """Affinities ``exp(-mean_c |f_i - f_j|)`` of PSA's pairs: (B, C, h, w) -> (B, D, P).

    With ``interior_sources=False`` the features are zero-padded like the labels (the padded pairs
    are invalid there and drop out of the loss).
    """
    if not interior_sources:
        feat = pad_for_all_sources(feat, radius, 0.0)
    h, w = feat.shape[-2:]
    _check_grid(h, w, radius)
    rf = radius - 1
    ch, cw = h - rf, w - 2 * rf
    src = feat[..., :ch, rf : rf + cw]
    out = [  # one offset at a time: the (B, C, D, P) difference tensor is never built
        torch.exp(-(feat[..., dy : dy + ch, rf + dx : rf + dx + cw] - src).abs().mean(dim=1)).flatten(-2)
        for dy, dx in search_offsets(radius)
    ]
    return torch.stack(out, dim=1)


def affinity_loss(
    aff: torch.Tensor, bg_pos: torch.Tensor, fg_pos: torch.Tensor, neg: torch.Tensor, eps: float = 1e-5
) -> dict[str, torch.Tensor]:
    """PSA ``train_aff.py``: each part averaged over its pairs (count + 1e-5); the total is
    ``aff_bg/4 + aff_fg/4 + aff_neg/2`` (the weights of the presets' ``loss.weights``)."""
    bg, fg, ng = bg_pos.to(aff.dtype), fg_pos.to(aff.dtype), neg.to(aff.dtype)
    return {
        "aff_bg": (-bg * torch.log(aff + eps)).sum() / (bg.sum() + eps),
        "aff_fg": (-fg * torch.log(aff + eps)).sum() / (fg.sum() + eps),
        "aff_neg": (-ng * torch.log(1.0 + eps - aff)).sum() / (ng.sum() + eps),
    }


def dense_affinity(feat: torch.Tensor, radius: int, *, interior_sources: bool = True) -> torch.Tensor:
    """(C, h, w) features -> (h*w, h*w) symmetric affinity matrix with a unit diagonal (PSA ``to_dense``)."""
    if feat.dim() == 4:
        if feat.shape[0] != 1:
            raise ValueError("dense_affinity takes one image")
        feat = feat[0]
    _, h, w = feat.shape
    if interior_sources:
        src, dst = pair_indices(h, w, radius)
        aff = pairwise_affinity(feat[None], radius)[0]
        keep = torch.ones_like(aff, dtype=torch.bool)
    else:  # index the padded grid, keep the pairs inside the original one
        ids = pad_for_all_sources(torch.arange(h * w, device=feat.device).view(h, w), radius, -1)
        src_ids, dst_ids = _pairs(ids, radius)
        aff = pairwise_affinity(feat[None], radius, interior_sources=False)[0]
        keep = (dst_ids >= 0) & (src_ids >= 0).unsqueeze(0)
        src, dst = src_ids, dst_ids
    n = h * w
    src = src.to(feat.device).unsqueeze(0).expand_as(dst)
    dst = dst.to(feat.device)
    a = torch.eye(n, dtype=feat.dtype, device=feat.device)
    s, d, v = src[keep], dst[keep], aff[keep].to(feat.dtype)
    a[s, d] = v
    a[d, s] = v
    return a


def transition_matrix(aff: torch.Tensor, beta: float) -> torch.Tensor:
    """``A^beta`` normalised over dim 0, as PSA (``aff_mat / sum(aff_mat, dim=0)``)."""
    a = aff.pow(beta)
    return a / a.sum(dim=0, keepdim=True)


def random_walk(cam_vec: torch.Tensor, trans: torch.Tensor, logt: int) -> torch.Tensor:
    """``cam_vec @ T^(2^logt)`` by ``logt`` squarings: (K, N) scores propagated on the (N, N) transition."""
    t = trans
    for _ in range(int(logt)):
        t = t @ t
    return cam_vec @ t


def alpha_for_level(level: float) -> float:
    """The exponent whose PSA background ``(1 - c)^alpha`` equals the CAM ``c`` at ``c = level``.

    A one-class pixel is background below that CAM value and its class above it, so a CAM level picked by
    `wsss sweep-bkg` (the thresholds' calibration, docs/methods/seco.md#cam2label) becomes PSA's alpha: PSA's la / ha
    alphas 4 / 32 and its walk's 16 cross at CAM values 0.28 / 0.08 / 0.12
    (docs/methods/affinitynet.md#psa-seeds, #random-walk).
    """
    if not 0.0 < level < 1.0:  # (1 - c)^alpha = c has no finite alpha at 0 or 1
        raise UsageError(f"a CAM level for PSA's background (--levels) must lie strictly between 0 and 1, got {level}")
    return math.log(level) / math.log(1.0 - level)


def background_cam(cam: torch.Tensor, alpha: float) -> torch.Tensor:
    """(C-1, H, W) foreground CAM in [0, 1] -> (C, H, W) with the PSA background ``(1 - max_c cam)^alpha``."""
    bg = (1.0 - cam.max(dim=0, keepdim=True).values).clamp_min(0.0).pow(alpha)
    return torch.cat([bg, cam], dim=0)


def random_walk_scores(
    scores: torch.Tensor, feat: torch.Tensor, *, beta: float, logt: int, radius: int, interior_sources: bool = True
) -> torch.Tensor:
    """PSA ``infer_aff.py`` on one image: ``scores`` (C, H, W), the CAM with its background channel
    first (``background_cam``) sized as the network input, ``feat`` (C', h, w) the affinity features
    of that input -> (C, H, W) scores after the random walk.

    The scores are average-pooled to the grid (``avg_pool2d`` by the stride when H, W are multiples
    of it, as PSA's padded input), walked, and upsampled bilinearly; the argmax is the label.
    """
    c, big_h, big_w = scores.shape
    h, w = feat.shape[-2:]
    small = F.adaptive_avg_pool2d(scores.float()[None], (h, w))[0].reshape(c, -1)
    trans = transition_matrix(dense_affinity(feat.float(), radius, interior_sources=interior_sources), beta)
    walked = random_walk(small.to(trans.device), trans, logt).view(1, c, h, w)
    return F.interpolate(walked, size=(big_h, big_w), mode="bilinear", align_corners=False)[0]


def psa_seed_grid(
    la: torch.Tensor, ha: torch.Tensor, stride: int = 8, *, ignore_index: int = IGNORE, eps: float = 1e-5
) -> torch.Tensor:
    """PSA's AffinityNet seed on the feature grid from the la / ha CRF score maps (``voc12/data.py``).

    ``la``, ``ha``: (1 + n, H, W) marginals of the low- / high-alpha CRF (background first, then the n
    present classes), H and W multiples of ``stride``. Both are **average-pooled by ``stride``** before
    the argmax (PSA pools the scores, not a label map). Label: the la argmax (its position: 0 = bg,
    i = the i-th present class); ``ignore_index`` where la says background; 0 where ha says
    background; ``ignore_index`` where every channel of both maps is < ``eps`` (crop padding).
    Returns (H/stride, W/stride) long (golden ``psa_aff_labels.npz: seed_label``).
    """
    if la.shape != ha.shape or la.dim() != 3:
        raise ValueError(f"la {tuple(la.shape)} and ha {tuple(ha.shape)} must be two (1 + n, H, W) stacks")
    pooled = F.avg_pool2d(torch.cat([la, ha]).float()[None], stride)[0]
    n = la.shape[0]
    la_arg, ha_arg = pooled[:n].argmax(0), pooled[n:].argmax(0)
    label = la_arg.clone()
    label[la_arg == 0] = ignore_index
    label[ha_arg == 0] = 0
    label[(pooled < eps).all(dim=0)] = ignore_index
    return label


def psa_seed_label(
    la: torch.Tensor, ha: torch.Tensor, ids: torch.Tensor, stride: int = 8, *, ignore_index: int = IGNORE
) -> torch.Tensor:
    """:func:`psa_seed_grid` of (1 + n, H, W) la / ha maps of any size, as an (H, W) label of class ids:
    the maps are zero-padded right / bottom to a multiple of ``stride`` (padding -> ``ignore_index``), the
    grid label's positions are mapped to ``ids`` (0 = background first) and each cell is repeated over its
    ``stride x stride`` block."""
    _, h, w = la.shape
    pad = (0, -w % stride, 0, -h % stride)
    grid = psa_seed_grid(F.pad(la, pad), F.pad(ha, pad), stride, ignore_index=ignore_index)
    lut = torch.full((max(int(ignore_index), len(ids)) + 1,), ignore_index, dtype=torch.long)
    lut[: len(ids)] = ids.long()
    label = lut[grid].repeat_interleave(stride, 0).repeat_interleave(stride, 1)
    return label[:h, :w]
