"""RCA (docs/methods/rca.md#specification): memory, centroids, aggregation, contrast loss, attention accumulation,
proxy labels, and the whole pipeline on synthetic data with a resume."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO
from wsss.cam.crf import CRFParams
from wsss.core.config import load_config
from wsss.methods import build_method, placeholder_classes
from wsss.methods.rca import (
    AttentionStore,
    SemanticAggregation,
    kmeans_centroids,
    maps_to_grid,
    memory_embeddings,
    memory_write,
    quantise_attention,
)
from wsss.methods.rca.proxy_labels import ProxyParams, attention_to_image, rca_proxy_label
from wsss.methods.rca.region_contrast import draw_mixup_pairs, region_contrast_loss, region_embeddings, region_masks

PRESET = REPO / "configs" / "rca" / "synthetic_cpu.yaml"


def tiny_rca_overrides(root: Path | str, run_dir: Path | str, **extra: object) -> list[str]:
    base = {
        "data.root": str(root),
        "run.dir": str(run_dir),
        "data.crop_size": 64,
        "data.num_workers": 0,
        "data.val_max_images": 2,
        "model.backbone": "vgg16_dilated",  # RCA's own backbone (the preset runs the baseline's ViT)
        "model.backbone_kwargs": "{width: 0.0625}",  # no BatchNorm: 1 and 2 processes see the same features
        "train.batch_size": 4,
        "train.head_lr_mult": 10.0,  # the official multipliers (the CPU preset runs 1x: see its comment)
        "train.warmup_iters": 0,
        "train.max_iters": 10,
        "train.log_iters": 5,
        "train.eval_iters": 100,
        "train.ckpt_iters": 4,
        "loss.start_iters": "{contrast: 3}",
        "infer.cam_scales": "[1.0]",
        "options.head_dim": 8,
        "options.queue_len": 8,
        "options.num_centroids": 2,
        "options.kmeans_n_init": 1,
        "options.lr_decay_epochs": "[1]",
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def tiny_method(num_classes: int = 4, **extra: object):
    cfg = load_config(PRESET, tiny_rca_overrides("unused", "unused", **extra))
    torch.manual_seed(0)
    return build_method(cfg, placeholder_classes(num_classes))


# ------------------------------------------------------------------------------------------------
# memory bank (rca.md#memory-bank)


def _memory_case():
    # image 0: pixels [1, 2] and [3, 4]; image 1: pixels [0, 2] and [2, 0]
    feats = torch.tensor([[[[1.0, 3.0]], [[2.0, 4.0]]], [[[0.0, 2.0]], [[2.0, 0.0]]]])  # (2, D=2, 1, 2)
    masks = torch.zeros(2, 3, 1, 2, dtype=torch.bool)
    masks[0, 0] = torch.tensor([[True, False]])
    masks[0, 2] = torch.tensor([[False, True]])
    masks[1, 0] = torch.tensor([[True, True]])
    masks[1, 1] = torch.tensor([[True, True]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    probs = torch.tensor([[0.9, 0.99, 0.8], [0.6, 0.95, 0.99]])  # class 0 of image 1 is not confident
    return feats, masks, labels, probs


@pytest.mark.parametrize("official", [True, False])
def test_memory_update_contents_and_pointers(official):
    feats, masks, labels, probs = _memory_case()
    emb, write = memory_embeddings(feats, masks, labels, probs, threshold=0.7, leak=official)
    assert write.tolist() == [[True, False, True], [False, True, False]]
    queue = torch.full((3, 3, 2), 10.0)
    ptr = torch.tensor([2, 0, 1])
    memory_write(queue, ptr, emb, write, momentum=0.5, blend=official)
    expected = torch.full((3, 3, 2), 10.0)
    if official:
        # blend 0.5 * slot + 0.5 * embedding; image 0's class 2 sees features already masked by
        # class 0's region (pixel 1 zeroed), so its embedding is [0, 0]
        expected[0, 2] = torch.tensor([5.5, 6.0])
        expected[2, 1] = torch.tensor([5.0, 5.0])
        expected[1, 0] = torch.tensor([5.5, 5.5])
    else:  # replacement, each class masks the original features
        expected[0, 2] = torch.tensor([1.0, 2.0])
        expected[2, 1] = torch.tensor([3.0, 4.0])
        expected[1, 0] = torch.tensor([1.0, 1.0])
    assert torch.allclose(queue, expected)
    assert ptr.tolist() == [0, 1, 2]  # class 0 wrapped around the ring


def test_region_masks_softmax_over_classes_above_mean():
    coarse = torch.tensor([[[[2.0, 0.0, 1.0]], [[0.0, 0.0, 1.0]]]])  # (1, 2, 1, 3)
    soft = torch.softmax(coarse, dim=1)[0, 0, 0]  # [0.881, 0.5, 0.5]: mean 0.627
    assert soft[0] > soft.mean() > soft[1]
    assert region_masks(coarse)[0, :, 0].tolist() == [[True, False, False], [False, True, True]]
    e = region_embeddings(torch.arange(6.0).view(1, 2, 1, 3), region_masks(coarse))
    assert torch.allclose(e[0], torch.tensor([[0.0, 3.0], [1.5, 4.5]]))


# ------------------------------------------------------------------------------------------------
# centroids and aggregation (rca.md#aggregation)


def _clustered_queue(k: int, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    half = length // 2
    out = torch.empty(k, length, 2)
    for c in range(k):
        out[c, :half] = torch.tensor([0.0, 10.0 * c]) + 0.01 * torch.randn(half, 2, generator=g)
        out[c, half:] = torch.tensor([5.0, 10.0 * c + 5.0]) + 0.01 * torch.randn(length - half, 2, generator=g)
    return out


def test_kmeans_centroids_are_the_cluster_means():
    queue = _clustered_queue(3, 10)
    cent = kmeans_centroids(queue, 2, n_init=1)
    assert cent.shape == (3, 2, 2)
    for c in range(3):
        got = sorted(cent[c].tolist())
        want = sorted([queue[c, :5].mean(0).tolist(), queue[c, 5:].mean(0).tolist()])
        assert np.allclose(got, want, atol=1e-5)


def _sorted_rows(cent: torch.Tensor) -> torch.Tensor:
    return torch.stack([c[torch.argsort(c[:, 0])] for c in cent])


def test_centroid_refresh_once_per_epoch_from_epoch_1():
    m = tiny_method()
    dim = m.queue.shape[-1]
    with torch.no_grad():
        m.queue.copy_(_clustered_queue(3, 8).repeat(1, 1, dim // 2))
    initial = m.centroids.clone()
    m.on_epoch_start(0)
    assert torch.equal(m.centroids, initial)  # epoch 0 keeps the random centroids (index == 0 and epoch > 0)
    m.on_epoch_start(1)
    expected = kmeans_centroids(m.queue, 2, n_init=1, seed=m.cfg.run.seed + 1000)
    assert torch.allclose(m.centroids, expected) and int(m.centroid_epoch) == 1
    with torch.no_grad():
        m.queue.mul_(3.0)
    m.on_epoch_start(1)  # a resume inside epoch 1: the centroids of the epoch start are kept
    assert torch.allclose(m.centroids, expected)
    m.on_epoch_start(2)  # (the cluster order may change with the seed of the epoch)
    assert torch.allclose(_sorted_rows(m.centroids), _sorted_rows(3.0 * expected), atol=1e-4)
    assert int(m.centroid_epoch) == 2


@pytest.mark.parametrize("softmax", [False, True])
def test_semantic_aggregation_shapes_and_formula(softmax):
    torch.manual_seed(0)
    agg = SemanticAggregation(6, 5, softmax=softmax, scale=2.0)
    x, cent = torch.randn(2, 6, 3, 4), torch.randn(7, 5)
    out = agg(x, cent)
    assert out.shape == (2, 6, 3, 4)
    q = agg.Q(x).flatten(2).transpose(1, 2)  # (2, 12, 6)
    sim = q @ agg.K(cent).t()  # (2, 12, 7)
    a = torch.softmax(sim / 6**0.5, dim=-1) if softmax else 2.0 * sim
    read = (a @ agg.V(cent)).transpose(1, 2).reshape(2, 6, 3, 4)
    assert torch.allclose(out, agg.concat_project(torch.cat([x, agg.aggre(read)], 1)), atol=1e-5)


def test_method_maps_shapes():
    m = tiny_method().eval()
    cam, coarse = m.cam_maps(torch.randn(2, 3, 64, 48))
    assert cam.shape == coarse.shape == (2, 3, 8, 6)
    assert m.centroids.shape == (3, 2, m.backbone.out_dim) and m.queue.shape == (3, 8, m.backbone.out_dim)
    # any backbone of the toolkit: a timm CNN at stride 8
    r = tiny_method(**{"model.backbone": "resnet18", "model.backbone_kwargs": "{}", "model.output_stride": 8}).eval()
    cam, coarse = r.cam_maps(torch.randn(1, 3, 64, 64))
    assert cam.shape == coarse.shape == (1, 3, 8, 8) and r.queue.shape[-1] == 512 and r.attention.grid == 8


def test_param_groups_and_aggregation_lr_quirk():
    m = tiny_method()
    groups = m.param_groups()
    ids = {k: {id(p) for p in v} for k, v in groups.items()}
    agg_w = {id(m.aggregation.Q.weight), id(m.aggregation.K.weight), id(m.aggregation.concat_project.weight)}
    assert agg_w <= ids["head"]  # the CPU preset corrects the quirk
    assert id(m.embed[1].weight) in ids["head"] and id(m.embed[1].bias) in ids["head_bias"]
    assert id(m.backbone.features[0].bias) in ids["backbone_bias"]
    assert sum(len(v) for v in groups.values()) == len(list(m.parameters()))
    official = tiny_method(**{"options.quirk_aggregation_backbone_lr": "true"})
    ids = {k: {id(p) for p in v} for k, v in official.param_groups().items()}
    assert (
        id(official.aggregation.V.weight) in ids["backbone"] and id(official.aggregation.V.bias) in ids["backbone_bias"]
    )
    assert {k: v["lr_mult"] for k, v in m.param_group_options().items()} == {
        "backbone": 1.0,
        "backbone_bias": 2.0,
        "head": 10.0,
        "head_bias": 20.0,
    }


# ------------------------------------------------------------------------------------------------
# contrast loss (rca.md#semantic-contrast)


def slow_contrast(emb, coarse, memory, pairs, temperature, reduce):
    """A direct transcription of rca.md#semantic-contrast, one (image, class) pair at a time."""
    k, length, d = memory.shape
    soft = torch.softmax(coarse, dim=1)

    def region(i, c):
        m = (soft[i, c] > soft[i, c].mean()).to(emb.dtype)
        return (emb[i] * m).sum(dim=(1, 2)) / m.sum()

    feat = F.normalize(memory.reshape(-1, d), dim=1)
    owner = torch.arange(k).repeat_interleave(length)
    per_image: dict[int, list[torch.Tensor]] = {}
    for r in range(len(pairs)):
        i, c, p, c2 = (int(t[r]) for t in (pairs.image, pairs.cls, pairs.partner, pairs.partner_cls))
        lam = float(pairs.lam[r])
        x = lam * region(i, c) + (1 - lam) * region(p, c2)
        x = x / x.norm()
        logit = feat @ x / temperature
        top = logit.max().detach()
        e = torch.exp(logit - top)
        total = 0.0
        for t, w in ((c, lam), (c2, 1 - lam)):
            neg = e[owner != t].sum()
            pos = logit[owner == t] - top
            total = total + w * (-(pos - torch.log((neg + torch.exp(pos)).clamp(min=1e-4)))).mean()
        per_image.setdefault(i, []).append(total)
    vals = [sum(v) / len(v) for v in per_image.values()]
    return sum(vals) if reduce == "sum" else sum(vals) / len(vals)


@pytest.mark.parametrize("mixup", [True, False])
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_contrast_loss_matches_direct_computation(mixup, reduce):
    torch.manual_seed(0)
    b, k, d = 4, 3, 5
    emb = torch.randn(b, d, 4, 4, dtype=torch.float64, requires_grad=True)
    coarse = torch.randn(b, k, 4, 4, dtype=torch.float64)
    memory = torch.randn(k, 6, d, dtype=torch.float64)
    labels = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 0]], dtype=torch.float64)  # image 3: no label
    pairs = draw_mixup_pairs(labels, 8.0, self_partner=True, mixup=mixup, rng=np.random.default_rng(1))
    assert len(pairs) == 6 and (pairs.lam < 1).all() == mixup
    fast = region_contrast_loss(
        region_embeddings(emb, region_masks(coarse)), memory, pairs, temperature=0.07, reduce=reduce
    )
    (g_fast,) = torch.autograd.grad(fast, emb)
    slow = slow_contrast(emb, coarse, memory, pairs, 0.07, reduce)
    (g_slow,) = torch.autograd.grad(slow, emb)
    assert torch.allclose(fast, slow, rtol=1e-10)
    assert torch.allclose(g_fast, g_slow, rtol=1e-8, atol=1e-12)


def test_mixup_pairs_partners_and_classes():
    labels = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 0, 1]], dtype=torch.float32)
    for self_partner in (True, False):
        seen_self = False
        for seed in range(30):
            pairs = draw_mixup_pairs(labels, 8.0, self_partner=self_partner, rng=np.random.default_rng(seed))
            assert pairs.image.tolist() == [0, 1, 1, 2, 2] and pairs.cls.tolist() == [0, 1, 2, 0, 2]
            for p, c2 in zip(pairs.partner.tolist(), pairs.partner_cls.tolist()):
                assert labels[p, c2] == 1  # c' is a class of the partner
            seen_self |= bool((pairs.partner == pairs.image).any())
            assert ((pairs.lam > 0) & (pairs.lam < 1)).all()
        assert seen_self == self_partner  # the corrected draw never pairs an image with itself
    plain = draw_mixup_pairs(labels, mixup=False)
    assert torch.equal(plain.partner, plain.image) and torch.equal(plain.partner_cls, plain.cls)
    assert (plain.lam == 1).all()


# ------------------------------------------------------------------------------------------------
# online attention accumulation (rca.md#attention)


def test_accumulation_two_epochs_different_crops_and_flips():
    store = AttentionStore(grid=4)
    # epoch 1: the whole image, not flipped: the grid is the map itself (identity mapping)
    first = torch.tensor([[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], [8.0, 9.0, 10.0, 11.0], [12.0, 13.0, 14.0, 15.0]])
    q1 = quantise_attention(first[None, None])  # scaled to 0..255 by its own max
    assert torch.equal(q1[0, 0], torch.round(first / 15.0 * 255))
    v, cov = maps_to_grid(q1, torch.tensor([[0.0, 1.0, 0.0, 1.0]]), torch.tensor([False]), 4)
    assert cov.all() and torch.allclose(v[0, 0], q1[0, 0])
    store.update("img", 2, v[0, 0].round().numpy(), cov[0].numpy(), 0.9, last_epoch=False)
    # epoch 2: the left half of the image, squashed to the view and flipped; view columns come in
    # equal pairs [a, a, b, b], so the bilinear samples at view x = 2.5 and 0.5 are exactly b and a
    view = torch.tensor([[200.0, 200.0, 30.0, 30.0]] * 4)
    v, cov = maps_to_grid(view[None, None], torch.tensor([[0.0, 1.0, 0.0, 0.5]]), torch.tensor([True]), 4)
    assert cov[0].tolist() == [[True, True, False, False]] * 4
    # grid column 0 (centre 0.125 -> 0.25 of the box -> mirrored 0.75) reads b = 30, column 1 reads a = 200
    assert torch.allclose(v[0, 0], torch.tensor([[30.0, 200.0, 0.0, 0.0]] * 4))
    store.update("img", 2, v[0, 0].numpy(), cov[0].numpy(), 0.5, last_epoch=False)
    old = torch.round(first / 15.0 * 255).numpy()
    expected = old.copy()
    expected[:, 0] = np.maximum(old[:, 0], 30)
    expected[:, 1] = np.maximum(old[:, 1], 200)
    assert np.array_equal(store.get("img")[2], expected.astype(np.uint8))


def test_accumulation_probability_and_last_epoch_rules():
    store = AttentionStore(grid=2)
    cov = np.ones((2, 2), dtype=bool)
    store.update("a", 0, np.full((2, 2), 50), cov, 0.05, last_epoch=False)
    assert store.get("a") is None  # p < 0.1: not written
    store.update("a", 0, np.full((2, 2), 50), cov, 0.05, last_epoch=True)
    assert (store.get("a")[0] == 50).all()  # the last epoch writes a missing map whatever p
    store.update("a", 0, np.full((2, 2), 90), cov, 0.05, last_epoch=True)
    assert (store.get("a")[0] == 50).all()  # an existing map still needs p >= 0.1
    store.update("a", 0, np.array([[90, 10], [10, 90]]), cov, 0.5, last_epoch=False)
    assert store.get("a")[0].tolist() == [[90, 50], [50, 90]]
    # uncovered cells of a first write are 0, of a later write unchanged
    store.update("a", 1, np.full((2, 2), 70), np.array([[True, False], [True, False]]), 0.5, last_epoch=False)
    assert store.get("a")[1].tolist() == [[70, 0], [70, 0]]
    restored = AttentionStore(1)
    restored.load(store.state())
    assert restored.grid == 2 and restored.get("a")[1].tolist() == [[70, 0], [70, 0]]


# ------------------------------------------------------------------------------------------------
# proxy labels (rca.md#proxy-labels)

# one row of 7 pixels, classes 0 and 2 (ids 1 and 3); iters=0 makes the CRF the normalised unary
ATT = np.array([[[1.0, 0.9, 0.5, 0.0, 0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 0.27, 0.95, 0.3, 0.05]]], dtype=np.float32)
NO_CRF = ProxyParams(crf=CRFParams(iters=0, pos_xy_std=3, pos_w=3, bi_xy_std=80, bi_rgb_std=13, bi_w=10))
IMAGE = np.full((1, 7, 3), 128, dtype=np.uint8)


def test_proxy_label_saliency_free():
    label = rca_proxy_label(IMAGE, ATT, [0, 2], 4, None, NO_CRF)
    # pixel 3: the CRF says background ((1 - .27)^4 = .284 > .27) but the attention .27 >= 0.25: undecided
    assert label[0].tolist() == [1, 1, 1, 255, 3, 3, 0]
    # with the run's levels (what `wsss pseudo --refine rca --levels 0.4/0.2` passes): background unary 0.4, so
    # pixel 5 (.3) is background by the CRF, and undecided as .3 >= 0.2; pixel 6 (.05) stays background
    levels = dataclasses.replace(NO_CRF, free_levels=(0.4, 0.2))
    assert rca_proxy_label(IMAGE, ATT, [0, 2], 4, None, levels)[0].tolist() == [1, 1, 1, 255, 3, 255, 0]
    # high 0.92: only pixel 0 (1.0) and 4 (.95) are classes; low 0.92: every other pixel is background
    high = dataclasses.replace(NO_CRF, free_levels=(0.92, 0.92))
    assert rca_proxy_label(IMAGE, ATT, [0, 2], 4, None, high)[0].tolist() == [1, 0, 0, 0, 3, 0, 0]
    # saliency given: the levels are not used (the official rule, test below)
    sal = np.array([[255, 0, 0, 0, 255, 10, 40]], dtype=np.uint8)
    assert np.array_equal(
        rca_proxy_label(IMAGE, ATT, [0, 2], 4, sal, high), rca_proxy_label(IMAGE, ATT, [0, 2], 4, sal, NO_CRF)
    )


def test_proxy_label_with_saliency():
    sal = np.array([[255, 0, 0, 0, 255, 10, 40]], dtype=np.uint8)
    label = rca_proxy_label(IMAGE, ATT, [0, 2], 4, sal, NO_CRF)
    # pixel 1: bg channel 1 and class .9999 both > 0.9 (conflict); pixel 2: bg wins (1 > .889) but the
    # class's CRF score > 0.8 marks it salient; pixel 6: bg with saliency 40 >= 32
    assert label[0].tolist() == [1, 255, 255, 0, 3, 0, 255]
    strict = ProxyParams(min_fg=0.5, crf=NO_CRF.crf)  # 2 / 7 foreground pixels < 50 %: all ignored
    assert (rca_proxy_label(IMAGE, ATT, [0, 2], 4, sal, strict) == 255).all()
    assert ProxyParams().crf == CRFParams.PSA and ProxyParams().alpha == 4.0


def test_attention_to_image_resizes_and_normalises():
    classes, att = attention_to_image(
        {2: np.array([[0, 100], [50, 200]], np.uint8), 0: np.full((2, 2), 7, np.uint8)}, (4, 6)
    )
    assert classes == [0, 2] and att.shape == (2, 4, 6)
    assert att[1].min() == 0 and abs(att[1].max() - 1) < 1e-6 and (att[0] == 0).all()


# ------------------------------------------------------------------------------------------------
# end to end: train across an epoch boundary, cam, pseudo --refine rca, eval; resume


def _state(run_dir: Path) -> dict:
    from wsss.core.checkpoint import load_checkpoint

    return load_checkpoint(run_dir / "checkpoints" / "last.pt")


def test_end_to_end_and_resume(synth_root, tmp_path, capsys):
    from wsss.cli import main
    from wsss.engine.trainer import Trainer

    run_a, run_b = tmp_path / "a", tmp_path / "b"
    # threshold 0: an untrained classifier is never 70 % sure; 64 slots: the pointers do not wrap
    extra = {"options.memory_threshold": 0.0, "options.queue_len": 64}
    cfg_a = load_config(PRESET, tiny_rca_overrides(synth_root, run_a, **extra))
    Trainer(cfg_a, progress=False).train()  # 24 images / 4 = 6 iterations an epoch: epochs 0 and 1
    st = _state(run_a)
    model = st["model"]
    assert st["step"] == 10 and int(model["centroid_epoch"]) == 1
    attention = model["_extra_state"]["attention"]
    assert attention["grid"] == 8 and len(attention["maps"]) > 0  # accumulated in epoch 1 (iterations 6-9)
    assert all(m.dtype == np.uint8 and m.shape == (8, 8) for v in attention["maps"].values() for m in v.values())
    assert int(model["queue_ptr"].sum()) > 0  # the memory was written
    lrs = {g["name"]: g["base_lr"] for g in st["optimizer"]["param_groups"]}
    assert lrs["head_bias"] == pytest.approx(cfg_a.train.lr * 20 * 0.1)  # lr step at epoch 1
    metrics = (run_a / "metrics.jsonl").read_text()
    assert '"loss/contrast"' in metrics

    # resume inside epoch 1 (checkpoint at 8): same memory, centroids, attention and weights
    cfg_b = load_config(PRESET, tiny_rca_overrides(synth_root, run_b, **extra))
    Trainer(cfg_b, progress=False).train(until=9)
    Trainer(cfg_b, progress=False).train()
    sb = _state(run_b)["model"]
    for key in ("queue", "queue_ptr", "centroids", "centroid_epoch", "class_heads.net.0.weight"):
        assert torch.equal(model[key], sb[key]), key
    att_b = sb["_extra_state"]["attention"]["maps"]
    assert att_b.keys() == attention["maps"].keys()
    for id, maps in attention["maps"].items():
        assert all(np.array_equal(m, att_b[id][c]) for c, m in maps.items())

    # cam -> pseudo --refine rca -> eval
    assert main(["cam", str(run_a), "--split", "train", "--quiet"]) == 0
    assert main(["pseudo", str(run_a), "--split", "train", "--refine", "rca", "--quiet"]) == 0
    pseudo = sorted((run_a / "pseudo" / "train").glob("*.png"))
    assert len(pseudo) == 24
    assert (
        main(["eval", str(run_a / "pseudo" / "train"), "--data-root", str(synth_root), "--split", "train", "--pseudo"])
        == 0
    )
    # saliency-free, the run's levels reach the rule: at 0 every attention is above the background unary, at 1.0
    # none is, so no photo keeps a foreground pixel (then under min_fg: all 255)
    from wsss.utils.io import read_label_png

    def foreground() -> int:
        labels = [read_label_png(p) for p in pseudo]
        return sum(int(((label > 0) & (label < 255)).sum()) for label in labels)

    levels = ["pseudo", str(run_a), "--split", "train", "--refine", "rca", "--overwrite", "--quiet", "--levels"]
    assert main([*levels, "0.0/0.0"]) == 0 and foreground() > 0
    assert main([*levels, "1.0/1.0"]) == 0 and foreground() == 0
    # with saliency maps (here: the ground-truth foreground) and a missing one
    from wsss.data import VOCDataset
    from wsss.utils.io import save_label_png

    ds = VOCDataset(synth_root, "train")
    sal_dir = tmp_path / "sal"
    for id in ds.ids:
        mask = ds.load_mask(id)
        save_label_png(sal_dir / f"{id}.png", np.where((mask > 0) & (mask < 255), 255, 0).astype(np.uint8))
    args = ["pseudo", str(run_a), "--split", "train", "--refine", "rca", "--saliency", str(sal_dir), "--quiet"]
    assert main([*args, "--overwrite"]) == 0
    (sal_dir / f"{ds.ids[0]}.png").unlink()
    capsys.readouterr()
    assert main([*args, "--overwrite"]) == 1
    assert f"{ds.ids[0]}.png: saliency map not found" in capsys.readouterr().err


def test_two_processes_gather_memory_and_attention_like_one(synth_root, tmp_path):
    """DDP (2 gloo processes) vs 1 process on the same global batch: every process's memory and attention
    updates are gathered (the official DataParallel kept only replica 0's), in global-batch order."""
    import subprocess
    import sys

    extra = {
        "options.memory_threshold": 0.0,
        "options.queue_len": 64,
        "options.quirk_query_memory_spaces": "true",
        "loss.start_iters": "{contrast: 100}",
        "train.max_iters": 7,
        "train.ckpt_iters": 7,
        "data.val_split": "''",
        "train.optimizer": "sgd",
        "train.lr": 0.001,
    }  # no BN in the memory features, no contrast, SGD (Adam's first steps amplify float noise)
    states = []
    for nproc in (1, 2):
        run = tmp_path / f"p{nproc}"
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            "wsss.cli",
            "train",
            str(PRESET),
            *tiny_rca_overrides(synth_root, run, **extra),
            "--quiet",
            "--skip-check",
        ]
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        states.append(_state(run)["model"])
    one, two = states
    assert torch.equal(one["queue_ptr"], two["queue_ptr"]) and int(one["queue_ptr"].sum()) > 0
    # Same slots, same embeddings up to the float noise of a few training steps (max seen 0.012 on
    # 0.2 % of entries); a lost or misplaced update would differ by O(1) over whole rows.
    d = (one["queue"] - two["queue"]).abs()
    assert float(d.max()) < 0.05 and float((d > 1e-3).float().mean()) < 0.01
    a1, a2 = one["_extra_state"]["attention"]["maps"], two["_extra_state"]["attention"]["maps"]
    assert a1.keys() == a2.keys() and len(a1) == 4  # step 6 is the first of epoch 1: one global batch of 4
    for id, maps in a1.items():
        assert all(np.abs(m.astype(int) - a2[id][c].astype(int)).max() <= 1 for c, m in maps.items())


# ------------------------------------------------------------------------------------------------
# the real-photo preset's heads at initialisation


def test_real_cpu_preset_class_maps_depend_on_the_image_at_init():
    """The real-photo preset's class maps must vary over the image from the first step. Its N(0, 0.03) init
    (meant as He's std, which for these 16-wide heads is 0.118 and 0.354 for the last 1x1) shrank the signal
    4x per layer: on MobileNetV2 features of ccp-dev photos the map's within-image std was 0.0009 against
    the features' 0.21 (a constant map: its biases alone fit the label frequencies, and a class whose constant
    is negative has an empty CAM); He's init per layer gives 0.13 (measured, BENCHMARKS.md "ccp-dev")."""
    cfg = load_config(REPO / "configs/rca/real_cpu.yaml", ["model.pretrained=null"])
    assert cfg.options["init_std"] is None
    torch.manual_seed(0)
    method = build_method(cfg, placeholder_classes(11))
    feats = 0.2 * torch.randn(2, method.backbone.out_dim, 10, 10)  # the measured std of the real features
    with torch.no_grad():
        maps = method.class_heads(feats)
    # He keeps ~0.5-1x of the input's std through the four layers, the 0.03 init ~0.005x: 0.1 splits decades
    assert float(maps.std(dim=(2, 3)).mean()) > 0.1 * float(feats.std())


def test_he_init_per_convolution():
    cfg = load_config(PRESET, ["options.init_std=null", "options.head_dim=16"])
    torch.manual_seed(0)
    method = build_method(cfg, placeholder_classes(11))
    convs = [
        m
        for mod in (method.class_heads, method.coarse_head, method.embed)
        for m in mod.modules()
        if isinstance(m, torch.nn.Conv2d)
    ]
    for m in convs:
        fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        # the smallest layer (the class heads' last 1x1: 10 x 16 weights) estimates its std within ~6 %: 25 % is 4 sigma
        assert float(m.weight.detach().std()) == pytest.approx((2 / fan_in) ** 0.5, rel=0.25)
