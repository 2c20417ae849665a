"""SeCo's tag-guided contrastive losses: LIL (local, vs the reservoir) and LIG (global, vs prototypes).

docs/methods/seco.md#lil, #lig, #decisions (S4, S5); parity with golden ``lil_lig.npz``.

Flags (tags) are floats as in the official code: a class id ``c >= 1``, 0 (background patch) or -1
(co-occurrence / unknown, ignored). Both functions are fully vectorised (no loop over rows).

Float32 accumulator quirk: the official losses add the per-row terms into a ``torch.zeros(1)``
float32 tensor, so the loss is float32 even for float64 inputs, and the scale factors (1/N, 1/number
of positives) are applied in float32. With ``float32_accumulator=True`` (the default) we sum the
per-row terms in the input dtype, round the sum **once** to float32 and apply the scale factors in
float32: the value agrees with the official sequential float32 accumulation to about one float32
ulp (the official rounds after every row; the README tolerance is rtol 1e-6), and the gradients carry
the same float32 scale factors. With ``False`` everything stays in the input dtype. For float32
inputs (training) both are the same up to summation order.
"""

from __future__ import annotations

import torch

__all__ = ["lig_loss", "lil_loss"]


def _flat_flags(flags: torch.Tensor, n: int, name: str) -> torch.Tensor:
    if flags.dim() == 2 and flags.shape[1] == 1:
        flags = flags[:, 0]
    if flags.dim() != 1 or flags.shape[0] != n:
        raise ValueError(f"{name} must be ({n},) or ({n},1), got {tuple(flags.shape)}")
    return flags


def _finish(total: torch.Tensor, denominator: torch.Tensor, n: int, scale: float, f32: bool) -> torch.Tensor:
    """``-scale * total / denominator / n``, optionally with the official float32 accumulator."""
    if f32:
        total = total.to(torch.float32)
        denominator = denominator.to(torch.float32)
    return -scale * total / denominator / n


def lil_loss(
    q: torch.Tensor,
    keys: torch.Tensor,
    q_flags: torch.Tensor,
    key_flags: torch.Tensor,
    *,
    temperature: float = 0.08,
    base_temperature: float = 0.08,
    normalise: str = "official",
    noise_ratio: float = 10.0,
    float32_accumulator: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LIL: local tag-guided contrast of the queries against the reservoir keys (docs/methods/seco.md#lil).

    Args:
        q: (N,D) queries (projected, unit norm), the anchors; the gradient flows through them.
        keys: (M,D) keys ``[k_current; queue]``, i.e. ``queue_feats_all[N:]`` of the official call.
        q_flags: (N,) or (N,1) query tags; key_flags: (M,) or (M,1) key tags.
        temperature, base_temperature: tau and tau_base (official 0.08 / 0.08); loss scale tau/tau_base.
        normalise: ``"official"`` (default, the literal loss) or ``"supcon"`` (the intended semantics).
        noise_ratio: threshold of the noise filter (official 10).
        float32_accumulator: official float32 loss accumulation (module docstring); only used by
            ``normalise="official"`` (``"supcon"`` is computed in the input dtype).

    Common steps: ``S = q keys^T / tau`` minus its row max (detached), so ``S <= 0``;
    ``P_ij = [f_i == g_j]``; rows with ``f_i == -1`` get ``P = S = 0``. Noise filter (always on): with
    ``m_i`` the mean over **all** columns of ``S_i * P_i``, if
    ``#{S*P < m_i} / (#{S*P >= m_i} + 1e-6) > noise_ratio`` the row's tag is revised to 0 and its
    positive logits are set to 0 (``S_ij := 0`` where ``P_ij = 1``; the spec's wording, since the
    fixture cannot tell this from zeroing ``P_i``: the filtered row drops out either way there). The
    revised tags are returned for LIG.

    The two normalisations (``"official"``, ``"supcon"``) are written out where they are computed:
    ``_lil_official`` and ``_lil_supcon``.

    Returns:
        ``(loss, revised_flags)``: a 0-d loss (float32 in official mode with the float32 accumulator,
        else ``q.dtype``) and the (N,) revised query tags (dtype of ``q_flags``; a new tensor).
    """
    if q.dim() != 2 or keys.dim() != 2 or q.shape[1] != keys.shape[1]:
        raise ValueError(f"expected q (N,D) and keys (M,D), got {tuple(q.shape)} and {tuple(keys.shape)}")
    if normalise not in ("official", "supcon"):
        raise ValueError(f"normalise must be 'official' or 'supcon', got {normalise!r}")
    n, m = q.shape[0], keys.shape[0]
    f = _flat_flags(q_flags, n, "q_flags").to(q.device)
    g = _flat_flags(key_flags, m, "key_flags").to(q.device)
    s, pos, noisy = _lil_filtered_logits(q, keys, f, g, temperature, noise_ratio)
    revised = torch.where(noisy, torch.zeros_like(f), f)
    col_ignored = (g == -1)[None, :]
    scale = temperature / base_temperature
    if normalise == "supcon":
        return _lil_supcon(s, pos & ~noisy[:, None] & ~col_ignored, col_ignored, scale), revised
    return _lil_official(s, pos, col_ignored, n, scale, float32_accumulator), revised


def _lil_filtered_logits(
    q: torch.Tensor, keys: torch.Tensor, f: torch.Tensor, g: torch.Tensor, temperature: float, noise_ratio: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LIL's common steps (:func:`lil_loss`): the max-shifted logits with ignored rows zeroed and the
    noisy rows' positives zeroed, the positive mask, and the noisy rows (the noise filter)."""
    s = torch.matmul(q, keys.T) / temperature
    s = s - s.max(dim=1, keepdim=True).values.detach()
    zero = torch.zeros((), dtype=s.dtype, device=s.device)
    row_ignored = (f == -1)[:, None]
    pos = (f[:, None] == g[None, :]) & ~row_ignored
    s = torch.where(row_ignored, zero, s)

    # noise filter (row-local, always on)
    sp = torch.where(pos, s, zero)
    mean = sp.mean(dim=1, keepdim=True)
    ratio = (sp < mean).sum(dim=1) / ((sp >= mean).sum(dim=1) + 1e-6)
    noisy = ratio > noise_ratio
    s = torch.where(noisy[:, None] & pos, zero, s)
    return s, pos, noisy


def _lil_supcon(s: torch.Tensor, pos: torch.Tensor, col_ignored: torch.Tensor, scale: float) -> torch.Tensor:
    """LIL's ``"supcon"`` normalisation (:func:`lil_loss`); ``pos`` without noisy rows and ignored keys.

    Corrected: keys tagged -1 are excluded from every denominator; anchors are the rows
    with ``f_i != -1`` not revised by the noise filter; positives of anchor i are the valid keys with
    ``g_j == f_i``; ``loss = -(tau/tau_base) * mean over anchors with >= 1 positive of
    mean_{j in pos(i)} [S_ij - logsumexp_{valid k} S_ik]`` (0 if there is no such anchor). The row max
    is not dropped.
    """
    zero = torch.zeros((), dtype=s.dtype, device=s.device)
    logits = s.masked_fill(col_ignored, torch.finfo(s.dtype).min)
    log_prob = s - torch.logsumexp(logits, dim=1, keepdim=True)
    n_pos = pos.sum(dim=1)
    mean_lp = torch.where(pos, log_prob, zero).sum(dim=1) / n_pos.clamp(min=1)
    anchors = n_pos > 0
    n_anchor = anchors.sum()
    return -scale * torch.where(anchors, mean_lp, zero).sum() / n_anchor.clamp(min=1)


def _lil_official(
    s: torch.Tensor, pos: torch.Tensor, col_ignored: torch.Tensor, n: int, scale: float, float32_accumulator: bool
) -> torch.Tensor:
    """LIL's ``"official"`` normalisation, the literal loss (:func:`lil_loss`).

    Columns with ``g_j == -1`` get ``S = 0``; ``E = exp(S) * [exp(S) != 1]`` (drops
    every exactly-zero logit: masked rows/columns **and each row's max entry**); ``Z_i = sum_j E_ij``;
    ``L_ij = S_ij P_ij - log(Z_i + 1e-12)``; ``num_nz`` = count of nonzero ``S*P`` in the whole
    matrix; ``loss = -(tau/tau_base) / N * sum_i [Z_i > 0 and sum_j L_ij < 0] sum_j L_ij / num_nz``.
    Quirk vs SupCon: ``sum_j`` runs over **all** columns (each row adds ``-M log Z_i``) and the
    normaliser is the global positive count. Deviation: if ``num_nz == 0`` the official divides by
    zero (inf/nan); we return 0 (still attached to the graph).
    """
    zero = torch.zeros((), dtype=s.dtype, device=s.device)
    s = torch.where(col_ignored, zero, s)
    e = torch.exp(s)
    e = e * (e != 1)
    z = e.sum(dim=1)
    sp = s * pos
    log_prob = sp - torch.log(z[:, None] + 1e-12)
    num_nz = (sp != 0).sum()
    row = log_prob.sum(dim=1)
    total = torch.where((z > 0) & (row < 0), row, zero).sum()
    loss = _finish(total, num_nz.clamp(min=1), n, scale, float32_accumulator)
    return torch.where(num_nz > 0, loss, torch.zeros_like(loss))


def lig_loss(
    q: torch.Tensor,
    prototypes: torch.Tensor,
    flags: torch.Tensor,
    *,
    temperature: float = 0.1,
    base_temperature: float = 0.1,
    float32_accumulator: bool = True,
) -> torch.Tensor:
    """LIG: global tag-guided contrast of the queries against the class prototypes (docs/methods/seco.md#lig).

    Args:
        q: (N,D) queries (all 12B rows of the official call); prototypes: (C-1,D), row c-1 = class c.
        flags: (N,) or (N,1) tags, the ``revised_flags`` returned by :func:`lil_loss`.
        temperature, base_temperature: official 0.1 / 0.1.
        float32_accumulator: official float32 loss accumulation (module docstring).

    ``S = q P^T / tau`` (no max subtraction); ``M_ic = [f_i == c]``; the active classes are the tags
    present in the batch (excluding -1 and 0). ``S_all = S * [c active]``,
    ``E = exp(S_all) * [exp(S_all) != 1]`` (inactive columns dropped), ``Z_i = sum_c E_ic``,
    ``L_ic = (S_ic M_ic - log(Z_i + 1e-12)) * [S_ic M_ic != 0]``;
    ``loss = -(tau/tau_base) * sum_{i: Z_i > 0} sum_c L_ic / sum(M)`` (divided by N instead when
    ``sum(M) = 0``, which gives the official -0.0). This is InfoNCE to the own-class prototype with the
    denominator restricted to the classes tagged in the batch; rows tagged 0 or -1 contribute nothing.
    The official prototypes live in the raw cls-token space while q is a projection
    (docs/methods/seco.md#decisions, S5); that is the caller's business.

    Returns a 0-d loss (float32 with the float32 accumulator, else ``q.dtype``).
    """
    if q.dim() != 2 or prototypes.dim() != 2 or q.shape[1] != prototypes.shape[1]:
        raise ValueError(f"expected q (N,D) and prototypes (C-1,D), got {tuple(q.shape)} and {tuple(prototypes.shape)}")
    n, c1 = q.shape[0], prototypes.shape[0]
    f = _flat_flags(flags, n, "flags").to(q.device)
    s = torch.matmul(q, prototypes.T) / temperature
    classes = torch.arange(1, c1 + 1, device=q.device)
    member = f[:, None] == classes[None, :]
    active = member.any(dim=0, keepdim=True)
    s_pos = s * member
    s_all = s * active
    e = torch.exp(s_all)
    e = e * (e != 1)
    z = e.sum(dim=1)
    log_prob = (s_pos - torch.log(z[:, None] + 1e-12)) * (s_pos != 0)
    row = log_prob.sum(dim=1)
    zero = torch.zeros((), dtype=row.dtype, device=row.device)
    total = torch.where(z > 0, row, zero).sum()
    n_pos = member.sum()
    denominator = torch.where(n_pos > 0, n_pos, torch.full_like(n_pos, n))
    return _finish(total, denominator, 1, temperature / base_temperature, float32_accumulator)
