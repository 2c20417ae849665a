"""RCA's regional semantic contrast with embedding mix-up (docs/methods/rca.md#memory-bank,
docs/methods/rca.md#semantic-contrast).

Pieces, each usable alone:

- :func:`region_masks`: the region of class c in image i is where the softmax over the classes of
  the coarse map, at channel c, exceeds its own spatial mean (rca.md#memory-bank, rca.md#semantic-contrast
  step 1);
- :func:`region_embeddings`: masked average of a feature map over each region (rca.md#memory-bank,
  rca.md#semantic-contrast step 1);
- :func:`draw_mixup_pairs`: for each (image, ground-truth class), a partner image, one of its
  classes and ``lam ~ Beta(alpha, alpha)`` (rca.md#semantic-contrast step 2);
- :func:`region_contrast_loss`: the loss of rca.md#semantic-contrast steps 3-5 against a per-class memory,
  vectorised over all (image, class) pairs.

The loss of one pair with target class t and query z (normalised) against the memory entries m_n
(normalised, class y_n): ``logit_n = z.m_n / T``, ``M = max_n logit_n`` (detached),
``l_t = mean_{p: y_p = t} -[(logit_p - M) - log(clamp(sum_{n: y_n != t} exp(logit_n - M) + exp(logit_p - M), 1e-4))]``;
the pair contributes ``lam * l_c + (1 - lam) * l_c'``; the pairs of an image are averaged, the images
summed (``reduce="sum"``, official) or averaged (``"mean"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["MixupPairs", "draw_mixup_pairs", "region_contrast_loss", "region_embeddings", "region_masks"]


def region_masks(coarse: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) coarse class maps -> bool (B, K, h, w): softmax over K at channel c > its mean
    (rca.md#memory-bank)."""
    soft = F.softmax(coarse.detach().float(), dim=1)
    return soft > soft.mean(dim=(2, 3), keepdim=True)


def region_embeddings(feats: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Masked average of ``feats`` (B, D, h, w) over each region ``masks`` (B, K, h, w) -> (B, K, D).

    An empty region (a constant softmax channel; the official code divides by zero there) gives zeros.
    """
    m = masks.to(feats.dtype)
    total = torch.einsum("bkhw,bdhw->bkd", m, feats)
    return total / m.sum(dim=(2, 3)).clamp(min=1.0).unsqueeze(-1)


@dataclass
class MixupPairs:
    """One row per (image, ground-truth class): the query pair and its mix-up partner
    (rca.md#semantic-contrast step 2)."""

    image: torch.Tensor  # (P,) long, image index i
    cls: torch.Tensor  # (P,) long, 0-based foreground class c of image i
    partner: torch.Tensor  # (P,) long, partner image p
    partner_cls: torch.Tensor  # (P,) long, a class c' of image p
    lam: torch.Tensor  # (P,) float, the mix weight of (i, c); 1 = no mix-up

    def __len__(self) -> int:
        return int(self.image.numel())


def draw_mixup_pairs(
    labels: torch.Tensor,
    alpha: float = 8.0,
    *,
    self_partner: bool = True,
    mixup: bool = True,
    rng: np.random.Generator | None = None,
) -> MixupPairs:
    """Draw the mix-up partners of every (image, class) of ``labels`` (B, K) multi-hot
    (rca.md#semantic-contrast step 2).

    For image i and each of its classes c (ascending), in that order: a partner image p uniform over
    the batch (``self_partner=True``, official: ``randperm(B)[i]`` can be i) or over the other images
    (False; i itself when B = 1), a class c' uniform over p's classes, ``lam ~ Beta(alpha, alpha)``.
    ``mixup=False``: p = i, c' = c, lam = 1 (the plain regional contrast). Images without a label get no
    row (the official code would divide by zero). ``rng`` defaults to a generator seeded from torch's
    global RNG (so a checkpointed run replays the same draws).
    """
    if rng is None:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
    lab = labels.detach().cpu() > 0.5
    b = lab.shape[0]
    classes = [torch.nonzero(lab[i]).flatten().tolist() for i in range(b)]
    rows: list[tuple[int, int, int, int, float]] = []
    for i in range(b):
        for c in classes[i]:
            if not mixup:
                rows.append((i, c, i, c, 1.0))
                continue
            if self_partner or b == 1:
                p = int(rng.integers(b))
            else:
                p = int(rng.integers(b - 1))
                p += p >= i
            if not classes[p]:  # a partner without labels: no mix
                rows.append((i, c, i, c, 1.0))
                continue
            c2 = classes[p][int(rng.integers(len(classes[p])))]
            rows.append((i, c, p, c2, float(rng.beta(alpha, alpha))))
    dev = labels.device
    if not rows:
        e = torch.zeros(0, dtype=torch.long, device=dev)
        return MixupPairs(e, e, e, e, torch.zeros(0, device=dev))
    cols = list(zip(*rows))
    as_long = [torch.tensor(c, dtype=torch.long, device=dev) for c in cols[:4]]
    return MixupPairs(*as_long, lam=torch.tensor(cols[4], dtype=torch.float32, device=dev))


def region_contrast_loss(
    queries: torch.Tensor,
    memory: torch.Tensor,
    pairs: MixupPairs,
    *,
    temperature: float = 0.07,
    reduce: str = "sum",
) -> torch.Tensor:
    """RCA's semantic contrast loss with embedding mix-up (docs/methods/rca.md#semantic-contrast steps 3-5).

    Args:
        queries: (B, K, D) region embeddings (``region_embeddings`` of the embedding branch).
        memory: (K, L, D) per-class memory queues (not normalised; detached here).
        pairs: from :func:`draw_mixup_pairs`.
        temperature: 0.07 (rca.md#semantic-contrast).
        reduce: "sum" over images (official) or "mean" over the images that have a pair.

    Returns the scalar loss (0 without pairs).
    """
    if reduce not in ("sum", "mean"):
        raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
    if len(pairs) == 0:
        return queries.sum() * 0.0
    k, length, d = memory.shape
    if queries.shape[-1] != d:
        raise ValueError(f"query dimension {queries.shape[-1]} differs from the memory's {d}")
    lam = pairs.lam.to(queries.dtype)
    v = queries[pairs.image, pairs.cls]
    v_mix = queries[pairs.partner, pairs.partner_cls]
    z = F.normalize(lam[:, None] * v + (1 - lam[:, None]) * v_mix, dim=-1)  # (P, D)
    mem = F.normalize(memory.detach().to(queries.dtype), dim=-1)  # (K, L, D)
    logits = torch.einsum("pd,kld->pkl", z, mem) / temperature  # (P, K, L)
    shifted = logits - logits.amax(dim=(1, 2), keepdim=True).detach()
    exp = shifted.exp()
    per_class = exp.sum(dim=2)  # (P, K)
    total = per_class.sum(dim=1)  # (P,)
    rows = torch.arange(len(pairs), device=queries.device)

    def target_loss(t: torch.Tensor) -> torch.Tensor:
        pos = shifted[rows, t]  # (P, L)
        neg = (total - per_class[rows, t]).unsqueeze(1)  # sum over the other classes' entries
        return (-(pos - torch.log((neg + pos.exp()).clamp(min=1e-4)))).mean(dim=1)

    pair_loss = lam * target_loss(pairs.cls) + (1 - lam) * target_loss(pairs.partner_cls)
    b = queries.shape[0]
    count = torch.zeros(b, device=queries.device, dtype=queries.dtype).index_add_(
        0, pairs.image, torch.ones_like(pair_loss)
    )
    per_image = torch.zeros(b, device=queries.device, dtype=pair_loss.dtype).index_add_(0, pairs.image, pair_loss)
    has = count > 0
    per_image = per_image[has] / count[has]
    return per_image.sum() if reduce == "sum" else per_image.mean()
