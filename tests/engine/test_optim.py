"""PolyWarmupAdamW and its schedule (docs/methods/seco.md#optim) against golden poly_warmup_adamw.npz."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from golden import load_golden
from wsss.engine.optim import PolyWarmupAdamW, poly_warmup_lr_mult


def _make(base_lrs, **kw) -> tuple[PolyWarmupAdamW, list[torch.nn.Parameter]]:
    params = [torch.nn.Parameter(torch.full((3,), float(i + 1))) for i in range(len(base_lrs))]
    groups = [{"params": [p], "lr": float(lr)} for p, lr in zip(params, base_lrs)]
    kw = dict(dict(weight_decay=0.01, betas=(0.9, 0.999), warmup_iter=1500, max_iter=20000), **kw)
    return PolyWarmupAdamW(groups, lr=float(base_lrs[0]), **kw), params


def _step(opt, params):
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()


def test_schedule_golden():
    g = load_golden("poly_warmup_adamw")
    opt, params = _make(
        g["base_lr_groups"],
        warmup_iter=int(g["warmup_iter"]),
        max_iter=int(g["max_iter"]),
        warmup_ratio=float(g["warmup_ratio"]),
        power=float(g["power"]),
    )
    lrs = []
    for s in g["steps"]:
        opt.global_step = int(s)
        _step(opt, params)
        lrs.append([group["lr"] for group in opt.param_groups])
    # Python float arithmetic (one pow per step): measured identical; 1e-15 relative (4.5 ulps) for another libm
    np.testing.assert_allclose(np.array(lrs), g["lr_groups"], rtol=1e-15, atol=0)
    np.testing.assert_allclose(np.array(lrs)[:, 0] / g["base_lr_groups"][0], g["lr_mult"], rtol=1e-15)
    assert opt.global_step == int(g["steps"][-1]) + 1


def test_lr_mult_values():
    assert poly_warmup_lr_mult(0, 1500, 20000) == pytest.approx(1e-6, rel=1e-12)
    assert poly_warmup_lr_mult(750, 1500, 20000) == pytest.approx(0.5 + 0.5e-6, rel=1e-12)
    assert poly_warmup_lr_mult(1500, 1500, 20000) == pytest.approx((1 - 1500 / 20000) ** 0.9, rel=1e-15)
    assert poly_warmup_lr_mult(20000, 1500, 20000) == 0.0
    assert poly_warmup_lr_mult(30000, 1500, 20000) == 0.0


def test_no_hold_after_max_sets_zero():
    opt, params = _make([1e-3], max_iter=10, warmup_iter=2)
    opt.global_step = 9
    _step(opt, params)
    assert opt.param_groups[0]["lr"] > 0
    _step(opt, params)  # step 10 == max_iter: held
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.1**0.9)
    opt2, params2 = _make([1e-3], max_iter=10, warmup_iter=2, hold_lr_after_max=False)
    opt2.global_step = 10
    _step(opt2, params2)
    assert opt2.param_groups[0]["lr"] == 0.0


def test_step_updates_params_and_counter():
    opt, params = _make([1e-2, 1e-1], warmup_iter=0, max_iter=100)
    before = [p.detach().clone() for p in params]
    _step(opt, params)
    assert opt.global_step == 1
    assert all(not torch.equal(a, p) for a, p in zip(before, params))


def test_state_dict_round_trip_resumes_schedule():
    opt, params = _make([6e-5, 6e-4], warmup_iter=5, max_iter=50)
    for _ in range(7):
        _step(opt, params)
    sd = opt.state_dict()
    assert sd["global_step"] == 7
    lrs = [group["lr"] for group in opt.param_groups]

    opt2, params2 = _make([1.0, 1.0], warmup_iter=5, max_iter=50)  # different lrs before loading
    with torch.no_grad():
        for p2, p in zip(params2, params):
            p2.copy_(p)
    opt2.load_state_dict(sd)
    assert opt2.global_step == 7
    assert [group["lr"] for group in opt2.param_groups] == lrs
    assert [group["base_lr"] for group in opt2.param_groups] == [6e-5, 6e-4]
    _step(opt, params)
    _step(opt2, params2)
    assert [group["lr"] for group in opt2.param_groups] == [group["lr"] for group in opt.param_groups]
    for p2, p in zip(params2, params):
        torch.testing.assert_close(p2, p, rtol=0, atol=0)


def test_load_plain_adamw_state_keeps_base_lr():
    opt, params = _make([6e-5, 6e-4])
    plain = torch.optim.AdamW([{"params": [p], "lr": 1.0} for p in params])
    opt.load_state_dict(plain.state_dict())
    assert opt.global_step == 0
    assert [group["base_lr"] for group in opt.param_groups] == [6e-5, 6e-4]
    _step(opt, params)
    assert opt.param_groups[1]["lr"] == pytest.approx(6e-4 * 1e-6)


def test_poly_sgd_follows_the_same_schedule_and_resumes():
    from wsss.engine.optim import PolyWarmupSGD

    p = torch.nn.Parameter(torch.ones(3))
    opt = PolyWarmupSGD([{"params": [p], "lr": 0.1}], lr=0.1, momentum=0.9, warmup_iter=0, max_iter=10)
    lrs = []
    for _ in range(4):
        p.grad = torch.ones(3)
        opt.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.1 * (1 - s / 10) ** 0.9 for s in range(4)])
    state = copy.deepcopy(opt.state_dict())  # as through a checkpoint file: no shared momentum buffer
    q = torch.nn.Parameter(p.detach().clone())
    opt2 = PolyWarmupSGD([{"params": [q], "lr": 0.1}], lr=0.1, momentum=0.9, warmup_iter=0, max_iter=10)
    opt2.load_state_dict(state)
    for o, param in ((opt, p), (opt2, q)):
        param.grad = torch.ones(3)
        o.step()
    assert torch.equal(p, q) and opt2.global_step == 5
