"""AffinityNet (PSA, methods.md 5.7): pairs, affinity labels, loss, the random walk against direct dense
computations, the pseudo-label target through the augmentation, and train -> `wsss pseudo --refine affinity`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, tiny_overrides
from wsss.cam.affinity import (
    affinity_labels,
    affinity_loss,
    background_cam,
    dense_affinity,
    pair_indices,
    pairwise_affinity,
    random_walk,
    random_walk_scores,
    search_offsets,
    transition_matrix,
)
from wsss.cli import main
from wsss.data import ClsTrainDataset, VOCDataset
from wsss.data.transforms import TrainAugment
from wsss.utils.io import DataError, read_label_png, save_label_png

TINY_CNN = "{channels: [8, 16, 16, 32], stem_width: 8}"


def brute_pairs(h: int, w: int, radius: int, interior: bool) -> set[tuple[int, int]]:
    """Every (source, target) pair by definition: target within the radius in the half-plane
    (dy > 0, or dy == 0 and dx > 0); PSA's sources are the interior pixels only."""
    rf = radius - 1
    pairs = set()
    for y in range(h):
        for x in range(w):
            if interior and not (y < h - rf and rf <= x < w - rf):
                continue
            for dy in range(0, radius):
                for dx in range(-rf, radius):
                    if (dy == 0 and dx <= 0) or dx * dx + dy * dy >= radius * radius:
                        continue
                    ty, tx = y + dy, x + dx
                    if 0 <= ty < h and 0 <= tx < w:
                        pairs.add((y * w + x, ty * w + tx))
    return pairs


def test_search_offsets_psa():
    offs = search_offsets(5)
    assert len(offs) == 34  # 4 on the row + 9 + 9 + 7 + 5 below
    assert offs[:4] == [(0, 1), (0, 2), (0, 3), (0, 4)]
    assert offs[4] == (1, -4) and offs[-1] == (4, 2)
    assert search_offsets(2) == [(0, 1), (1, -1), (1, 0), (1, 1)]


@pytest.mark.parametrize("h,w", [(9, 12), (16, 16)])
def test_pair_indices_match_definition(h, w):
    src, dst = pair_indices(h, w, 5)
    got = {(int(s), int(d)) for k in range(dst.shape[0]) for s, d in zip(src, dst[k])}
    assert len(got) == dst.numel()  # no duplicates
    assert got == brute_pairs(h, w, 5, interior=True)
    # all-sources variant: the valid pairs on the padded grid are every pair within the radius, once
    lab = torch.zeros(h, w, dtype=torch.long)
    bg, fg, neg = affinity_labels(lab, 5, interior_sources=False)
    assert int(bg.sum()) == len(brute_pairs(h, w, 5, interior=False))
    assert int(bg.sum()) > dst.numel() and not fg.any() and not neg.any()


def test_affinity_labels_hand_made():
    # radius 2: offsets (0,1), (1,-1), (1,0), (1,1); sources are (0,1) [label 0] and (0,2) [label 1]
    label = torch.tensor([[0, 0, 1, 255], [0, 1, 1, 2]])
    src, dst = pair_indices(2, 4, 2)
    assert src.tolist() == [1, 2]
    assert dst.tolist() == [[2, 3], [4, 5], [5, 6], [6, 7]]
    bg, fg, neg = affinity_labels(label, 2)
    # (0,1)->(0,2): 0|1 neg; ->(1,0): 0|0 bg; ->(1,1): 0|1 neg; ->(1,2): 0|1 neg
    # (0,2)->(0,3): 1|255 invalid; ->(1,1): 1|1 fg; ->(1,2): 1|1 fg; ->(1,3): 1|2 neg
    assert bg.int().tolist() == [[0, 0], [1, 0], [0, 0], [0, 0]]
    assert fg.int().tolist() == [[0, 0], [0, 1], [0, 1], [0, 0]]
    assert neg.int().tolist() == [[1, 0], [0, 0], [1, 0], [1, 1]]
    # batched input gives the same per image
    bg2, _, neg2 = affinity_labels(torch.stack([label, label]), 2)
    assert torch.equal(bg2[1], bg) and torch.equal(neg2[0], neg)


def test_pairwise_affinity_and_loss_against_loops():
    g = torch.Generator().manual_seed(0)
    feat = torch.rand(2, 3, 6, 10, generator=g)
    aff = pairwise_affinity(feat, 3)
    src, dst = pair_indices(6, 10, 3)
    flat = feat.flatten(2)
    for b in range(2):
        for k in range(dst.shape[0]):
            for p in range(src.numel()):
                want = math.exp(-float((flat[b, :, src[p]] - flat[b, :, dst[k, p]]).abs().mean()))
                assert abs(float(aff[b, k, p]) - want) < 1e-6
    label = torch.randint(0, 3, (2, 6, 10), generator=g)
    label[:, 0, :3] = 255
    bg, fg, neg = affinity_labels(label, 3)
    terms = affinity_loss(aff, bg, fg, neg)
    a = aff.double().numpy()
    for name, mask, val in (("aff_bg", bg, np.log(a + 1e-5)), ("aff_fg", fg, np.log(a + 1e-5)),
                            ("aff_neg", neg, np.log(1 + 1e-5 - a))):  # fmt: skip
        m = mask.numpy()
        assert m.sum() > 0
        assert abs(float(terms[name]) - (-(val * m).sum() / (m.sum() + 1e-5))) < 1e-5


@pytest.mark.parametrize("interior", [True, False])
def test_dense_affinity_and_random_walk_against_dense_reference(interior):
    g = torch.Generator().manual_seed(1)
    h, w, r = 5, 7, 3
    feat = torch.rand(4, h, w, generator=g, dtype=torch.float64)
    a = dense_affinity(feat, r, interior_sources=interior)
    ref = torch.eye(h * w, dtype=torch.float64)
    flat = feat.reshape(4, -1)
    for s, d in brute_pairs(h, w, r, interior):
        ref[s, d] = ref[d, s] = torch.exp(-(flat[:, s] - flat[:, d]).abs().mean())
    assert torch.allclose(a, ref, atol=1e-12)
    beta, logt = 8.0, 3
    t = transition_matrix(a, beta)
    assert torch.allclose(t.sum(0), torch.ones(h * w, dtype=torch.float64))
    cam = torch.rand(3, h * w, generator=g, dtype=torch.float64)
    direct = ref.pow(beta) / ref.pow(beta).sum(0, keepdim=True)
    want = cam @ torch.linalg.matrix_power(direct, 2**logt)
    assert torch.allclose(random_walk(cam, t, logt), want, atol=1e-10)


def test_random_walk_stays_in_its_region():
    """Two regions of very different features: the walk spreads scores inside each, not across."""
    h, w = 8, 12
    feat = torch.zeros(2, h, w)
    feat[:, :, 6:] = 50.0  # affinity across the border ~ exp(-50)
    cam = torch.zeros(2, h, w)
    cam[0, 2, 2] = 1.0  # one confident pixel of class 1 on the left
    cam[1, 5, 9] = 1.0  # and of class 2 on the right
    scores = background_cam(cam, 16.0)
    out = random_walk_scores(scores, feat, beta=8, logt=6, radius=3, interior_sources=False)
    assert out.shape == (3, h, w)
    left, right = out[:, :, :5], out[:, :, 7:]
    assert float(left[2].max()) < 1e-6 and float(right[1].max()) < 1e-6
    assert float(left[1].min()) > 0 and float(right[2].min()) > 0


def test_target_follows_the_augmentation(synth_root, tmp_path):
    base = VOCDataset(synth_root, "train")
    for i in base.ids:
        save_label_png(tmp_path / f"{i}.png", base.load_mask(i))
    aug = TrainAugment(48, scale_range=(0.5, 1.5), hflip=True)
    plain = ClsTrainDataset(base, aug, seed=5)
    with_t = ClsTrainDataset(base, aug, seed=5, target_dir=tmp_path)
    for k in range(4):
        a, b = plain[k], with_t[k]
        assert "target" not in a
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["img_box"], b["img_box"])
        ref = aug(base.load_image(base.ids[k]), plain.rng_for(k), mask=base.load_mask(base.ids[k]))
        assert torch.equal(b["target"], torch.from_numpy(ref["mask"].astype(np.int64)))
        h0, h1, w0, w1 = b["img_box"].tolist()
        outside = torch.ones(48, 48, dtype=torch.bool)
        outside[h0:h1, w0:w1] = False
        assert bool((b["target"][outside] == 255).all())  # crop padding is ignore
    (tmp_path / f"{base.ids[3]}.png").unlink()
    with pytest.raises(DataError, match=f"{base.ids[3]}.png"):
        ClsTrainDataset(base, aug, target_dir=tmp_path)


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_random_walk_label_at_any_walk_scale(scale, monkeypatch):
    """``AffinityNet.random_walk_label``: a two-colour image whose affinity features follow the colour;
    a confident CAM band on each side. The label comes back at the image size (20x28, not multiples of the
    stride) with each side walked to its own class, on the 1x grid and on the 2x grid (``rw_scale``)."""
    from wsss.core.config import load_config
    from wsss.methods import build_method

    cfg = load_config(
        REPO / "configs/affinity/synthetic_cpu.yaml",
        [f"model.backbone_kwargs={TINY_CNN}", "options.rw_logt=4", f"options.rw_scale={scale}"],
    )
    net = build_method(cfg, num_classes=3).eval()
    grids = []

    def colour_features(x: torch.Tensor) -> torch.Tensor:  # (1, 3, H, W) normalised -> stride-8 grid
        grids.append(tuple(x.shape[-2:]))
        return 20.0 * F.avg_pool2d(x[:, :1], net.stride)

    monkeypatch.setattr(net, "features", colour_features)
    h, w = 20, 28
    image = np.zeros((h, w, 3), np.uint8)
    image[:, 16:] = 255  # the colour border on a grid-cell border
    cam = np.zeros((2, h, w), np.float32)
    cam[0, :, 2:12] = 1.0  # class 1 on most of the dark side: the walk fills the rest of it
    cam[1, :, 19:26] = 1.0  # class 2 on most of the bright side
    with torch.no_grad():
        label = net.random_walk_label(image, cam, np.array([1.0, 1.0]))
    assert label.shape == (h, w)
    sh, sw = round(h * scale), round(w * scale)
    assert grids == [(sh + -sh % 8, sw + -sw % 8)]  # the walk ran on the scaled, padded image
    # (the upsampled grid blurs a few pixels on either side of the border)
    assert (label[:, :11] == 1).all() and (label[:, 21:] == 2).all()
    assert (label[:, 16:] != 1).all() and (label[:, :16] != 2).all()


@pytest.fixture(scope="module")
def cam_run(synth_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("affcam") / "cam"
    over = tiny_overrides(synth_root, run, **{"train.max_iters": 3, "train.eval_iters": 100})
    assert main(["train", str(REPO / "configs/cam/synthetic_cpu.yaml"), *over, "--quiet", "--skip-check"]) == 0
    assert main(["cam", str(run), "--split", "train", "--quiet"]) == 0
    assert main(["pseudo", str(run), "--split", "train", "--refine", "psa", "--quiet"]) == 0  # PSA's seeds (5.7)
    return run


def test_affinitynet_train_then_random_walk_pseudo(cam_run, synth_root, tmp_path, capsys):
    seeds = tmp_path / "seeds"
    (cam_run / "pseudo/train").rename(seeds)
    base = VOCDataset(synth_root, "train")
    for i in base.ids:  # la/ha seeds: the image's classes, confident background, 255 between
        allowed = {0, 255} | {int(c) + 1 for c in np.flatnonzero(base.labels(i))}
        assert set(np.unique(read_label_png(seeds / f"{i}.png")).tolist()) <= allowed
    aff = tmp_path / "aff"
    over = [
        f"data.root={synth_root}", f"run.dir={aff}", f"data.pseudo_dir={seeds}", "data.crop_size=64",
        "data.num_workers=0", f"model.backbone_kwargs={TINY_CNN}", "train.batch_size=4", "train.max_iters=3",
        "train.ckpt_iters=3", "options.aux_dim=8", "options.final_dim=8", "options.out_dim=16",
    ]  # fmt: skip
    assert main(["train", str(REPO / "configs/affinity/synthetic_cpu.yaml"), *over, "--quiet", "--skip-check"]) == 0
    lines = (aff / "metrics.jsonl").read_text().splitlines()
    assert any("loss/aff_neg" in line for line in lines)

    capsys.readouterr()
    assert main(["pseudo", str(cam_run), "--split", "train", "--refine", "affinity", "--quiet"]) == 1
    assert "--affinity-run" in capsys.readouterr().err
    args = ["pseudo", str(cam_run), "--split", "train", "--refine", "affinity", "--affinity-run", str(aff)]
    assert main([*args, "--quiet"]) == 0
    for i in base.ids:
        label = read_label_png(cam_run / "pseudo/train" / f"{i}.png")
        assert label.shape == (64, 64)
        allowed = {0} | {int(c) + 1 for c in np.flatnonzero(base.labels(i))}
        assert set(np.unique(label).tolist()) <= allowed  # only the image's classes survive the walk


def test_affinitynet_psa_parameter_groups():
    """PSA's 1 / 2 / 10 (/ 20) lr groups, no weight decay on biases (methods.md 5.7, shared with SC-CAM)."""
    from wsss.core.config import load_config
    from wsss.engine.trainer import build_optimizer
    from wsss.methods import build_method

    cfg = load_config(REPO / "configs/affinity/synthetic_cpu.yaml", [f"model.backbone_kwargs={TINY_CNN}"])
    net = build_method(cfg, num_classes=3)
    opt = build_optimizer(net, cfg)
    groups = {g["name"]: g for g in opt.param_groups}
    mult = {n: g["lr"] / cfg.train.lr for n, g in groups.items()}  # (PSA's head convs have no bias)
    assert mult == pytest.approx({"backbone": 1.0, "backbone_bias": 2.0, "head": 10.0})
    assert groups["backbone_bias"]["weight_decay"] == 0.0
    assert groups["head"]["weight_decay"] == groups["backbone"]["weight_decay"] == cfg.train.weight_decay
    assert {id(p) for p in net.head.parameters()} == {id(p) for p in groups["head"]["params"]}
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(p.requires_grad for p in net.parameters())
