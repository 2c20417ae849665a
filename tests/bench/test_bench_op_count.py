"""bench/bench_op_count.py's harness of the official SeCo: the stand-in of rloss's extension and the weight copy."""

import numpy as np
import pytest
import torch

import bench.bench_op_count as bench


def test_bilateralfilter_stand_in_fills_the_output_in_place_with_zeros_and_dispatches_nothing():
    mod = bench.bilateralfilter_stand_in()
    n, k, h, w = 2, 3, 4, 5
    images = np.random.default_rng(0).uniform(0, 255, n * 3 * h * w).astype(np.float32)
    ins = np.ones(n * k * h * w, np.float32)
    outs = np.full(n * k * h * w, 7.0, np.float32)
    with bench.OpCount() as c:  # NumPy on the host, as the compiled extension: no ATen operator
        assert mod.bilateralfilter_batch(images, ins, outs, n, k, h, w, 15.0, 50.0) is None
    assert not outs.any() and sum(c.ops.values()) == 0
    one = np.full(k * h * w, 7.0, np.float32)
    mod.bilateralfilter(images[: 3 * h * w], ins[: k * h * w], one, h, w, 15.0, 50.0)
    assert not one.any()


def test_bilateralfilter_stand_in_refuses_what_the_extension_would():
    mod = bench.bilateralfilter_stand_in()
    n, k, h, w = 1, 2, 3, 3
    images, ins = np.zeros(3 * h * w, np.float32), np.zeros(k * h * w, np.float32)
    with pytest.raises(ValueError, match="outs"):
        mod.bilateralfilter_batch(images, ins, np.zeros(k * h * w + 1, np.float32), n, k, h, w, 15.0, 50.0)
    with pytest.raises(ValueError, match="images"):
        mod.bilateralfilter_batch(images[:-1], ins, np.zeros(k * h * w, np.float32), n, k, h, w, 15.0, 50.0)
    with pytest.raises(TypeError, match="float32"):
        mod.bilateralfilter_batch(images, ins, np.zeros(k * h * w), n, k, h, w, 15.0, 50.0)
    with pytest.raises(ValueError, match="sigmas"):
        mod.bilateralfilter_batch(images, ins, np.zeros(k * h * w, np.float32), n, k, h, w, 0.0, 50.0)


def test_official_seco_weights_copies_ours_through_the_checkpoint_layout():
    g = torch.Generator().manual_seed(0)
    ours = {
        "backbone.vit.cls_token": torch.randn(1, 1, 4, generator=g),
        "decoder.branches.2.weight": torch.randn(3, 4, 3, 3, generator=g),
        "queue_flags": torch.tensor([1.0, -1.0, 0.0]),  # ours (N,); the official (N, 1)
        "queue_ptr": torch.tensor(2),
    }
    official = {
        "encoder.cls_token": torch.zeros(1, 1, 4),
        "decoder.c2.weight": torch.zeros(3, 4, 3, 3),
        "queue_label_flag": torch.zeros(3, 1),
        "queue_ptr": torch.zeros(1, dtype=torch.long),
        "encoder.head.weight": torch.ones(2, 4),  # dropped by the layout: left as it is
    }
    assert bench.official_seco_weights(official, ours) == ["encoder.head.weight"]
    assert torch.equal(official["encoder.cls_token"], ours["backbone.vit.cls_token"])
    assert torch.equal(official["decoder.c2.weight"], ours["decoder.branches.2.weight"])
    assert official["queue_label_flag"].flatten().tolist() == [1.0, -1.0, 0.0]
    assert official["queue_ptr"].tolist() == [2] and torch.equal(official["encoder.head.weight"], torch.ones(2, 4))
    with pytest.raises(ValueError, match="decoder.c2.weight"):
        bench.official_seco_weights({"decoder.c2.weight": torch.zeros(3, 4, 1, 1)}, ours)
