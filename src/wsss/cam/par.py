"""PAR, pixel-adaptive refinement of soft masks (docs/methods/seco.md#par).

The refinement propagates soft masks along a local, image-dependent affinity: every pixel looks
at 48 neighbours (8 directions x 6 dilations) and takes the affinity-weighted sum of their mask
values, ``num_iter`` times. The affinity depends only on the image, so it is computed once and
reused for every iteration (and, through :meth:`PAR.affinity` / :meth:`PAR.propagate`, for
several mask stacks on the same image).

Behaviour matched to the official ToCo/SeCo module (golden ``par.npz``):

- neighbour order: dilations are the outer loop; inside dilation d the order is
  (-d,-d), (-d,0), (-d,+d), (0,-d), (0,+d), (+d,-d), (+d,0), (+d,+d);
- out-of-image neighbours use replicate padding (clamped coordinates);
- intensity term ``-(|I_n - I_0| / (std_n(I_n) + 1e-8) / w1)^2`` with the **unbiased** std over the
  48 neighbours, per pixel and channel, averaged over the colour channels, softmax over neighbours;
- position term ``-(dist_n / (std(dist) + 1e-8) / w1)^2`` (dist = d on the axes, sqrt(2) d on the
  diagonals), softmax over neighbours;
- ``aff = softmax(intensity) + w2 * softmax(position)``, **not** renormalised (sums to 1 + w2);
- masks are first resized to the image size with bilinear, ``align_corners=True``.

Every tensor the module creates (distances, offsets) follows the input's dtype and device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

_STACKED_BYTES = 1 << 29  # PAR.propagate off the CPU: the stacked neighbours at most 512 MiB at once
# (dy, dx) directions of the 8-neighbourhood, in the official stacking order.
_DIRECTIONS: tuple[tuple[int, int], ...] = (
    (-1, -1),
    (-1, 0),
    (-1, 1),
    (0, -1),
    (0, 1),
    (1, -1),
    (1, 0),
    (1, 1),
)


def gathered(device: torch.device) -> bool:
    """Whether PAR gathers the neighbours (few large operators: a GPU) rather than slicing them one by one (the
    CPU's faster form). ``bench/bench_op_count.py`` replaces it to count a GPU's operators on the CPU."""
    return device.type != "cpu"


class PAR(nn.Module):
    """Pixel-adaptive refinement (docs/methods/seco.md#par).

    Args:
        dilations: the dilation of each 8-neighbour ring; 6 dilations give 48 neighbours.
        num_iter: number of propagation steps.
        w1: temperature of the intensity and position terms (0.3 in ToCo/SeCo).
        w2: weight of the position softmax added to the intensity softmax (0.01).

    ``forward(image, masks)``: ``image`` (B,3,h,w) in [0,1], ``masks`` (B,K,h',w') soft masks;
    returns the refined masks (B,K,h,w). The module has no parameters and no buffers.
    """

    def __init__(
        self,
        dilations: Sequence[int] = (1, 2, 4, 8, 12, 24),
        num_iter: int = 10,
        w1: float = 0.3,
        w2: float = 0.01,
    ) -> None:
        super().__init__()
        self.dilations = tuple(int(d) for d in dilations)
        if not self.dilations or min(self.dilations) < 1:
            raise ValueError(f"PAR dilations must be positive integers, got {dilations!r}")
        self.num_iter = int(num_iter)
        self.w1 = float(w1)
        self.w2 = float(w2)
        self.max_dilation = max(self.dilations)

    def extra_repr(self) -> str:
        return f"dilations={self.dilations}, num_iter={self.num_iter}, w1={self.w1}, w2={self.w2}"

    @property
    def num_neighbors(self) -> int:
        return 8 * len(self.dilations)

    def neighbor_offsets(self) -> list[tuple[int, int]]:
        """The (dy, dx) of every neighbour, in the official order (dilation-major)."""
        return [(dy * d, dx * d) for d in self.dilations for dy, dx in _DIRECTIONS]

    def position_distances(self, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
        """Distance of each neighbour to the centre, (N,): d on the axes, sqrt(2)*d on diagonals.

        Built like the official table: the unit pattern (1 or sqrt(2), rounded to ``dtype``) times d.
        """
        unit = torch.tensor(
            [math.sqrt(2.0) if dy != 0 and dx != 0 else 1.0 for dy, dx in _DIRECTIONS],
            dtype=dtype,
            device=device,
        )
        return torch.cat([unit * d for d in self.dilations])

    def position_softmax(self, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
        """Softmax over neighbours of the position term, (N,); the same at every pixel."""
        dist = self.position_distances(dtype, device)
        std = torch.std(dist)  # unbiased, like the per-pixel std of the official repeated table
        pos = -((dist / (std + 1e-8) / self.w1) ** 2)
        return torch.softmax(pos, dim=0)

    def neighbor_index(self, h: int, w: int, device: torch.device | str) -> torch.Tensor:
        """The flat index (``y * w + x``) of every neighbour of every pixel, (N, h*w), coordinates clamped to the
        image: replicate padding, read with one ``index_select`` instead of N slices and a stack."""
        offsets = torch.tensor(self.neighbor_offsets(), device=device)  # (N, 2)
        ys = (torch.arange(h, device=device).view(1, h, 1) + offsets[:, :1, None]).clamp_(0, h - 1)
        xs = (torch.arange(w, device=device).view(1, 1, w) + offsets[:, 1:, None]).clamp_(0, w - 1)
        return (ys * w + xs).view(len(offsets), h * w)

    def neighbors(self, x: torch.Tensor) -> torch.Tensor:
        """All neighbours of every pixel: (B,C,h,w) -> (B,C,N,h,w), replicate padding (a copy of each value). Off the
        CPU one gather (:meth:`neighbor_index`); on the CPU N slices of the padded image stacked, much faster there
        (docs/speed.md#par-cpu)."""
        b, c, h, w = x.shape
        if gathered(x.device):
            idx = self.neighbor_index(h, w, x.device).view(-1)
            return x.reshape(b, c, h * w).index_select(2, idx).view(b, c, self.num_neighbors, h, w)
        p = self.max_dilation
        # Replicate padding clamps coordinates, so one pad by the largest dilation serves all.
        xp = F.pad(x, (p, p, p, p), mode="replicate")
        views = [xp[:, :, p + dy : p + dy + h, p + dx : p + dx + w] for dy, dx in self.neighbor_offsets()]
        return torch.stack(views, dim=2)

    def affinity(self, image: torch.Tensor) -> torch.Tensor:
        """Affinity of every pixel to its neighbours, (B,N,h,w), each pixel summing to 1 + w2."""
        nb = self.neighbors(image)  # (B,3,N,h,w), a fresh buffer: modified in place below
        std = torch.std(nb, dim=2, keepdim=True)  # unbiased, per pixel and channel
        scale = torch.reciprocal((std + 1e-8) * self.w1)
        # (|I_n - I_0| / (std + 1e-8) / w1)^2; the abs is redundant once squared.
        if torch.is_grad_enabled() and image.requires_grad:
            inten = -((nb - image.unsqueeze(2)) * scale).square().mean(dim=1)
        else:  # the usual no-grad case: fused in place, no extra (B,3,N,h,w) buffers
            nb.sub_(image.unsqueeze(2)).mul_(scale).square_()
            inten = nb.mean(dim=1).neg_()  # average over colour channels -> (B,N,h,w)
        aff = torch.softmax(inten, dim=1)
        # Flush subnormal affinities to zero: far neighbours across an edge get weights like 1e-40,
        # and CPU arithmetic on subnormals is far slower; their contribution is below precision.
        aff = aff.masked_fill(aff < torch.finfo(aff.dtype).tiny, 0.0)
        pos = self.position_softmax(image.dtype, image.device)
        return aff + self.w2 * pos.view(1, -1, 1, 1)

    def propagate(
        self, masks: torch.Tensor, aff: torch.Tensor, num_iter: int | None = None, *, stacked: bool | None = None
    ) -> torch.Tensor:
        """Run ``num_iter`` propagation steps of ``masks`` (B,K,h,w) with ``aff`` (B,N,h,w). ``stacked``: the
        neighbours gathered into one tensor per step (default: off the CPU) instead of added one by one."""
        n_iter = self.num_iter if num_iter is None else int(num_iter)
        _, _, h, w = masks.shape
        if aff.shape[-2:] != (h, w):
            raise ValueError(f"PAR: affinity is {tuple(aff.shape[-2:])} but the masks are {(h, w)}")
        dtype = torch.promote_types(masks.dtype, aff.dtype)
        masks = masks.to(dtype)
        aff = aff.to(dtype).unsqueeze(1)  # (B,1,N,h,w)
        # On the CPU, neighbour by neighbour: no (B,K,N,h,w) buffer. Elsewhere (a GPU) that is 2 x 48 small kernels a
        # step, launched one by one: thousands of them in an ExCEL iteration, likely most of its time behind the
        # official code's on an H100 (counted on the CPU: BENCHMARKS.md, "On a GPU"); the neighbours are gathered
        # instead, one ``index_select`` a step (the official code slices and stacks them: 100 operators a step),
        # in chunks of at most _STACKED_BYTES.
        stacked = gathered(masks.device) if stacked is None else stacked
        if stacked:
            return self._propagate_gathered(masks, aff, n_iter)
        p = self.max_dilation
        offsets = self.neighbor_offsets()
        for _ in range(n_iter):
            mp = F.pad(masks, (p, p, p, p), mode="replicate")
            out = torch.zeros_like(masks)
            # A plain multiply-add: ``addcmul_`` with this broadcast is far slower on the CPU.
            for n, (dy, dx) in enumerate(offsets):
                out += mp[:, :, p + dy : p + dy + h, p + dx : p + dx + w] * aff[:, :, n]
            masks = out
        return masks

    def _propagate_gathered(self, masks: torch.Tensor, aff: torch.Tensor, n_iter: int) -> torch.Tensor:
        """:meth:`propagate` with the neighbours gathered: per step, one ``index_select``, one multiply and one sum
        per chunk of neighbours (one chunk unless the (B,K,N,h,w) buffer exceeds _STACKED_BYTES)."""
        b, k, h, w = masks.shape
        n = self.num_neighbors
        per = max(1, min(n, _STACKED_BYTES // max(1, masks.numel() * masks.element_size())))
        idx = self.neighbor_index(h, w, masks.device)
        chunks = [(i, min(i + per, n)) for i in range(0, n, per)]
        flat_aff = aff.reshape(aff.shape[0], 1, n, h * w)  # a batch of 1 broadcasts over the masks
        parts = [(j - i, idx[i:j].reshape(-1), flat_aff[:, :, i:j]) for i, j in chunks]
        flat = masks.reshape(b, k, h * w)
        for _ in range(n_iter):
            out = None
            for size, index, weights in parts:
                part = (flat.index_select(2, index).view(b, k, size, h * w) * weights).sum(dim=2)
                out = part if out is None else out.add_(part)
            flat = out  # type: ignore[assignment]
        return flat.view(b, k, h, w)

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Refine ``masks`` (B,K,h',w') on ``image`` (B,3,h,w) in [0,1]; returns (B,K,h,w)."""
        if image.dim() != 4 or masks.dim() != 4 or image.shape[0] != masks.shape[0]:
            raise ValueError(
                f"PAR expects image (B,3,h,w) and masks (B,K,h',w'), got {tuple(image.shape)} and {tuple(masks.shape)}"
            )
        size = tuple(image.shape[-2:])
        if tuple(masks.shape[-2:]) != size:
            masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=True)
        return self.propagate(masks, self.affinity(image))
