"""RCA against recordings of its official code (golden ``rca_*.npz``, tests/golden/README.md#rca_model and
the sections before it): the memory write, the k-means centroids, the attention accumulation, the proxy
labels, and the whole model (forward, aggregation, contrast with its mix-up draws, loss staging,
gradients) from the official state dict."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
import torch

from conftest import REPO
from golden import assert_close_to_max, load_golden
from wsss.cam.crf import CRFParams, dense_crf
from wsss.core.config import load_config
from wsss.methods import build_method, placeholder_classes
from wsss.methods.rca import (
    AttentionStore,
    kmeans_centroids,
    maps_to_grid,
    memory_embeddings,
    memory_write,
    quantise_attention,
)
from wsss.methods.rca.official_keys import rca_state_from_official
from wsss.methods.rca.proxy_labels import ProxyParams, attention_to_image, rca_proxy_label
from wsss.methods.rca.region_contrast import MixupPairs, region_masks


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_golden_rca_memory_update(dtype):
    g = load_golden("rca_memory_update")
    queue = torch.from_numpy(g["queue_before"]).to(dtype)
    ptr = torch.from_numpy(g["ptr_before"]).clone()
    ref = g["queue_after_f64"] if dtype == torch.float64 else g["queue_after_f32"]
    for t in range(4):  # four calls on one memory: wrap-around, the strict 0.7, the masked leak
        x = torch.from_numpy(g["x"][t]).to(dtype)[None]
        coarse = torch.from_numpy(g["map"][t]).to(dtype)[None]
        masks = region_masks(coarse)
        # exact: no softmax value lies within 4.9e-5 of its spatial mean (measured in f64), far above rounding
        assert torch.equal(masks[0], torch.from_numpy(g["region_mask"][t]))
        labels = torch.from_numpy(g["label"][t])[None]
        probs = torch.from_numpy(g["probs"][t])[None]
        emb, write = memory_embeddings(x, masks, labels, probs, threshold=0.7, leak=True)
        memory_write(queue, ptr, emb, write, momentum=float(g["momentum"]), blend=True)
        assert ptr.tolist() == g["ptr_after"][t].tolist(), t
        tol = 1e-13 if dtype == torch.float64 else 1e-6 * float(np.abs(ref[t]).max())
        assert float((queue.double() - torch.from_numpy(ref[t]).double()).abs().max()) < tol, t


def _match_as_sets(ours: np.ndarray, ref: np.ndarray) -> float:
    """Max error after matching each reference centre to its nearest centre of ours (one to one)."""
    d = np.linalg.norm(ref[:, None] - ours[None], axis=-1)
    nearest = d.argmin(axis=1)
    assert len(set(nearest.tolist())) == len(ref)
    return float(np.abs(ours[nearest] - ref).max())


def test_golden_rca_kmeans_official_seeding_reproduced():
    g = load_golden("rca_kmeans")
    queue = torch.from_numpy(g["memory"])
    # the official call: KMeans(n_clusters=10), no random_state (numpy's global RNG seeded 1234), which
    # is one RandomState shared by the 20 fits in class order; sklearn >= 1.4: n_init 'auto' = 1 run
    state = np.random.RandomState(int(g["numpy_global_seed"]))
    cent = kmeans_centroids(queue, int(g["n_clusters"]), n_init=1, random_state=state, fit_dtype=np.float32)
    assert cent.dtype == torch.float32
    # the same sklearn float32 k-means from the same seed: measured identical (both kernel sets, 1 and 2
    # threads), but its distances and centre sums are BLAS / OpenMP float32 reductions, which another CPU may
    # split otherwise: 1e-6 of the max (16 float32 ulps); a different clustering would be off by O(1)
    assert_close_to_max(cent, g["centroids"], 1e-6, "centroids")


def test_golden_rca_kmeans_our_seeding_finds_the_separated_clusters():
    g = load_golden("rca_kmeans")
    # our seeding (float64, per-class seeds, a few restarts): the well-separated classes 0-9 match as sets
    cent = kmeans_centroids(torch.from_numpy(g["memory"][:10]), 10, n_init=3, seed=0).numpy()
    for c in range(10):
        assert _match_as_sets(cent[c], g["centroids"][c]) < 1e-5, c


def test_golden_rca_attention_accumulation():
    g = load_golden("rca_attention")
    store = AttentionStore(grid=5)
    epochs, last = g["epochs"].tolist(), int(g["training_epoch"]) - 1
    box, flip = torch.tensor([[0.0, 1.0, 0.0, 1.0]] * 3), torch.zeros(3, dtype=torch.bool)
    for t, epoch in enumerate(epochs):
        values, covered = maps_to_grid(quantise_attention(torch.from_numpy(g["map"][t])), box, flip, 5)
        assert bool(covered.all())  # the official view: the identity mapping onto the grid
        values = values.round().clamp(0, 255).to(torch.uint8).numpy()
        for j in range(3):
            for c in np.flatnonzero(g["label"][j] > 0.5).tolist():
                store.update(
                    f"{int(g['index']) + j}",
                    c,
                    values[j, c],
                    np.ones((5, 5), bool),
                    float(g["probs"][t, j, c]),
                    last_epoch=epoch >= last,
                )
        for j in range(3):
            entry = store.get(f"{int(g['index']) + j}") or {}
            for c in range(20):
                assert (c in entry) == bool(g["att_exists"][t, j, c]), (t, j, c)
                if c in entry:
                    assert np.array_equal(entry[c], g["att_png"][t, j, c]), (t, j, c)


PROXY_IMAGES = ("img_a", "img_b", "img_c")


@pytest.mark.parametrize("name", PROXY_IMAGES)
def test_golden_rca_proxy_labels(name):
    g = load_golden("rca_proxy_labels")
    bgr = g[f"image_bgr_{name}"]
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    classes = g[f"classes_{name}"].tolist()
    h, w = bgr.shape[:2]
    # res.py: the uint8 training map resized with cv2 bilinear (fixed-point) to the image
    for c in classes:
        resized = cv2.resize(g[f"feat_{name}_{c}"], (w, h), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(resized, g[f"orig_{name}_{c}"])
    got_classes, att = attention_to_image({c: g[f"feat_{name}_{c}"] for c in classes}, (h, w))
    assert got_classes == sorted(classes)
    unary = np.concatenate([((1 - att.max(0)) ** 4)[None], att])
    np.testing.assert_allclose(unary, g[f"crf_unary_prob_{name}"], atol=1e-6)
    # the official CRF reads the BGR image (quirk_proxy_crf_bgr): its marginals, then the label
    q = dense_crf(bgr, unary, **CRFParams.PSA.as_kwargs())
    np.testing.assert_allclose(q, g[f"crf_q_{name}"], atol=1e-5)
    params = ProxyParams(crf_bgr=True)
    label = rca_proxy_label(rgb, att, classes, 21, g[f"saliency_{name}"], params)
    assert np.array_equal(label, g[f"proxy_label_{name}"])


def test_golden_rca_proxy_crf_colour_order_is_a_switch():
    g = load_golden("rca_proxy_labels")
    bgr = g["image_bgr_img_a"]
    att = attention_to_image({c: g[f"feat_img_a_{c}"] for c in (4, 14)}, bgr.shape[:2])[1]
    unary = np.concatenate([((1 - att.max(0)) ** 4)[None], att])
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    q_rgb = dense_crf(rgb, unary, **CRFParams.PSA.as_kwargs())
    np.testing.assert_allclose(q_rgb, g["crf_q_img_a_rgb"], atol=1e-5)
    assert float(np.abs(q_rgb - g["crf_q_img_a_bgr"]).max()) > 1e-3  # the colour order matters for Q


def test_golden_rca_proxy_missing_attention_is_skipped_deviation():
    """Deviation (official: TypeError): a labelled class without an attention map is left out."""
    g = load_golden("rca_proxy_labels")
    bgr = g["image_bgr_img_a"]
    classes, att = attention_to_image({4: g["feat_img_a_4"]}, bgr.shape[:2])  # class 14's map missing
    label = rca_proxy_label(np.ascontiguousarray(bgr[..., ::-1]), att, classes, 21, g["saliency_img_a"])
    assert 15 not in np.unique(label) and 5 in np.unique(label)


def test_aggregation_scale_quirk_keeps_the_hard_coded_20_on_coco():
    from methods.rca.test_rca import tiny_method

    on = tiny_method(
        num_classes=81, **{"options.quirk_aggregation_no_softmax": "true", "options.quirk_aggregation_scale_20": "true"}
    )
    off = tiny_method(
        num_classes=81,
        **{"options.quirk_aggregation_no_softmax": "true", "options.quirk_aggregation_scale_20": "false"},
    )
    n = on.options.num_centroids
    assert on.aggregation.scale == 20 / n and off.aggregation.scale == 80 / n


# -- the whole official model: forward, aggregation, contrast with the recorded mix-up draws, gradients ---------
def _official_weights(g) -> dict[str, torch.Tensor]:
    """The official state dict: the stored small tensors and the generated large ones
    (tests/golden/README.md#rca_model)."""
    sd = {k[3:]: torch.from_numpy(g[k]) for k in g if k.startswith("sd.")}
    base = g["sdgen_base"]
    shapes = {k: tuple(v) for k, v in zip(g["sdgen_keys"], _gen_shapes(g))}
    for key, (a, b, scale), checksum in zip(g["sdgen_keys"], g["sdgen_params"], g["sdgen_checksum"]):
        numel = int(np.prod(shapes[key]))
        # the index (a*n + b) mod 4099 has period 4099 in n: one period, tiled
        period = base[(int(a) * np.arange(base.size, dtype=np.int64) + int(b)) % base.size] * np.float32(scale)
        w = np.resize(period.astype(np.float32), numel).reshape(shapes[key])
        sd[str(key)] = torch.from_numpy(w)
        assert abs(float(w.sum(dtype=np.float64)) - float(checksum)) <= 1e-6 * max(1.0, abs(float(checksum))), key
    return sd


def _gen_shapes(g) -> list[tuple[int, ...]]:
    cfg = [v if v in ("M", "N") else int(v) for v in g["cfg_features"]]
    convs, c_in, idx = {}, 3, 0
    for v in cfg:  # features.N indices of make_layers (no BN): conv, ReLU; pools
        if v in ("M", "N"):
            idx += 1
        else:
            convs[f"features.{idx}.weight"] = (v, c_in, 3, 3)
            c_in, idx = v, idx + 2
    shapes = {
        "extra_F.0.weight": (512, 512, 3, 3),
        "extra_F.3.weight": (512, 512, 3, 3),
        "Q.weight": (512, 512, 1, 1),
        "K.weight": (512, 512),
        "V.weight": (512, 512),
        "aggre.weight": (512, 512, 1, 1),
        "concat_project.weight": (512, 1024, 1, 1),
        **convs,
    }
    for key in g["sdgen_keys"]:
        key = str(key)
        if key.startswith("extra_convs"):
            shapes[key] = (512, 512, 3, 3)
    return [shapes[str(k)] for k in g["sdgen_keys"]]


def _our_slice(official: str) -> tuple[str, slice]:
    """Where an official parameter sits in our model: (our key, rows of it)."""
    m = re.fullmatch(r"extra_convs(\d+)\.(\d+)\.(weight|bias)", official)
    if m:
        i, rows = int(m.group(1)), 1 if m.group(2) == "6" else 512
        return f"class_heads.net.{m.group(2)}.{m.group(3)}", slice(i * rows, (i + 1) * rows)
    key = next(iter(rca_state_from_official({official: torch.zeros(1)})[0]))
    return key, slice(None)


@pytest.fixture(scope="module")
def rca_model_golden():
    return load_golden("rca_model")


def _official_rca(g):
    cfg_layers = "[" + ", ".join(str(v) for v in g["cfg_features"]) + "]"
    cfg = load_config(
        REPO / "configs/rca/voc.yaml",
        [
            "model.pretrained=null",
            f"model.backbone_kwargs={{layers: {cfg_layers}}}",
            "options.queue_len=20",
            "options.official_replicas=1",
            "train.batch_size=3",
            "data.crop_size=40",
        ],
    )
    with torch.device("meta"):  # every tensor comes from the recording: skip the 141M-parameter init
        m = build_method(cfg, placeholder_classes(21))
    state, dropped = rca_state_from_official(_official_weights(g))
    assert not dropped
    own = m.state_dict()
    assert set(state) <= set(own) and all(state[k].shape == own[k].shape for k in state)
    assert set(own) - set(state) == {
        "queue",
        "queue_ptr",
        "centroids",
        "centroid_epoch",
        "embed.1.running_mean",
        "embed.1.running_var",
        "embed.1.num_batches_tracked",
        "_extra_state",
    }
    km = load_golden("rca_kmeans")
    rest = {  # copies where the step writes in place (the queue pointer): the fixture dict is module-scoped
        "queue": torch.from_numpy(km["memory"]),
        "centroids": torch.from_numpy(km["centroids"]),
        "queue_ptr": torch.from_numpy(g["ptr_before"].copy()),
        "centroid_epoch": torch.zeros((), dtype=torch.long),
        "embed.1.running_mean": torch.zeros(512),
        "embed.1.running_var": torch.ones(512),  # BN: mean 0, var 1
        "embed.1.num_batches_tracked": torch.zeros((), dtype=torch.long),
        "_extra_state": {"attention": {"grid": 5, "maps": {}}},
    }
    m.load_state_dict({**state, **rest}, strict=True, assign=True)
    return m.train(), cfg


def _pairs(g):
    return MixupPairs(
        *(torch.from_numpy(g[k]).long() for k in ("pair_image", "pair_cls", "partner", "partner_cls")),
        lam=torch.from_numpy(g["lam"]),
    )


def _official_step(g, dtype: torch.dtype):
    """The recorded call at epoch 2 (contrast on) in ``dtype``: the model, its input, the loss terms, the
    weighted total and the activations of the backbone, the embedding and the aggregation."""
    m, cfg = _official_rca(g)
    m = m.to(dtype)
    x = torch.from_numpy(g["input"]).to(dtype).requires_grad_(True)
    labels = torch.from_numpy(g["label"]).to(dtype)
    acts = {}
    hooks = [
        mod.register_forward_hook(lambda _m, _i, out, k=k: acts.__setitem__(k, out))
        for k, mod in (("x_backbone", m.backbone), ("mid", m.embed), ("x_aggregated", m.aggregation))
    ]
    batch = {"rca_image": x, "labels": labels, "mixup_pairs": _pairs(g)}
    active = {"cls", "coarse", "contrast"}  # epoch 2: the contrast term is on
    terms = m.training_step(batch, 0, active)
    for h in hooks:
        h.remove()
    acts["x_backbone"] = acts["x_backbone"].final
    total = sum(cfg.loss.weights[k] * v for k, v in terms.items())
    return m, x, terms, total, acts


def _official_param_grads(m, g, prefix: str):
    """Yield (official key, our gradient of it, the recorded one) for the 139 stored tensors, and
    (key, our gradient, recorded sum, recorded sum of squares) for the 71 generated ones."""
    params = dict(m.named_parameters())
    small = [k[len(prefix) + 1 :] for k in g if k.startswith(prefix + ".")]
    assert len(small) == 139
    for off in small:
        key, rows = _our_slice(off)
        ref = g[f"{prefix}.{off}"]
        yield off, params[key].grad[rows].reshape(ref.shape).double().numpy(), ref
    for off, (s, ss) in zip(g["sdgen_keys"], g[f"{prefix}_gen_sum_sumsq"]):
        key, rows = _our_slice(str(off))
        yield str(off), params[key].grad[rows].double(), (float(s), float(ss))


def test_golden_rca_model_f64_forward_losses_and_parameter_gradients(rca_model_golden):
    """The f64 run: every parameter gradient of the epoch >= 2 total against the official f64 recording
    (``grad_ge2_f64.*``; two recordings on two CPUs agree to 3e-15 relative: tests/golden/README.md#rca_model)."""
    g = rca_model_golden
    m, x, terms, total, acts = _official_step(g, torch.float64)
    # f64 vs f64 (tests/golden/README.md#rca_model): about 1e-10 relative on maps and features, 1e-12 on the
    # losses.
    for key, ours in acts.items():
        ref = g[f"{key}_f64"]
        np.testing.assert_allclose(ours.detach().numpy(), ref, rtol=0, atol=1e-10 * np.abs(ref).max(), err_msg=key)
    for key, term in (("mlsm_xs", "cls"), ("mlsm_xss", "coarse"), ("loss_cl_mix", "contrast")):
        assert abs(float(terms[term].detach()) - float(g[f"{key}_f64"])) <= 1e-12 * abs(float(g[f"{key}_f64"])), key
    assert abs(float(total.detach()) - float(g["total_epoch_ge2_f64"])) <= 1e-12 * float(g["total_epoch_ge2_f64"])
    total.backward()
    ref = g["grad_ge2_input_f64"]
    np.testing.assert_allclose(x.grad.numpy(), ref, rtol=0, atol=1e-10 * np.abs(ref).max())
    # Parameter gradients: measured 3.5e-15 of each tensor's max at worst (default and AVX2 kernels, 1 and 2
    # threads), the same as the official recordings' own spread (3e-15); 1e-12 leaves 300x for another BLAS
    # and still catches a wrong term by ten orders of magnitude. ``extra_F.0.bias`` is ~4e-19 in f64 (the
    # BatchNorm after it removes it): compared absolutely at 1e-15.
    for off, grad, ref in _official_param_grads(m, g, "grad_ge2_f64"):
        if isinstance(ref, tuple):  # generated weights: the sum and the sum of squares (measured 3.5e-16)
            s, ss = ref
            assert abs(float(grad.sum()) - s) <= 1e-12 * float(grad.abs().sum()), off
            assert abs(float((grad**2).sum()) - ss) <= 1e-12 * ss, off
        else:
            assert float(np.abs(grad - ref).max()) <= max(1e-12 * float(np.abs(ref).max()), 1e-15), off


def test_golden_rca_model_forward_contrast_and_gradients(rca_model_golden):
    g = rca_model_golden
    m, _ = _official_rca(g)
    _check_aggregation_alone(m, g)
    assert m.aggregation.scale == 2.0  # / 10 * 20
    m, x, terms, total, acts = _official_step(g, torch.float32)
    # f32 tolerances (tests/golden/README.md#rca_model): the f32-vs-f64 spread was 8.4e-6 on x_aggregated
    # (max 11.7), 3e-7 on xs and 4.8e-7 on loss_cl_mix; rtol 1e-4 + 1e-5 of the max covers it on any kernel set.
    for key, ours in acts.items():
        ref = g[f"{key}_f32"]
        np.testing.assert_allclose(ours.detach().numpy(), ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max(), err_msg=key)
    for key, term in (("mlsm_xs", "cls"), ("mlsm_xss", "coarse"), ("loss_cl_mix", "contrast")):
        ref = float(g[f"{key}_f32"])
        assert abs(float(terms[term].detach()) - ref) <= 1e-5 * abs(ref), key
    assert abs(float(total.detach()) - float(g["total_epoch_ge2_f32"])) <= 1e-5 * float(g["total_epoch_ge2_f32"])
    # the memory writes of the forward (image 0 writes classes 2 and 7: the masked leak; class 7 wraps)
    km = load_golden("rca_kmeans")["memory"]
    changed = {(int(c), int(s)) for c, s in g["queue_changed_slots_f32"]}
    assert m.queue_ptr.tolist() == g["ptr_after"].tolist()
    for (c, s), row in zip(g["queue_changed_slots_f32"], g["queue_changed_rows_f32"]):
        np.testing.assert_allclose(m.queue[c, s].numpy(), row, rtol=1e-5, atol=1e-6)
    unchanged = np.ones((20, 20), bool)
    for c, s in changed:
        unchanged[c, s] = False
    assert np.array_equal(m.queue.numpy()[unchanged], km[unchanged])  # untouched rows are copies: exact
    total.backward()
    # Gradients in f32: smoke checks only (the tight checks are the f64 test above), against the f64 recording.
    # Float32 noise here depends on the thread count: with 1 intra-op thread (as the official f32 recording
    # was made) ours is 3.6e-3 of the max from f64 on the input gradient, 1.76e-2 on the parameters
    # (``extra_convs2.4.bias``, the 1.8 % the official f32 recording shows too) and 1.3e-3 on the generated
    # weights' sums of squares; with 2 threads 6e-7, 3.1e-6 and 3e-7 (default and AVX2 kernels alike).
    # Tolerances about 3-4x the worst: 1.5e-2, 5e-2, 5e-3. The ~0 ``extra_F.0.bias`` (4e-19 in f64) is float32
    # noise, 1.3e-10 at most: compared absolutely at 1e-8.
    ref = g["grad_ge2_input_f64"]
    assert float(np.abs(x.grad.numpy() - ref).max()) <= 1.5e-2 * float(np.abs(ref).max())
    for off, grad, ref in _official_param_grads(m, g, "grad_ge2_f64"):
        if isinstance(ref, tuple):
            s, ss = ref
            # a signed sum cancels: its float32 error scales with the sum of magnitudes (measured 1.1e-4)
            assert abs(float(grad.sum()) - s) <= 1e-3 * float(grad.abs().sum()), off
            assert abs(float((grad**2).sum()) - ss) <= 5e-3 * ss, off
        else:
            assert float(np.abs(grad - ref).max()) <= max(5e-2 * float(np.abs(ref).max()), 1e-8), off


def _check_aggregation_alone(m, g) -> None:
    """Aggregation alone (f32): Q of the backbone map, the read sim @ V(centroids) (no softmax, / 10 * 20)."""
    x = torch.from_numpy(g["x_backbone_f32"])
    with torch.no_grad():
        np.testing.assert_allclose(m.aggregation.Q(x).numpy(), g["q_out_f32"], rtol=1e-4, atol=1e-5)
        out = m.aggregation(x, m.centroids.flatten(0, 1))
    ref = g["x_aggregated_f32"]
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


def test_golden_rca_contrast_alone_f64(rca_model_golden):
    """The f64 run's contrast loss and its gradient w.r.t. the queries, from mid / map_coarse / the memory and
    the injected mix-up draws (tests/golden/README.md#rca_model: about 1e-11)."""
    from wsss.methods.rca.region_contrast import region_contrast_loss, region_embeddings

    g = rca_model_golden
    mid = torch.from_numpy(g["mid_f64"]).requires_grad_(True)
    masks = region_masks(torch.from_numpy(g["map_coarse_f64"]))
    memory = torch.from_numpy(load_golden("rca_kmeans")["memory"]).double()
    pairs = _pairs(g)
    loss = region_contrast_loss(region_embeddings(mid, masks), memory, pairs, temperature=0.07, reduce="mean") * 3
    assert abs(float(loss.detach()) - float(g["loss_cl_mix_f64"])) <= 1e-11 * float(g["loss_cl_mix_f64"])
    loss.backward()
    ref = g["grad_loss_cl_wrt_mid_f64"]
    assert float(np.abs(mid.grad.numpy() - ref).max()) <= 1e-11 * float(np.abs(ref).max())


def test_rca_official_memory_keys_are_stacked_per_class():
    official = {
        "module.queue0": torch.zeros(4, 3),
        "module.queue1": torch.ones(4, 3),
        "module.queue_ptr0": torch.tensor([2]),
        "module.queue_ptr1": torch.tensor([0]),
        "module.cluter0": torch.zeros(2, 3),
        "module.cluter1": torch.ones(2, 3),
    }
    ours, dropped = rca_state_from_official(official)
    assert not dropped and ours["queue"].shape == (2, 4, 3) and ours["centroids"].shape == (2, 2, 3)
    assert ours["queue_ptr"].tolist() == [2, 0] and float(ours["queue"][1].sum()) == 12
    with pytest.raises(KeyError, match="unknown_layer"):
        rca_state_from_official({"unknown_layer.weight": torch.zeros(1)})


def test_golden_rca_memory_empty_own_mask_is_a_deviation():
    """Deviation (official: 0/0, a NaN slot): a confident labelled class whose region mask is empty (its
    softmax never exceeds its own mean) is not written and its pointer does not move."""
    g = load_golden("rca_memory_update")
    queue = torch.from_numpy(g["queue_before"]).clone()
    ptr = torch.from_numpy(g["ptr_before"]).clone()
    x = torch.from_numpy(g["x"][0])[None]
    masks = region_masks(torch.from_numpy(g["map"][0])[None])
    masks[0, 3] = False  # class 3 (labelled, prob 0.9) with an empty own mask
    emb, write = memory_embeddings(
        x, masks, torch.from_numpy(g["label"][0])[None], torch.from_numpy(g["probs"][0])[None], threshold=0.7, leak=True
    )
    assert not bool(write[0, 3]) and bool(write[0, 11])
    memory_write(queue, ptr, emb, write, momentum=0.99, blend=True)
    assert torch.equal(queue[3], torch.from_numpy(g["queue_before"][3])) and int(ptr[3]) == int(g["ptr_before"][3])
    assert torch.isfinite(queue).all()


def _to_official(state: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """Our RCA state under the official names (the inverse of rca_state_from_official), as DataParallel saves it."""
    out = {}
    for key, v in state.items():
        if key in ("centroid_epoch", "_extra_state"):
            continue
        if key.startswith("class_heads.net."):
            layer, leaf = key.split(".")[2:]
            for i, part in enumerate(v.chunk(k, dim=0)):
                out[f"extra_convs{i}.{layer}.{leaf}"] = part
        elif key in ("queue", "centroids", "queue_ptr"):
            name = {"queue": "queue", "centroids": "cluter", "queue_ptr": "queue_ptr"}[key]
            for c in range(k):
                out[f"{name}{c}"] = v[c].reshape(1) if key == "queue_ptr" else v[c]
        else:
            for ours, off in (
                ("backbone.features.", "features."),
                ("coarse_head.", "extra_convs."),
                ("embed.", "extra_F."),
                ("aggregation.", ""),
            ):
                if key.startswith(ours):
                    out[off + key[len(ours) :]] = v
                    break
    return {"module." + key: v for key, v in out.items()}


def test_wsss_import_rca_round_trip(synth_root, tmp_path):
    """`wsss import rca`: an official-layout checkpoint (grouped heads split per class, per-class memory
    buffers, "module." keys) becomes a run whose CAMs are the model's."""
    from methods.rca.test_rca import tiny_rca_overrides
    from wsss.cli import main
    from wsss.runs.run import load_run

    over = [*tiny_rca_overrides(synth_root, tmp_path / "unused"), "model.pretrained=null"]
    cfg = load_config(REPO / "configs/rca/voc.yaml", over)
    torch.manual_seed(0)
    m = build_method(cfg, placeholder_classes(7)).eval()
    ckpt = tmp_path / "rca_official.pth"
    torch.save(_to_official(m.state_dict(), 6), ckpt)
    run = tmp_path / "run"
    argv = ["import", "rca", str(ckpt), "--config", str(REPO / "configs/rca/voc.yaml"), "--out", str(run)]
    assert main([*argv, *over]) == 0
    imported = load_run(run, device="cpu").method
    x = torch.randn(2, 3, 64, 64)
    # the import copies the weights (exact); the two forwards of the same weights agree to float32 rounding:
    # identical here, but a BLAS may split a sum differently for another memory alignment: 1e-6 of the max
    own, got = dict(m.named_parameters()), dict(imported.named_parameters())
    assert own.keys() == got.keys() and all(torch.equal(got[k], p) for k, p in own.items())
    with torch.no_grad():
        for ours, ref in zip(imported.cam_maps(x), m.cam_maps(x)):
            assert_close_to_max(ours, ref, 1e-6)
    assert torch.equal(imported.queue, m.queue) and torch.equal(imported.queue_ptr, m.queue_ptr)


def test_vgg_widths_per_layer_keep_the_d1_layout():
    from wsss.models.vgg import CFG_D1, vgg16_dilated

    net = vgg16_dilated(layers=[8, 8, "M", 16, 16, "M", 32, 32, 32, "M", 32, 32, 32, "N", 32, 32, 24])
    out = net(torch.zeros(1, 3, 40, 40))
    assert out.final.shape == (1, 24, 5, 5) and net.out_dim == 24
    assert [type(a).__name__ for a in net.features] == [type(b).__name__ for b in vgg16_dilated(width=0.125).features]
    with pytest.raises(ValueError, match="D1 layout"):
        vgg16_dilated(layers=list(CFG_D1[:-1]))
