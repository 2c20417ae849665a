"""AffinityNet (PSA, docs/methods/affinitynet.md#train-aff, #random-walk): the random-walk label at any walk
scale, its parameter groups, and train -> `wsss pseudo --refine affinity`. (The per-image affinity operations:
tests/cam/test_affinity.py; the pseudo-label target of the training data: tests/data/test_voc.py.)"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, tiny_overrides
from wsss.cli import main
from wsss.data import VOCDataset
from wsss.utils.io import load_cam_of, read_label_png

TINY_CNN = "{channels: [8, 16, 16, 32], stem_width: 8}"


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_random_walk_label_at_any_walk_scale(scale, monkeypatch):
    """``AffinityNet.random_walk_label``: a two-colour image whose affinity features follow the colour;
    a confident CAM band on each side. The label comes back at the image size (20x28, not multiples of the
    stride) with each side walked to its own class, on the 1x grid and on the 2x grid (``rw_scale``)."""
    from wsss.core.config import load_config
    from wsss.methods import build_method, placeholder_classes

    cfg = load_config(
        REPO / "configs/affinitynet/synthetic_cpu.yaml",
        [f"model.backbone_kwargs={TINY_CNN}", "options.rw_logt=4", f"options.rw_scale={scale}"],
    )
    net = build_method(cfg, placeholder_classes(3)).eval()
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


def test_random_walk_label_alpha_sets_the_background_level():
    """``random_walk_label(alpha=)`` (``wsss pseudo --refine affinity --levels``): a CAM of 0.5 everywhere is
    its class with PSA's alpha 16 (background at 0.12) and the level 0.3's alpha, background with 0.7's."""
    from wsss.cam.affinity import alpha_for_level
    from wsss.core.config import load_config
    from wsss.methods import build_method, placeholder_classes

    cfg = load_config(REPO / "configs/affinitynet/synthetic_cpu.yaml", [f"model.backbone_kwargs={TINY_CNN}"])
    net = build_method(cfg, placeholder_classes(2)).eval()
    image = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    cam = np.full((1, 16, 24), 0.5, np.float32)
    with torch.no_grad():
        assert (net.random_walk_label(image, cam, np.array([1.0])) == 1).all()
        assert (net.random_walk_label(image, cam, np.array([1.0]), alpha_for_level(0.3)) == 1).all()
        assert (net.random_walk_label(image, cam, np.array([1.0]), alpha_for_level(0.7)) == 0).all()


@pytest.fixture(scope="module")
def cam_run(synth_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("affcam") / "cam"
    over = tiny_overrides(synth_root, run, **{"train.max_iters": 3, "train.eval_iters": 100})
    assert main(["train", str(REPO / "configs/cam/synthetic_cpu.yaml"), *over, "--quiet", "--skip-check"]) == 0
    assert main(["cam", str(run), "--split", "train", "--quiet"]) == 0
    # PSA's seeds (affinitynet.md#psa-seeds)
    assert main(["pseudo", str(run), "--split", "train", "--refine", "psa", "--quiet"]) == 0
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
        f"data.root={synth_root}",
        f"run.dir={aff}",
        f"data.pseudo_dir={seeds}",
        "data.crop_size=64",
        "data.num_workers=0",
        f"model.backbone_kwargs={TINY_CNN}",
        "train.batch_size=4",
        "train.max_iters=3",
        "train.ckpt_iters=3",
        "options.aux_dim=8",
        "options.final_dim=8",
        "options.out_dim=16",
    ]
    assert main(["train", str(REPO / "configs/affinitynet/synthetic_cpu.yaml"), *over, "--quiet", "--skip-check"]) == 0
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

    def foreground() -> float:
        return float(np.mean([(read_label_png(cam_run / "pseudo/train" / f"{i}.png") > 0).mean() for i in base.ids]))

    # `--levels`: the walk's background crosses the CAM at the high level (alpha_for_level), not PSA's 0.12
    fractions = {}
    for level in ("0.02", "0.98"):
        assert main([*args, "--levels", f"{level}/{level}", "--overwrite", "--quiet"]) == 0
        fractions[level] = foreground()
    assert fractions["0.02"] > fractions["0.98"]
    assert fractions["0.98"] < 0.05  # almost no CAM reaches 0.98 of its image's peak


def test_pseudo_refine_psa_levels_give_the_alphas_of_those_cam_values(cam_run, synth_root, tmp_path):
    """`wsss pseudo --refine psa --levels H/L`: the seeds of PSA's two CRFs with the alphas whose background
    crosses the CAM at H and L (``alpha_for_level``), not the configured 4 / 32. ``--levels H/L`` is shorthand for
    the words ``cam.high_thre=H cam.low_thre=L``, merged over a copy of the run's config: the saved
    config.yaml stays as it was."""
    from wsss.cam.affinity import alpha_for_level
    from wsss.runs.jobs import run_pseudo
    from wsss.runs.refiners import psa_label
    from wsss.runs.run import load_run

    base = VOCDataset(synth_root, "train")
    run_dir = tmp_path / "run"  # a copy: the module's cam_run keeps its PSA seeds for the other test
    shutil.copytree(cam_run, run_dir, ignore=shutil.ignore_patterns("pseudo"))
    saved = (run_dir / "config.yaml").read_text()
    own = load_run(run_dir).cfg.cam
    run = load_run(run_dir, overrides=["cam.high_thre=0.6", "cam.low_thre=0.3"])
    assert (run.cfg.cam.high_thre, run.cfg.cam.low_thre) == (0.6, 0.3) != (own.high_thre, own.low_thre)
    out = run_pseudo(run, "train", refine="psa", progress=False)
    assert (run_dir / "config.yaml").read_text() == saved
    moved = 0
    for i in base.ids:
        cam = load_cam_of(run_dir / "cams/train", i, base.num_classes - 1)
        image, labels = base.load_image(i), base.labels(i)
        want = psa_label(image, cam, labels, (alpha_for_level(0.6), alpha_for_level(0.3)), 1)
        np.testing.assert_array_equal(read_label_png(out / f"{i}.png"), want)
        moved += int((want != psa_label(image, cam, labels, (4.0, 32.0), 1)).sum())
    assert moved > 0  # the levels changed the seeds: the test tells the two alphas apart


def test_affinitynet_psa_parameter_groups():
    """PSA's 1 / 2 / 10 (/ 20) lr groups, no weight decay on biases (docs/methods/affinitynet.md#train-aff,
    shared with SC-CAM)."""
    from wsss.core.config import load_config
    from wsss.engine.trainer import build_optimizer
    from wsss.methods import build_method, placeholder_classes

    cfg = load_config(REPO / "configs/affinitynet/synthetic_cpu.yaml", [f"model.backbone_kwargs={TINY_CNN}"])
    net = build_method(cfg, placeholder_classes(3))
    opt = build_optimizer(net, cfg)
    groups = {g["name"]: g for g in opt.param_groups}
    mult = {n: g["lr"] / cfg.train.lr for n, g in groups.items()}  # (PSA's head convs have no bias)
    assert mult == pytest.approx({"backbone": 1.0, "backbone_bias": 2.0, "head": 10.0})
    assert groups["backbone_bias"]["weight_decay"] == 0.0
    assert groups["head"]["weight_decay"] == groups["backbone"]["weight_decay"] == cfg.train.weight_decay
    assert {id(p) for p in net.head.parameters()} == {id(p) for p in groups["head"]["params"]}
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(p.requires_grad for p in net.parameters())
