"""LIL and LIG (docs/methods/seco.md#lil, #lig) against golden lil_lig.npz and slow python-loop references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from golden import assert_close_to_max, load_golden
from wsss.methods.seco.contrast import lig_loss, lil_loss

# The official losses accumulate their N = 12 per-row terms in a float32 (1,) tensor, even from f64 inputs
# (tests/golden/README.md#lil_lig): the loss is float32, within 12 roundings (7e-7 relative) of any summation order;
# measured 1 float32 ulp (1.1e-7 relative) on every kernel / thread setting. RTOL 1e-6 for the losses.
RTOL = 1e-6
ATOL_GRAD = 1e-9
# The gradients are f64 but pass through the scale factors 1/N and 1/num_pos, computed in float32 (two
# roundings of 2^-24 each): measured 1.9e-9 of the max (LIL) and identical (LIG); 2.5e-7 of the max is twice
# the bound of those two roundings.
GRAD_REL = 2.5e-7


@pytest.fixture(scope="module")
def g() -> dict[str, np.ndarray]:
    return load_golden("lil_lig")


# ----------------------------------------------------------------------------- golden parity
@pytest.mark.parametrize("case", ["a", "b"])
def test_lil_golden(g, case):
    n = g[f"q_{case}"].shape[0]
    q = torch.from_numpy(g[f"q_{case}"]).requires_grad_()
    keys = torch.from_numpy(g[f"queue_feats_all_{case}"][n:])
    flags = torch.from_numpy(g[f"flags_{case}"]).double()  # stored f32, passed as f64
    key_flags = torch.from_numpy(g[f"queue_flags_all_{case}"][n:])
    loss, revised = lil_loss(q, keys, flags, key_flags, temperature=float(g["temp_lil"]), base_temperature=0.08)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    np.testing.assert_allclose(loss.item(), g[f"lil_loss_{case}"][0], rtol=RTOL, atol=0)
    assert revised.shape == (n,) and revised.dtype == torch.float64
    # exact: tags; the noise filter's decision compares f64 similarities of unit rows whose best positive and
    # best other key are 0.029 apart at least (measured over both cases)
    np.testing.assert_array_equal(revised.numpy(), g[f"flags_revised_{case}"][:, 0])
    assert torch.equal(flags[:, 0], torch.from_numpy(g[f"flags_{case}"][:, 0]).double())  # input untouched
    loss.backward()
    assert_close_to_max(q.grad, g[f"grad_lil_q_{case}"], GRAD_REL, "grad_lil_q")


def test_lil_golden_noise_filter_fires(g):
    """Case b: query 0 is revised 2 -> 0 by the noise filter (and nothing else changes)."""
    assert g["flags_b"][0, 0] == 2 and g["flags_revised_b"][0, 0] == 0
    n = g["q_b"].shape[0]
    _, revised = lil_loss(
        torch.from_numpy(g["q_b"]),
        torch.from_numpy(g["queue_feats_all_b"][n:]),
        torch.from_numpy(g["flags_b"]),
        torch.from_numpy(g["queue_flags_all_b"][n:]),
    )
    assert revised.tolist() == [0.0] + g["flags_b"][1:, 0].tolist()


@pytest.mark.parametrize("case", ["a", "b"])
def test_lig_golden(g, case):
    q = torch.from_numpy(g[f"q_{case}"]).requires_grad_()
    protos = torch.from_numpy(g["prototypes"]).requires_grad_()
    flags = torch.from_numpy(g[f"flags_revised_{case}"])
    loss = lig_loss(q, protos, flags, temperature=float(g["temp_lig"]), base_temperature=0.1)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    np.testing.assert_allclose(loss.item(), g[f"lig_loss_{case}"][0], rtol=RTOL, atol=0)
    loss.backward()
    assert_close_to_max(q.grad, g[f"grad_lig_q_{case}"], GRAD_REL, "grad_lig_q")
    assert_close_to_max(protos.grad, g[f"grad_lig_proto_{case}"], GRAD_REL, "grad_lig_proto")


def test_lig_golden_noclass(g):
    q = torch.from_numpy(g["q_a"]).requires_grad_()
    loss = lig_loss(q, torch.from_numpy(g["prototypes"]), torch.from_numpy(g["flags_noclass"]))
    assert loss.item() == 0.0 and math.copysign(1.0, loss.item()) == -1.0  # -0.0
    assert np.signbit(g["lig_loss_noclass"][0])
    loss.backward()
    assert torch.count_nonzero(q.grad) == 0


def test_lig_after_lil_chain_golden(g):
    """The training chain: LIG consumes LIL's revised flags."""
    n = g["q_b"].shape[0]
    q = torch.from_numpy(g["q_b"])
    _, revised = lil_loss(
        q,
        torch.from_numpy(g["queue_feats_all_b"][n:]),
        torch.from_numpy(g["flags_b"]).double(),
        torch.from_numpy(g["queue_flags_all_b"][n:]),
    )
    loss = lig_loss(q, torch.from_numpy(g["prototypes"]), revised)
    np.testing.assert_allclose(loss.item(), g["lig_loss_b"][0], rtol=RTOL)


# ----------------------------------------------------------------------------- slow references
def _val(x) -> float:
    return float(x.detach()) if torch.is_tensor(x) else float(x)


def _slow_lil_official(q, keys, f, gk, tau, base, f32_acc=True):
    """Literal per-entry transcription of docs/methods/seco.md#lil (float32 accumulator as in the official)."""
    n, m = q.shape[0], keys.shape[0]
    s = [[(q[i] * keys[j]).sum() / tau for j in range(m)] for i in range(n)]
    for i in range(n):
        mx = max(_val(v) for v in s[i])
        s[i] = [v - mx for v in s[i]]
    p = [[1.0 if f[i] == gk[j] else 0.0 for j in range(m)] for i in range(n)]
    revised = list(f)
    zero = q.sum() * 0
    for i in range(n):
        if f[i] == -1:
            p[i] = [0.0] * m
            s[i] = [zero] * m
    for i in range(n):
        prod = [_val(s[i][j]) * p[i][j] for j in range(m)]
        mean = sum(prod) / m
        lt = sum(1 for v in prod if v < mean)
        ge = sum(1 for v in prod if v >= mean)
        if lt / (ge + 1e-6) > 10:
            revised[i] = 0.0
            s[i] = [zero if p[i][j] else s[i][j] for j in range(m)]
    for j in range(m):
        if gk[j] == -1:
            for i in range(n):
                s[i][j] = zero
    num_nz = sum(1 for i in range(n) for j in range(m) if _val(s[i][j]) * p[i][j] != 0)
    acc = torch.zeros(1, dtype=torch.float32 if f32_acc else q.dtype)
    for i in range(n):
        z = sum(torch.exp(s[i][j]) for j in range(m) if _val(torch.exp(s[i][j])) != 1.0)
        z = z if torch.is_tensor(z) else zero
        row = sum(s[i][j] * p[i][j] - torch.log(z + 1e-12) for j in range(m))
        if _val(z) > 0 and _val(row) < 0:
            acc = acc + row if not f32_acc else acc + row.to(torch.float32)
    return -(tau / base) * acc[0] / num_nz / n, revised


def _slow_lil_supcon(q, keys, f, gk, tau, base, revised):
    n, m = q.shape[0], keys.shape[0]
    terms = []
    for i in range(n):
        if f[i] == -1 or revised[i] != f[i]:
            continue
        valid = [j for j in range(m) if gk[j] != -1]
        logits = torch.stack([(q[i] * keys[j]).sum() / tau for j in valid])
        lse = torch.logsumexp(logits, 0)
        lps = [logits[t] - lse for t, j in enumerate(valid) if gk[j] == f[i]]
        if lps:
            terms.append(-(tau / base) * torch.stack(lps).mean())
    return torch.stack(terms).mean() if terms else q.sum() * 0


def _slow_lig(q, protos, f, tau, base):
    n, c1 = q.shape[0], protos.shape[0]
    active = {int(v) for v in f if v not in (-1, 0)}
    total = q.sum() * 0
    npos = 0
    for i in range(n):
        s = [(q[i] * protos[c]).sum() / tau for c in range(c1)]
        z = sum(torch.exp(s[c]) for c in range(c1) if c + 1 in active and _val(torch.exp(s[c])) != 1.0)
        npos += sum(1 for c in range(c1) if f[i] == c + 1)
        if torch.is_tensor(z) and _val(z) > 0:
            for c in range(c1):
                if f[i] == c + 1 and _val(s[c]) != 0:
                    total = total + s[c] - torch.log(z + 1e-12)
    total = total.to(torch.float32)
    return -(tau / base) * total / (npos if npos > 0 else n)


def _random_case(seed, n=6, m=10, d=8, n_cls=4):
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(n, d, generator=gen, dtype=torch.float64), dim=1)
    keys = F.normalize(torch.randn(m, d, generator=gen, dtype=torch.float64), dim=1)
    f = torch.randint(-1, 3, (n,), generator=gen).double()
    gk = torch.randint(-1, n_cls + 1, (m,), generator=gen).double()
    protos = F.normalize(torch.randn(n_cls, d, generator=gen, dtype=torch.float64), dim=1)
    return q, keys, f, gk, protos


def _grad(fn, q):
    q = q.clone().requires_grad_()
    out = fn(q)
    out.backward()
    return out.detach(), q.grad


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lil_official_matches_slow(seed):
    q, keys, f, gk, _ = _random_case(seed)
    fast, gq = _grad(lambda x: lil_loss(x, keys, f, gk)[0], q)
    slow, gs = _grad(lambda x: _slow_lil_official(x, keys, f.tolist(), gk.tolist(), 0.08, 0.08)[0], q)
    assert fast.dtype == torch.float32
    np.testing.assert_allclose(fast.item(), slow.item(), rtol=RTOL)
    np.testing.assert_allclose(gq.numpy(), gs.numpy(), rtol=RTOL, atol=ATOL_GRAD)
    # without the float32 accumulator: float64 throughout, tight
    fast64, gq64 = _grad(lambda x: lil_loss(x, keys, f, gk, float32_accumulator=False)[0], q)
    slow64, gs64 = _grad(
        lambda x: _slow_lil_official(x, keys, f.tolist(), gk.tolist(), 0.08, 0.08, f32_acc=False)[0], q
    )
    assert fast64.dtype == torch.float64
    np.testing.assert_allclose(fast64.item(), slow64.item(), rtol=1e-12)
    np.testing.assert_allclose(gq64.numpy(), gs64.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lil_supcon_matches_slow(seed):
    q, keys, f, gk, _ = _random_case(seed)
    fast, gq = _grad(lambda x: lil_loss(x, keys, f, gk, temperature=0.1, normalise="supcon")[0], q)
    _, revised = lil_loss(q, keys, f, gk)
    slow, gs = _grad(lambda x: _slow_lil_supcon(x, keys, f.tolist(), gk.tolist(), 0.1, 0.08, revised.tolist()), q)
    assert fast.dtype == torch.float64
    np.testing.assert_allclose(fast.item(), slow.item(), rtol=1e-12)
    np.testing.assert_allclose(gq.numpy(), gs.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_lig_matches_slow(seed):
    q, _, f, _, protos = _random_case(seed)
    flags = f.clone()
    flags[seed % 6] = 4.0  # at least one positive of a class absent elsewhere
    fast = lig_loss(q, protos, flags, temperature=0.1, base_temperature=0.2)
    slow = _slow_lig(q, protos, flags.tolist(), 0.1, 0.2)
    np.testing.assert_allclose(fast.item(), slow.item(), rtol=RTOL)
    for arg in (0, 1):
        inputs = [q.clone().requires_grad_(), protos.clone().requires_grad_()]
        lig_loss(inputs[0], inputs[1], flags).backward()
        ref = [q.clone().requires_grad_(), protos.clone().requires_grad_()]
        _slow_lig(ref[0], ref[1], flags.tolist(), 0.1, 0.1).backward()
        np.testing.assert_allclose(inputs[arg].grad.numpy(), ref[arg].grad.numpy(), rtol=RTOL, atol=ATOL_GRAD)


# ----------------------------------------------------------------------------- hand-made cases
def _noise_case(n_pos: int):
    """One anchor tagged 1; key 0 (tag 3) is the row max; n_pos keys tagged 1 all at angle 1 rad."""
    q = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    keys = [[1.0, 0.0]] + [[math.cos(1.0), math.sin(1.0)]] * n_pos
    gk = torch.tensor([3.0] + [1.0] * n_pos)
    return q, torch.tensor(keys, dtype=torch.float64), torch.tensor([[1.0]]), gk


def test_noise_filter_fires_and_boundary():
    q, keys, f, gk = _noise_case(11)  # 11 products below the mean vs 1 (the max) -> 11 > 10: fires
    loss, revised = lil_loss(q, keys, f, gk)
    assert revised.tolist() == [0.0]
    # positives zeroed -> no positive pair left -> the degenerate branch returns 0, not inf
    assert loss.item() == 0.0 and torch.isfinite(loss)
    q, keys, f, gk = _noise_case(10)  # 10 / (1 + 1e-6) < 10: does not fire
    loss, revised = lil_loss(q, keys, f, gk)
    assert revised.tolist() == [1.0]
    s = (math.cos(1.0) - 1.0) / 0.08
    z = 10 * math.exp(s)  # the max entry (exactly 0) is dropped
    row = 10 * s - 11 * math.log(z + 1e-12)
    expected = -row / 10 if row < 0 else 0.0
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-6)
    _, revised_sc = lil_loss(q, keys, f, gk, normalise="supcon")
    assert revised_sc.tolist() == [1.0]


def test_lil_ignored_rows_and_columns():
    q, keys, f, gk, _ = _random_case(7)
    f_all_ignored = torch.full_like(f, -1.0)
    for mode in ("official", "supcon"):
        qq = q.clone().requires_grad_()
        loss, revised = lil_loss(qq, keys, f_all_ignored, gk, normalise=mode)
        loss.backward()
        assert loss.item() == 0.0 and torch.count_nonzero(qq.grad) == 0
        assert torch.equal(revised, f_all_ignored)
    # supcon: keys tagged -1 are neither positives nor in the denominator, so dropping them is a no-op
    keep = gk != -1
    assert not keep.all()
    a, _ = lil_loss(q, keys, f, gk, normalise="supcon")
    b, _ = lil_loss(q, keys[keep], f, gk[keep], normalise="supcon")
    np.testing.assert_allclose(a.item(), b.item(), rtol=1e-12)


def test_float32_inputs_and_shapes():
    q, keys, f, gk, protos = _random_case(3)
    q32, k32, p32 = q.float(), keys.float(), protos.float()
    loss, revised = lil_loss(q32, k32, f.view(-1, 1).float(), gk.view(-1, 1).float())
    ref, _ = lil_loss(q, keys, f, gk, float32_accumulator=False)
    assert loss.dtype == torch.float32 and revised.shape == (6,)
    np.testing.assert_allclose(loss.item(), ref.item(), rtol=1e-4)
    assert lig_loss(q32, p32, f).dtype == torch.float32
    assert lig_loss(q, protos, f, float32_accumulator=False).dtype == torch.float64
    with pytest.raises(ValueError):
        lil_loss(q, keys, f[:3], gk)
    with pytest.raises(ValueError):
        lil_loss(q, keys, f, gk, normalise="mean")
