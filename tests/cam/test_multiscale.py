"""Multi-scale CAM / logits (docs/methods/seco.md#ms-cam, #inference) against golden fixtures, plus hand-made checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from golden import load_golden
from wsss.cam import CamPasses, minmax_normalize, multi_scale_logits
from wsss.cam.multiscale import upsample_rows


def test_multi_scale_cam_golden_fake_model():
    g = load_golden("multi_scale_cam2_fake")
    w_aux, w_cam = torch.from_numpy(g["w_aux"]), torch.from_numpy(g["w_cam"])

    def fake_model(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.avg_pool2d(x, kernel_size=4, stride=4)
        return F.conv2d(x, w_aux), F.conv2d(x, w_cam)

    cam_aux, cam = CamPasses(g["scales"].tolist())(fake_model, torch.from_numpy(g["inputs"]))
    assert cam.dtype == torch.float64 and cam.shape == (2, 5, 64, 48)
    # f64 vs f64 (normalised, max 1): measured 1.4e-15 (portable kernels; 3.3e-16 AVX2), 1e-12
    # (tests/golden/README.md#multi_scale_cam2_fake)
    np.testing.assert_allclose(cam.numpy(), g["cam"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(cam_aux.numpy(), g["cam_aux"], rtol=0, atol=1e-12)


def test_identity_cam_fn_single_scale():
    x = torch.randn(2, 3, 10, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = CamPasses([1.0])(lambda t: t, x)
    assert torch.is_tensor(out)  # tensor in -> tensor out
    # identity: flip-back of the flipped copy is the image itself, so max-fusion is a no-op
    torch.testing.assert_close(out, minmax_normalize(F.relu(x)), rtol=0, atol=1e-15)
    assert out.amin() >= 0 and out.amax() < 1


def test_tuple_structure_and_order():
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    a, b, c = CamPasses([1.0, 0.5])(lambda t: (t[:, :1], t[:, 1:], t[:, 2:] * 0 + 1), x)
    assert a.shape == (1, 1, 8, 8) and b.shape == (1, 2, 8, 8) and c.shape == (1, 1, 8, 8)
    ref_a = CamPasses([1.0, 0.5])(lambda t: t[:, :1], x)
    torch.testing.assert_close(a, ref_a, rtol=0, atol=0)
    assert torch.all(c == 0)  # constant map normalises to 0


def test_flip_fusion_max_and_sum():
    # cam_fn = column ramp, which is not flip-invariant: fused = max(ramp, reversed ramp)
    def ramp(t: torch.Tensor) -> torch.Tensor:
        w = t.shape[-1]
        r = torch.arange(w, dtype=t.dtype).view(1, 1, 1, w).expand(t.shape[0], 1, t.shape[-2], w)
        return r.clone()

    x = torch.zeros(1, 3, 4, 5, dtype=torch.float64)
    got = CamPasses([1.0])(ramp, x)
    fused = torch.maximum(torch.arange(5.0), torch.arange(5.0).flip(0)).double()
    expected = minmax_normalize(fused.view(1, 1, 1, 5).expand(1, 1, 4, 5))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-15)
    got_sum = CamPasses([1.0], flip_fuse="sum")(ramp, x)
    assert torch.all(got_sum == 0)  # ramp + reversed ramp is constant


def test_scales_resize_input():
    seen = []

    def record(t: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(t.shape))
        return t[:, :1]

    CamPasses([1.0, 0.5, 0.75, 1.5])(record, torch.rand(2, 3, 64, 48))
    assert seen == [(4, 3, 64, 48), (4, 3, 32, 24), (4, 3, 48, 36), (4, 3, 96, 72)]


def test_multi_scale_logits_identity_and_shapes():
    x = torch.randn(1, 3, 6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out = multi_scale_logits(lambda t: t, x, [1.0], out_size=(6, 8))
    torch.testing.assert_close(out, 2 * x, rtol=0, atol=0)  # flip fused by sum
    seen = []

    def record(t: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(t.shape[-2:]))
        return t[:, :2]

    out = multi_scale_logits(record, x, [1.0, 1.25, 1.5], out_size=(12, 16), square_size=20)
    assert seen == [(20, 20), (25, 25), (30, 30)] and out.shape == (1, 2, 12, 16)
    seen.clear()
    multi_scale_logits(record, x, [1.0, 1.5], out_size=(6, 8))
    assert seen == [(6, 8), (9, 12)]


def test_multi_scale_logits_scale_fusion():
    x = torch.ones(1, 1, 4, 4)
    k = iter([1.0, 3.0, 2.0])

    def const(t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(t, next(k))

    assert torch.all(multi_scale_logits(const, x, [1, 1, 1], (4, 4)) == 6.0)  # max of 2*{1,3,2}
    k = iter([1.0, 3.0, 2.0])
    assert torch.all(multi_scale_logits(const, x, [1, 1, 1], (4, 4), scale_fuse="mean") == 4.0)
    with pytest.raises(ValueError):
        multi_scale_logits(const, x, [1.0], (4, 4), scale_fuse="median")


def test_minmax_normalize():
    cam = torch.tensor([[[[1.0, 3.0], [5.0, 2.0]]]], dtype=torch.float64)
    out = minmax_normalize(cam)
    expected = (cam - 1) / (4 + 1e-5)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-15)


def test_multi_scale_cam_reuses_precomputed_unflipped_maps():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def cam_fn(x):
        return conv(x), conv(x) * 2

    calls = []

    def counting(x):
        calls.append(x.shape[0])
        return cam_fn(x)

    images = torch.randn(2, 3, 16, 12)
    full = CamPasses((1.0, 0.5))(cam_fn, images)
    with torch.no_grad():
        pre = cam_fn(images)
    reused = CamPasses((1.0, 0.5))(counting, images, unflipped=pre)
    for a, b in zip(full, reused):
        assert torch.allclose(a, b, atol=1e-6)
    assert calls == [2, 4]  # only the flipped images at scale 1.0, both at 0.5


def _signed_ramp(t: torch.Tensor) -> torch.Tensor:
    """Two channels of a column ramp: shifted below zero at every pixel (channel 0: the map of a labelled class
    the classifier does not see) and above it (channel 1)."""
    w = t.shape[-1]
    r = torch.arange(w, dtype=t.dtype).view(1, 1, 1, w).expand(t.shape[0], 1, t.shape[-2], w)
    return torch.cat([r - 100.0, r + 1.0], dim=1)


def test_a_negative_map_is_empty_and_the_fallback_fills_it_from_below_the_relu():
    x = torch.zeros(1, 3, 4, 5, dtype=torch.float64)
    plain = CamPasses([1.0, 0.5])(_signed_ramp, x)
    assert torch.all(plain[:, 0] == 0) and plain[:, 1].amax() > 0.5  # the ReLU of every official code
    assert torch.equal(CamPasses([1.0, 0.5], empty_fallback="none")(_signed_ramp, x), plain)
    filled = CamPasses([1.0, 0.5], empty_fallback="minmax")(_signed_ramp, x)
    # "minmax": the sum of the passes before the ReLU, min-max normalised, which is the map of the same ramp
    # shifted above zero (min-max ignores the shift); the other channel is untouched
    above = CamPasses([1.0, 0.5])(lambda t: _signed_ramp(t) + 200.0, x)
    torch.testing.assert_close(filled[:, 0], above[:, 0], rtol=0, atol=1e-12)
    assert filled[:, 0].amax() > 0.5 and filled[:, 0].amin() == 0
    torch.testing.assert_close(filled[:, 1], plain[:, 1], rtol=0, atol=0)
    # "peak_odds": exp of the mean logit of the passes minus its peak. At one scale the ramp's fused logit is
    # max(r, reversed r) - 100 per column, r = 0..4: [4, 3, 2, 3, 4] - 100
    odds = CamPasses([1.0], empty_fallback="peak_odds")(_signed_ramp, x)
    expected = torch.exp(torch.tensor([0.0, -1.0, -2.0, -1.0, 0.0], dtype=torch.float64)).expand(4, 5)
    torch.testing.assert_close(odds[0, 0], expected, rtol=0, atol=1e-12)
    two = CamPasses([1.0, 1.0], empty_fallback="peak_odds")(_signed_ramp, x)  # the mean of 2 passes
    torch.testing.assert_close(two[0, 0], expected, rtol=0, atol=1e-12)
    summed = CamPasses([1.0], flip_fuse="sum", empty_fallback="peak_odds")(_signed_ramp, x)
    assert torch.allclose(summed[0, 0], torch.ones(4, 5, dtype=torch.float64))  # r + reversed r: flat, all peak
    # the labelled channels only (compact), and a constant negative map stays empty under "minmax"
    one = CamPasses([1.0], empty_fallback="minmax")(_signed_ramp, x, classes=[0], compact=True)
    assert one.shape == (1, 1, 4, 5) and one.amax() > 0.5
    flat = CamPasses([1.0], empty_fallback="minmax")(lambda t: -torch.ones_like(t[:, :1]), x)
    assert torch.all(flat == 0)
    with pytest.raises(ValueError, match="peak_odds"):
        CamPasses([1.0], empty_fallback="zeros")(_signed_ramp, x)


def test_relu_per_pass_comes_before_the_upsampling_and_the_flip_sum():
    # PSA / SC-CAM's forward_cam applies the ReLU in each pass at the network's resolution, then infer_cls
    # upsamples and sums the flips: a map of +1 on the left half and -1 on the right sums with its
    # flipped-back twin to 0 under ToCo's ReLU after the fusion, to 1 with the ReLU per pass
    def halves(t: torch.Tensor) -> torch.Tensor:
        w = t.shape[-1]
        sign = torch.where(torch.arange(w) < w // 2, 1.0, -1.0).to(t.dtype).view(1, 1, 1, w)
        return sign.expand(t.shape[0], 1, t.shape[-2], w).clone()

    x = torch.zeros(1, 3, 4, 6, dtype=torch.float64)
    assert torch.all(CamPasses([1.0], flip_fuse="sum", normalize="none")(halves, x) == 0)
    assert torch.all(CamPasses([1.0], flip_fuse="sum", normalize="none", relu="per_pass")(halves, x) == 1)

    # ... and before the upsampling: a half-resolution pass of [-1, 1] upsampled is ReLU'd at the small size
    def coarse(t: torch.Tensor) -> torch.Tensor:
        return torch.tensor([-3.0, 1.0], dtype=t.dtype).view(1, 1, 1, 2).expand(t.shape[0], 1, 1, 2).clone()

    x = torch.zeros(1, 3, 1, 8, dtype=torch.float64)
    after = CamPasses([1.0], normalize="none")(coarse, x)
    first = CamPasses([1.0], normalize="none", relu="per_pass")(coarse, x)
    # columns 3 and 4 of the upsampled -3 -> 1 are -1.5 and -0.5: the max with the flipped twin is negative
    assert after[0, 0, 0, 3] == 0 and first[0, 0, 0, 3] > 0


# -- the named stages of CamPasses (each stage tested on its own) ---------------------------------


def test_scale_batch_resizes_and_appends_the_flips():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float64).view(2, 3, 4, 6)
    both = CamPasses.scale_batch(x, 1.0)
    assert both.shape == (4, 3, 4, 6)
    assert torch.equal(both[:2], x) and torch.equal(both[2:], x.flip(-1))
    assert torch.equal(CamPasses.scale_batch(x, 1.0, flipped_only=True), x.flip(-1))
    assert CamPasses.scale_batch(x, 0.5).shape == (4, 3, 2, 3)


def test_fuse_flip_flips_the_second_half_back_before_fusing():
    a = torch.tensor([[[[1.0, 2.0, 3.0]]]])
    flipped_twin = torch.tensor([[[[30.0, 20.0, 10.0]]]])  # seen mirrored: 10, 20, 30 once flipped back
    maps = torch.cat([a, flipped_twin])
    assert CamPasses([1.0]).fuse_flip(maps).tolist() == [[[[10.0, 20.0, 30.0]]]]
    assert CamPasses([1.0], flip_fuse="sum").fuse_flip(maps).tolist() == [[[[11.0, 22.0, 33.0]]]]
    assert CamPasses([1.0], flip_fuse="mean").fuse_flip(maps).tolist() == [[[[5.5, 11.0, 16.5]]]]


def test_activated_pass_puts_the_relu_where_the_order_says():
    # a 1x2 map (+1, -1) and its twin the same (so, flipped back, its negative), upsampled to 1x4 and summed
    m = torch.tensor([[[[1.0, -1.0]]], [[[1.0, -1.0]]]])
    after = CamPasses([1.0], flip_fuse="sum").activated_pass(m, (1, 4))
    per_pass = CamPasses([1.0], flip_fuse="sum", relu="per_pass").activated_pass(m, (1, 4))
    assert torch.all(after == 0)  # +x and -x cancel before the ReLU
    torch.testing.assert_close(per_pass, torch.ones(1, 1, 1, 4))  # (1, .75, .25, 0) + its mirror


def test_normalized_and_fill_empty_are_stages_of_their_own():
    summed = torch.tensor([[[[0.0, 2.0]], [[0.0, 0.0]]]])
    assert torch.allclose(CamPasses([1.0]).normalized(summed)[0, 0], torch.tensor([[0.0, 2.0 / (2.0 + 1e-5)]]))
    assert torch.equal(CamPasses([1.0], normalize="none").normalized(summed), summed)
    raw = torch.tensor([[[[0.0, 2.0]], [[-3.0, -1.0]]]])
    filled = CamPasses([1.0, 0.5], empty_fallback="peak_odds").fill_empty(summed, summed, raw)
    torch.testing.assert_close(filled[0, 1, 0], torch.exp(torch.tensor([-1.0, 0.0])))  # raw / 2 passes
    assert torch.equal(filled[0, 0], summed[0, 0])  # a map with activation is left alone


@pytest.mark.parametrize(
    "bad", [{"scales": ()}, {"flip_fuse": "min"}, {"relu": "before"}, {"normalize": "l2"}, {"empty_fallback": "x"}]
)
def test_cam_passes_refuse_an_unknown_stage_setting(bad):
    with pytest.raises(ValueError):
        CamPasses(**{"scales": (1.0,), **bad})


# -- the banded upsampling of multi_scale_logits (a 6000x4000 photo's logits of every scale) ------


@pytest.mark.parametrize(("h", "w", "H", "W"), [(5, 7, 37, 41), (32, 48, 400, 600), (13, 17, 13, 17), (50, 40, 23, 19)])
def test_upsample_rows_are_the_rows_of_the_whole_upsampling(h, w, H, W):
    g = torch.Generator().manual_seed(h * W)
    x64 = torch.randn(1, 3, h, w, dtype=torch.float64, generator=g)
    full64 = F.interpolate(x64, size=(H, W), mode="bilinear", align_corners=False)
    full32 = F.interpolate(x64.float(), size=(H, W), mode="bilinear", align_corners=False)
    step = max(1, H // 5)
    for r0 in range(0, H, step):
        rows = slice(r0, min(H, r0 + step))
        # float64: the same coordinates as PyTorch's, so only the order of the two 1-D blends differs (1e-14 seen)
        torch.testing.assert_close(upsample_rows(x64, (H, W), rows), full64[..., rows, :], rtol=0, atol=1e-12)
        # float32: the blends' order (rows then columns; PyTorch does both at once) moves a value by up to
        # 7.5e-6 on N(0, 1) maps (measured over these sizes); 4x that
        torch.testing.assert_close(upsample_rows(x64.float(), (H, W), rows), full32[..., rows, :], rtol=0, atol=3e-5)


def test_multi_scale_logits_in_bands_equal_the_whole_computation(monkeypatch):
    import wsss.cam.multiscale as ms

    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 3, 12, 18, dtype=torch.float64, generator=g)
    weight = torch.randn(4, 3, 1, 1, dtype=torch.float64, generator=g)

    def seg_fn(t):
        return F.conv2d(F.avg_pool2d(t, 2), weight)

    scales, size = [1.0, 0.5, 1.5], (40, 60)

    def whole(flip_fuse, scale_fuse):  # the previous algorithm: every scale upsampled whole, then fused
        per = []
        for s in scales:
            v = F.interpolate(x, size=(int(12 * s), int(18 * s)), mode="bilinear", align_corners=False)
            up = F.interpolate(seg_fn(torch.cat([v, v.flip(-1)])), size=size, mode="bilinear", align_corners=False)
            per.append(up[:1] + up[1:].flip(-1) if flip_fuse == "sum" else torch.maximum(up[:1], up[1:].flip(-1)))
        stacked = torch.stack(per)
        return stacked.max(0).values if scale_fuse == "max" else stacked.mean(0)

    monkeypatch.setattr(ms, "CHUNK_ELEMENTS", 4 * 60 * 7)  # bands of 3 rows, the last one shorter
    for flip_fuse, scale_fuse in (("sum", "max"), ("max", "mean")):
        got = multi_scale_logits(seg_fn, x, scales, size, flip_fuse=flip_fuse, scale_fuse=scale_fuse)
        torch.testing.assert_close(got, whole(flip_fuse, scale_fuse), rtol=0, atol=1e-12)
    labels = multi_scale_logits(seg_fn, x, scales, size, reduce=lambda v: v.argmax(1, keepdim=True))
    assert labels.shape == (1, 1, *size) and torch.equal(labels[:, 0], whole("sum", "max").argmax(1))
