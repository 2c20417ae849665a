"""Dense-energy regulariser of Tang et al. (rloss), as used by ToCo/SeCo (docs/methods/seco.md#reg-loss).

``energy = weight * -sum_k (S_k*roi)^T W (S_k*roi) * Gate / B`` at half resolution, where W is an
unnormalised Gaussian bilateral kernel over (x, y, R, G, B) and Gate = max(0, roi - max_k S_k), set
to 1 on unlabeled (255) pixels. Semantics and the custom backward follow the official
``DenseEnergyLoss`` / ``get_energy_loss`` (golden ``seg_energy.npz``): see
:func:`dense_energy_loss` and :func:`energy_loss_from_logits`. Everything is plain torch; there is
no compiled extension.

Bilateral filter (:func:`bilateral_filter`), ``out_i = sum_j exp(-|p_i-p_j|^2/(2 sxy^2)
- |I_i-I_j|^2/(2 srgb^2)) v_j`` (j = i included), four methods:

* ``"dense"``: exact, chunked O((hw)^2). ``"auto"`` uses it up to 64x64.
* ``"permutohedral"``: the official filter (a permutohedral lattice, Adams et al. 2010, in Kraehenbuehl's
  implementation) rewritten with tensor ops: a sorted ``torch.unique`` of int64 vertex codes replaces the hash
  table, ``searchsorted`` finds the blur neighbours. It repeats the reference's float32 operations in order and
  reproduces the golden ``bilateral_AS_raw``, ``energy_loss`` and ``grad_energy_logits`` bit for bit. It is *not*
  scaled like the exact filter.
* ``"fast"`` (``"auto"`` above 64x64): the same lattice, refined to approximate the exact filter: features scaled
  by sqrt(2) (a lattice twice as fine), two [1 2 1] blur passes per axis (the kernel's width kept), one ring of
  empty vertices around the occupied ones (the blur not cut off next to the data), the output divided by the
  lattice's gain (``_FAST_GAIN``); splat, blur and slice as CSR sparse products.

How far each is from the exact filter, what it costs, and the alternatives measured while choosing:
docs/methods/seco.md#reg-loss-filter.

Loss default: ``dense_energy_loss(method="permutohedral")`` is the official loss, bit for bit. With ``"dense"``,
``"fast"`` or ``"auto"`` the kernel is the exact Gaussian, and the energy is stronger than the official one (the
factor and the weight that matches it: the same page).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "bilateral_filter",
    "dense_energy_loss",
    "energy_loss_from_logits",
    "scale_energy_inputs",
]

_DENSE_MAX_PIXELS = 64 * 64  # method="auto": exact dense filter up to this many pixels


# --------------------------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------------------------
def _features(image: torch.Tensor, sigma_rgb: float, sigma_xy: float, dtype: torch.dtype) -> torch.Tensor:
    """(B, 3, h, w) image -> (B, h*w, 5) features (x/sxy, y/sxy, R/srgb, G/srgb, B/srgb), row-major.

    x is the column and y the row, each divided by its sigma (a division, like the official code).
    """
    b, _, h, w = image.shape
    dev = image.device
    sxy = torch.tensor(sigma_xy, dtype=dtype, device=dev)
    srgb = torch.tensor(sigma_rgb, dtype=dtype, device=dev)
    xs = (torch.arange(w, dtype=dtype, device=dev) / sxy).expand(h, w)
    ys = (torch.arange(h, dtype=dtype, device=dev) / sxy)[:, None].expand(h, w)
    pos = torch.stack([xs, ys]).reshape(1, 2, h * w).expand(b, 2, h * w)
    col = image.to(dtype).reshape(b, 3, h * w) / srgb
    return torch.cat([pos, col], 1).transpose(1, 2).contiguous()


# --------------------------------------------------------------------------------------------
# exact dense filter
# --------------------------------------------------------------------------------------------
def _dense_filter(
    image: torch.Tensor, values: torch.Tensor, sigma_rgb: float, sigma_xy: float, max_entries: int = 1 << 22
) -> torch.Tensor:
    """Exact O((hw)^2) filter, in the values' dtype (float32 at least), chunked over target pixels."""
    b, k, h, w = values.shape
    dtype = values.dtype if values.dtype in (torch.float32, torch.float64) else torch.float32
    feat = _features(image, sigma_rgb, sigma_xy, dtype)  # (B, N, 5)
    n = h * w
    chunk = max(1, max_entries // max(n, 1))
    out = torch.empty(b, n, k, dtype=dtype, device=values.device)
    for bi in range(b):
        f = feat[bi]
        v = values[bi].to(dtype).reshape(k, n).T
        for s in range(0, n, chunk):
            # exact differences (no |a|^2 + |b|^2 - 2ab cancellation)
            d2 = torch.cdist(f[s : s + chunk], f, compute_mode="donot_use_mm_for_euclid_dist").square_()
            out[bi, s : s + chunk] = torch.exp(d2.mul_(-0.5)) @ v
    return out.transpose(1, 2).reshape(b, k, h, w)


# --------------------------------------------------------------------------------------------
# permutohedral lattice (Adams et al. 2010), written with torch tensor ops
# --------------------------------------------------------------------------------------------
def _simplex_coords(feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Enclosing simplex and barycentric weights of (P, d) float32 features.

    Returns ``rem0`` (P, d) int64 (the first d coordinates of the nearest remainder-0 lattice
    point, after the re-projection step), ``rank`` (P, d+1) int64 (rank of each coordinate's
    residual, a permutation of 0..d) and ``bary`` (P, d+1) float32. Vertex r of the simplex has
    coordinates ``rem0 + r - (d+1) * (rank > d - r)`` (the canonical simplex of Adams et al.; the (d+1)-th
    coordinate is implied because the coordinates sum to 0). The float32 arithmetic follows the
    reference lattice step by step (elevation onto the hyperplane, rounding half to even like its
    SSE build, ranking with the same tie rule, barycentric weights with the same roundings), so the
    vertices and weights are bit-identical to it.
    """
    p, d = feat.shape
    dev = feat.device
    inv_std = float(torch.tensor(math.sqrt(2.0 / 3.0) * (d + 1), dtype=torch.float32))
    scale = [float(torch.tensor(1.0 / math.sqrt((i + 2) * (i + 1)) * inv_std, dtype=torch.float32)) for i in range(d)]
    elev = [feat.new_zeros(p)] * (d + 1)
    sm = feat.new_zeros(p)
    for j in range(d, 0, -1):
        cf = feat[:, j - 1] * scale[j - 1]
        elev[j] = sm - float(j) * cf
        sm = sm + cf
    elev[0] = sm
    el = torch.stack(elev, 1)  # (P, d+1)
    down = float(torch.tensor(1.0 / (d + 1), dtype=torch.float32))
    rnd = torch.round(el * down)  # SSE cvtps_epi32: round half to even
    rem0 = rnd * float(d + 1)
    diff = el - rem0
    # rank_i = #{j > i: diff_i < diff_j} + #{j < i: not diff_j < diff_i}  (the reference's tie rule)
    less = diff[:, :, None] < diff[:, None, :]
    upper = torch.ones(d + 1, d + 1, dtype=torch.bool, device=dev).triu(1)
    rank = (less & upper).sum(2) + (~less & upper).sum(1)
    rank += rnd.sum(1).to(torch.int64)[:, None]
    fix = (rank < 0).to(torch.int64) * (d + 1) - (rank >= d + 1).to(torch.int64) * (d + 1)
    rank += fix
    rem0 = rem0 + fix.to(torch.float32)
    # barycentric: the reference adds v_i at d - rank_i and subtracts it at d - rank_i + 1; every
    # slot gets one term of each sign, so b[p] = v(p) - v(p-1) with a single rounding, in any order
    v = (el - rem0) * down
    vpos = torch.empty_like(v).scatter_(1, d - rank, v)
    bary = torch.empty_like(v)
    bary[:, 1:] = vpos[:, 1:] - vpos[:, :-1]
    bary[:, 0] = vpos[:, 0] + (1.0 - vpos[:, d])
    return rem0[:, :d].to(torch.int64), rank, bary


class _Lattice:
    """Sparse permutohedral lattice over B images of N points each (one hash space, batch-keyed).

    Lattice points are keyed by an int64 mixed-radix code of (image, d coordinates); a sorted
    ``torch.unique`` replaces the hash table and ``searchsorted`` finds the blur neighbours,
    whose codes are the vertex code plus a constant per axis. ``rings`` > 0 adds that many layers
    of neighbouring vertices around the occupied ones, so that the blur is not cut where the data
    are sparse. ``sse_pad`` reproduces a detail of the reference SSE build, which processes the
    points 4 at a time and also inserts the vertices of the zero feature vector for the padding
    points when N % 4 != 0.
    """

    def __init__(self, feat: torch.Tensor, *, rings: int = 0, sse_pad: bool = False):
        b, n, d = feat.shape
        dev = feat.device
        if sse_pad and n % 4:
            feat = torch.cat([feat, feat.new_zeros(b, 4 - n % 4, d)], 1)
        self.b, self.n, self.np, self.d = b, n, feat.shape[1], d
        rem0, rank, self.bary = _simplex_coords(feat.reshape(-1, d).float())
        # vertex coordinates lie within rem0 +- d; leave room for the rings and one more blur step
        pad = (rings + 2) * (d + 1)
        lo = rem0.amin(0) - pad
        radix = (rem0.amax(0) + pad - lo + 1).tolist()
        strides = [1] * d
        for c in range(d - 2, -1, -1):
            strides[c] = strides[c + 1] * radix[c + 1]
        bstride = strides[0] * radix[0]
        if bstride * b >= 2**62:
            raise ValueError("bilateral_filter: lattice keys overflow int64 (sigma too small for the image range)")
        st = torch.tensor(strides, dtype=torch.int64, device=dev)
        ssum = sum(strides)
        base = ((rem0 - lo) * st).sum(1) + torch.arange(b, device=dev).repeat_interleave(self.np) * bstride
        # vertex r adds r to every coordinate and -(d+1) to those of rank > d - r; as r grows, the
        # coordinate of rank d+1-r joins that set: a cumulative sum of strides in rank order
        st_by_rank = torch.zeros_like(rank).scatter_(1, rank, torch.cat([st, st.new_zeros(1)]).expand_as(rank))
        above = torch.cat([rank.new_zeros(rank.shape[0], 1), st_by_rank.flip(1).cumsum(1)[:, :d]], 1)
        codes = base[:, None] + torch.arange(d + 1, device=dev) * ssum - (d + 1) * above
        uniq, inv = torch.unique(codes, return_inverse=True)
        # neighbour along axis j: all coordinates -1 except coordinate j +d (j = d: only the -1s)
        deltas = [(d + 1) * strides[j] - ssum for j in range(d)] + [-ssum]
        if rings:
            occupied = uniq
            for _ in range(rings):
                uniq = torch.unique(torch.cat([uniq] + [uniq + s * dl for dl in deltas for s in (1, -1)]))
            inv = torch.searchsorted(uniq, occupied)[inv]
        self.m = uniq.numel()
        self.offsets = inv + 1  # (P, d+1); row 0 of the value buffer stands for "absent"

        rows = torch.arange(1, self.m + 1, device=dev)
        self.neighbours = []
        for dl in deltas:
            # n1[i]: row of the vertex at +delta (0 if absent); the one at -delta is its inverse map
            q = uniq + dl
            i = torch.searchsorted(uniq, q).clamp_(max=self.m - 1)
            hit = uniq[i] == q
            n1 = torch.zeros(self.m + 1, dtype=torch.int64, device=dev)
            n1[1:] = torch.where(hit, i + 1, 0)
            n2 = torch.zeros_like(n1)
            n2[i[hit] + 1] = rows[hit]
            self.neighbours.append((n1, n2))

    def filter(self, values: torch.Tensor, passes: int = 1) -> torch.Tensor:
        """Splat (B*Np, K) float32 values, blur ``passes`` times along each of the d+1 axes, slice.

        Every floating-point operation is the reference's, in its order (bit-identical output).
        """
        d, k = self.d, values.shape[1]
        buf = values.new_zeros(self.m + 1, k)
        src = (self.bary[:, :, None] * values[:, None, :]).reshape(-1, k)
        buf.index_add_(0, self.offsets.reshape(-1), src)  # point-major order, like the reference
        for n1, n2 in self.neighbours:
            for _ in range(passes):
                buf = buf + 0.5 * (buf.index_select(0, n1) + buf.index_select(0, n2))
        w = self.bary * _alpha(d)
        out = w[:, :1] * buf.index_select(0, self.offsets[:, 0])
        for r in range(1, d + 1):
            out += w[:, r : r + 1] * buf.index_select(0, self.offsets[:, r])
        return out

    def filter_sparse(self, values: torch.Tensor, passes: int = 1) -> torch.Tensor:
        """The same computation as sparse (CSR) matrix products: ~3x faster, not bit-identical."""
        d = self.d
        m1, p = self.m + 1, self.offsets.shape[0]
        dev, dt = values.device, values.dtype
        flat = self.offsets.reshape(-1)

        def csr(crow, col, val, size):
            return torch.sparse_csr_tensor(crow, col, val, size, check_invariants=False)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            order = torch.argsort(flat, stable=True)
            crow = torch.zeros(m1 + 1, dtype=torch.int64, device=dev)
            crow[1:] = torch.bincount(flat, minlength=m1).cumsum(0)
            point = torch.arange(p, device=dev).repeat_interleave(d + 1)
            buf = csr(crow, point[order], self.bary.reshape(-1)[order].to(dt), (m1, p)) @ values
            # blur rows [0.5, 1, 0.5] on (n1, self, n2); absent neighbours point at the zero row 0
            crow3 = torch.arange(0, 3 * m1 + 1, 3, device=dev)
            diag = torch.arange(m1, device=dev)
            wts = torch.tensor([0.5, 1.0, 0.5], dtype=dt, device=dev).repeat(m1)
            for n1, n2 in self.neighbours:
                blur = csr(crow3, torch.stack([n1, diag, n2], 1).reshape(-1), wts, (m1, m1))
                for _ in range(passes):
                    buf = blur @ buf
            crow6 = torch.arange(0, (d + 1) * p + 1, d + 1, device=dev)
            return csr(crow6, flat, (self.bary * _alpha(d)).reshape(-1).to(dt), (p, m1)) @ buf


def _alpha(d: int) -> float:
    """The reference's output scale 1 / (1 + 2^-d), rounded to float32."""
    return float(torch.tensor(1.0 / (1.0 + 2.0 ** (-d)), dtype=torch.float32))


# "fast" method: a lattice twice as fine (features scaled by sqrt(2), so the vertex spacing is
# 1/sqrt(2) of the official one), two [1 2 1] passes per axis (same kernel width in feature units),
# one ring of empty vertices around the occupied ones (no truncation of the blur next to the
# data), then a division by the lattice gain measured against the exact filter on photos.
_FAST_SCALE = math.sqrt(2.0)
_FAST_PASSES = 2
_FAST_RINGS = 1
_FAST_GAIN = 8.9


def _lattice_filter(
    image: torch.Tensor,
    values: torch.Tensor,
    sigma_rgb: float,
    sigma_xy: float,
    *,
    scale: float,
    passes: int,
    rings: int,
    official: bool,
) -> torch.Tensor:
    b, k, h, w = values.shape
    feat = _features(image, sigma_rgb, sigma_xy, torch.float32)
    if scale != 1.0:
        feat = feat * scale
    lat = _Lattice(feat, rings=rings, sse_pad=official)
    v = values.detach().to(torch.float32).permute(0, 2, 3, 1).reshape(b, h * w, k)
    if lat.np != lat.n:
        v = torch.cat([v, v.new_zeros(b, lat.np - lat.n, k)], 1)
    run = lat.filter if official else lat.filter_sparse
    out = run(v.reshape(-1, k), passes).reshape(b, lat.np, k)[:, : lat.n]
    return out.reshape(b, h, w, k).permute(0, 3, 1, 2)


def _check_filter_inputs(image: torch.Tensor, values: torch.Tensor, sigma_rgb: float, sigma_xy: float) -> None:
    if image.dim() != 4 or image.shape[1] != 3 or values.dim() != 4:
        raise ValueError(
            f"bilateral_filter expects image (B,3,h,w) and values (B,K,h,w), got "
            f"{tuple(image.shape)} and {tuple(values.shape)}"
        )
    if image.shape[0] != values.shape[0] or image.shape[2:] != values.shape[2:]:
        raise ValueError(
            f"bilateral_filter: image {tuple(image.shape)} and values {tuple(values.shape)} "
            "differ in batch or spatial size"
        )
    if sigma_rgb <= 0 or sigma_xy <= 0:
        raise ValueError("bilateral_filter: sigmas must be positive")


def bilateral_filter(
    image: torch.Tensor,
    values: torch.Tensor,
    sigma_rgb: float,
    sigma_xy: float,
    *,
    method: str = "auto",
) -> torch.Tensor:
    """Unnormalised Gaussian filter ``out_i = sum_j exp(-|p_i-p_j|^2/(2 sxy^2) - |I_i-I_j|^2/(2 srgb^2)) v_j``.

    The sum runs over all pixels j of the same image, j = i included; p = (column, row) in pixels,
    I = the RGB value of ``image``. Not differentiable (the energy loss has its own backward).

    Args:
        image: (B, 3, h, w) float colours on a 0..255 scale.
        values: (B, K, h, w) values to filter.
        sigma_rgb, sigma_xy: kernel widths in colour units and pixels.
        method: ``"dense"`` exact, O((hw)^2) time, chunked memory (fine up to ~64x64);
            ``"fast"`` permutohedral-lattice approximation of the exact filter (about 3 % relative
            error on photos, see the module docstring); ``"auto"`` = dense up to 64*64 pixels, else
            fast; ``"permutohedral"`` = the rloss/ToCo/SeCo extension reproduced bit for bit,
            which is **not** scaled like the exact filter (about 0.55-0.6 times it on photos).

    Returns:
        (B, K, h, w) in the values' dtype (computed in float32 except for ``dense`` in float64).
    """
    _check_filter_inputs(image, values, sigma_rgb, sigma_xy)
    h, w = values.shape[2:]
    if method == "auto":
        method = "dense" if h * w <= _DENSE_MAX_PIXELS else "fast"
    out_dtype = values.dtype if values.is_floating_point() else torch.float32
    image = image.detach()
    if method == "dense":
        return _dense_filter(image, values.detach(), sigma_rgb, sigma_xy).to(out_dtype)
    if method == "fast":
        out = _lattice_filter(
            image,
            values,
            sigma_rgb,
            sigma_xy,
            scale=_FAST_SCALE,
            passes=_FAST_PASSES,
            rings=_FAST_RINGS,
            official=False,
        )
        return (out / _FAST_GAIN).to(out_dtype)
    if method == "permutohedral":
        out = _lattice_filter(image, values, sigma_rgb, sigma_xy, scale=1.0, passes=1, rings=0, official=True)
        return out.to(out_dtype)
    raise ValueError(f"bilateral_filter: unknown method {method!r} (auto, dense, fast, permutohedral)")


# --------------------------------------------------------------------------------------------
# dense energy loss
# --------------------------------------------------------------------------------------------
class _DenseEnergy(torch.autograd.Function):
    """``-sum(S * AS * Gate) / N`` with the official (rloss) backward ``-2 * AS * Gate / N * ROI``."""

    @staticmethod
    def forward(ctx, seg, image, roi, unlabeled, sigma_rgb, sigma_xy, method):  # noqa: D102
        n, k = seg.shape[:2]
        with torch.no_grad():
            gate = roi - seg.max(dim=1)[0]
            gate = torch.where(unlabeled, torch.ones_like(gate), gate).clamp_min(0)
            s = seg * roi[:, None]
            a_s = bilateral_filter(image, s, sigma_rgb, sigma_xy, method=method).to(seg.dtype)
            a_s = a_s * gate[:, None]
            loss = -(s * a_s).sum() / n
        ctx.save_for_backward(a_s * roi[:, None])
        ctx.n = n
        return loss

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        (a_s_roi,) = ctx.saved_tensors
        return -2.0 * grad_out * a_s_roi / ctx.n, None, None, None, None, None, None


def scale_energy_inputs(
    image: torch.Tensor, probs: torch.Tensor, roi: torch.Tensor, label: torch.Tensor, scale_factor: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The downscaled inputs of the official ``DenseEnergyLoss`` (golden ``scaled_*`` intermediates).

    Returns ``(image, probs, roi, label)`` at ``scale_factor``: image (B,3,h,w) nearest (pixel
    (2i, 2j) for 0.5) in the probabilities' dtype, probs (B,K,h,w) bilinear align_corners=False
    (differentiable), roi (B,h,w) nearest, label (B,h,w) uint8 nearest (cast to uint8 first).
    """
    dtype = probs.dtype
    scaled_image = F.interpolate(image.detach().to(dtype), scale_factor=scale_factor, mode="nearest")
    scaled_probs = F.interpolate(probs, scale_factor=scale_factor, mode="bilinear", align_corners=False)
    scaled_roi = F.interpolate(roi.detach().to(dtype)[:, None], scale_factor=scale_factor, mode="nearest")[:, 0]
    lab_u8 = label.detach().to(torch.uint8)  # like the official label.type(torch.uint8)
    scaled_label = F.interpolate(lab_u8[:, None], scale_factor=scale_factor, mode="nearest")[:, 0]
    return scaled_image, scaled_probs, scaled_roi, scaled_label


def dense_energy_loss(
    image: torch.Tensor,
    probs: torch.Tensor,
    roi: torch.Tensor,
    label: torch.Tensor,
    *,
    weight: float = 1e-7,
    sigma_rgb: float = 15.0,
    sigma_xy: float = 100.0,
    scale_factor: float = 0.5,
    method: str = "permutohedral",
) -> torch.Tensor:
    """Dense-energy (rloss) regulariser, official ``DenseEnergyLoss`` semantics (docs/methods/seco.md#reg-loss).

    At ``scale_factor``: the image is downscaled with nearest (pixel (2i, 2j) for 0.5), the
    probabilities S with bilinear (align_corners=False), ``roi`` and ``label`` with nearest.
    ``Gate = roi - max_k S`` is set to 1 where the label is 255 and clamped at 0, and
    ``energy = weight * -sum(S*roi * AS * Gate) / B`` with ``AS = bilateral_filter(image,
    S*roi, sigma_rgb, sigma_xy * scale_factor)``. The backward is the official one: the gradient
    with respect to the downscaled S is ``-2 * weight * AS * Gate * roi / B`` (Gate held constant),
    then autograd continues through the bilinear downscale (and whatever produced ``probs``).

    Args:
        image: (B, 3, H, W) colours on a 0..255 scale (not differentiated).
        probs: (B, K, H, W) softmax of the segmentation logits.
        roi: (B, H, W) {0, 1} mask (the crop box in ToCo/SeCo).
        label: (B, H, W) pseudo label, 255 = unlabeled (cast to uint8 like the official code).
        method: the filter (see :func:`bilateral_filter`). The default ``"permutohedral"``
            reproduces the official values; ``"dense"``/``"fast"``/``"auto"`` use the exact
            Gaussian, whose energy is stronger (the factor, and the weight of the official strength:
            docs/methods/seco.md#reg-loss-filter).

    Returns:
        A 0-d tensor in the probabilities' dtype.
    """
    if probs.dim() != 4 or image.dim() != 4 or roi.dim() != 3 or label.dim() != 3:
        raise ValueError(
            f"dense_energy_loss expects image (B,3,H,W), probs (B,K,H,W), roi and label (B,H,W), got "
            f"{tuple(image.shape)}, {tuple(probs.shape)}, {tuple(roi.shape)}, {tuple(label.shape)}"
        )
    size = probs.shape[2:]
    if image.shape[2:] != size or roi.shape[1:] != size or label.shape[1:] != size:
        raise ValueError("dense_energy_loss: image, probs, roi and label must share the spatial size (H, W)")
    scaled_image, scaled_probs, scaled_roi, scaled_label = scale_energy_inputs(image, probs, roi, label, scale_factor)
    unlabeled = scaled_label == 255
    energy = _DenseEnergy.apply(
        scaled_probs, scaled_image, scaled_roi, unlabeled, float(sigma_rgb), float(sigma_xy) * scale_factor, method
    )
    return weight * energy


def energy_loss_from_logits(
    inputs_normalized: torch.Tensor,
    logits: torch.Tensor,
    label: torch.Tensor,
    img_box: torch.Tensor | Sequence[Sequence[int]],
    *,
    mean: Sequence[float] = (123.675, 116.28, 103.53),
    std: Sequence[float] = (58.395, 57.12, 57.375),
    **kw,
) -> torch.Tensor:
    """ToCo/SeCo ``get_energy_loss``: softmax, crop-box ROI, de-normalised image, dense energy.

    Args:
        inputs_normalized: (B, 3, H, W) network input ``(x - mean) / std`` (RGB order).
        logits: (B, K, H, W) segmentation logits, already at the input size (the training loop
            upsamples the decoder output bilinearly, align_corners=False, before this call).
        label: (B, H, W) pseudo label with 255 = unlabeled.
        img_box: (B, 4) rows ``[h0, h1, w0, w1]``; the ROI is 1 on rows h0:h1, columns w0:w1.
        **kw: forwarded to :func:`dense_energy_loss` (weight, sigma_rgb, sigma_xy, scale_factor, method).

    The image is de-normalised to 0..255 floats **without** uint8 truncation (unlike
    ``denormalize_img2``).
    """
    if logits.shape[0] != inputs_normalized.shape[0] or logits.shape[2:] != inputs_normalized.shape[2:]:
        raise ValueError(
            f"energy_loss_from_logits: logits {tuple(logits.shape)} must have the input's batch and "
            f"spatial size {tuple(inputs_normalized.shape)} (upsample them first)"
        )
    probs = torch.softmax(logits, dim=1)
    b, _, h, w = probs.shape
    roi = probs.new_zeros(b, h, w)
    for i, (h0, h1, w0, w1) in enumerate(torch.as_tensor(img_box).tolist()):
        roi[i, int(h0) : int(h1), int(w0) : int(w1)] = 1
    x = inputs_normalized.detach()
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    image = x * s + m
    return dense_energy_loss(image, probs, roi, label, **kw)
