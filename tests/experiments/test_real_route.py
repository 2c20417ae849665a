"""experiments/real_route.py on a tiny setting (synthetic images, the tiny ViT of the CAM preset): every step of
the route runs through the CLI and its scores land in the JSON; a rerun redoes nothing it finished."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from conftest import REPO, tiny_overrides
from experiments import real_route

SEG_TINY = [
    "model.backbone_kwargs={channels: [8, 16, 16, 32], stem_width: 8}",
    "data.num_workers=0",
    "data.crop_size=48",
    "train.max_iters=4",
    "train.log_iters=2",
    "train.eval_iters=100",
    "train.ckpt_iters=4",
]


AFF_TINY = [
    "model.backbone_kwargs={channels: [8, 16, 16, 32], stem_width: 8}",
    "data.crop_size=64",
    "train.batch_size=4",
    "train.max_iters=3",
    "train.ckpt_iters=3",
    "options.aux_dim=8",
    "options.final_dim=8",
    "options.out_dim=16",
    "options.rw_logt=2",
]


def test_real_route_tiny(tmp_path, synth_root, monkeypatch):
    monkeypatch.setattr(real_route, "IN_PROCESS", True)  # the same commands, without a start-up each
    out = tmp_path / "route"
    tiny = [o for o in tiny_overrides(synth_root, out) if not o.startswith(("data.root=", "run.dir="))]
    argv = [str(REPO / "configs/cam/synthetic_cpu.yaml"), "--data-root", str(synth_root), "--out", str(out),
            "--refine", "par", "crf", "affinity", "--seg", str(REPO / "configs/deeplab/synthetic_cpu.yaml"),
            "--affinity", str(REPO / "configs/affinitynet/synthetic_cpu.yaml"), "--aff-set", *AFF_TINY,
            "--seg-rounds", "2", "--cam-scales", "1.0,0.5",
            "--set", *tiny, "--seg-set", *SEG_TINY, "--json", str(tmp_path / "r.json")]  # fmt: skip
    res = real_route.main(argv)
    assert res["train"]["iterations"] == 6 and res["seg_train"]["iterations"] == 4 and res["train"]["s_per_iter"] > 0
    assert res["seeds"]["miou"] == max(res["seeds"]["miou"], res["seeds"]["config_miou"] or 0)
    assert set(res["pseudo"]) == {"par", "crf", "affinity"} and all(0 <= v <= 100 for v in res["pseudo"].values())
    assert (out / "cls/pseudo_par/train").is_dir() and (out / "cls/pseudo_crf/train").is_dir()
    # PSA's walk: the seeds at the run's own pair (255 between), the affinity network on them, the walk at the level
    cfg_pair = json.loads((out / "cls/bkg_sweep/train.json").read_text())["config_pair"]
    assert res["affinity"]["seed_levels"] == cfg_pair and 0 <= res["affinity"]["seeds"] <= 100
    assert res["affinity"]["train"]["iterations"] == 3
    assert str(out / "cls/pseudo_psa_seeds/train") in (out / "aff/config.yaml").read_text()
    log = (out / "route.log").read_text()
    assert f"--refine psa --levels {cfg_pair[0]:g}/{cfg_pair[1]:g}" in log
    assert f"--refine affinity --levels {res['seeds']['level']:g}/{res['seeds']['level']:g} --affinity-run" in log
    assert 0 <= res["seg_val"]["miou"] <= 100 and res["seg_val"]["refine"] == "par"
    # the val predictions again, each photo's classes those the route's own classifier finds (--tags-from)
    assert 0 <= res["seg_val"]["tagged"] <= 100 and (out / "seg/predictions_tagged/val").is_dir()
    assert 0 <= res["seg_val"]["tagged_soft"] <= 100 and (out / "seg/predictions_tagged_soft/val").is_dir()
    assert f"--tags-from {out / 'cls'}" in log
    assert json.loads((tmp_path / "r.json").read_text()) == res
    # multi-scale CAMs: both `wsss cam` calls get the scales
    assert log.count("--scales 1.0,0.5") == 2
    # round 2 trains afresh on round 1's predictions of the train photos, scored on train and val
    first, second = res["seg_rounds"]
    assert first["labels"] == str(out / "cls/pseudo_par/train") and first["val"] == res["seg_val"]["miou"]
    assert (
        second["labels"] == str(out / "seg/predictions_crf_labelled/train") and 0 <= first["train_predictions"] <= 100
    )
    assert "train_predictions" not in second and second["train"]["iterations"] == 4 and 0 <= second["val"] <= 100
    assert str(out / "seg/predictions_crf_labelled/train") in (out / "seg_r2/config.yaml").read_text()
    assert (out / "seg_r2/predictions/val").is_dir() and not (out / "seg_r2/predictions_crf_labelled").exists()
    stamp = (out / "cls/checkpoints/last.pt").stat().st_mtime_ns
    assert real_route.main(argv) == res  # finished steps are reused, the scores are the same
    assert (out / "cls/checkpoints/last.pt").stat().st_mtime_ns == stamp


def test_real_route_seg_band(tmp_path, synth_root, monkeypatch):
    """``--seg-band``: the DeepLab stage learns from the first refiner's labels at the run's own pair, whose
    undecided pixels are 255, not from the one-level labels (which decide every pixel)."""
    monkeypatch.setattr(real_route, "IN_PROCESS", True)
    out = tmp_path / "route"
    tiny = [o for o in tiny_overrides(synth_root, out) if not o.startswith(("data.root=", "run.dir="))]
    argv = [str(REPO / "configs/cam/synthetic_cpu.yaml"), "--data-root", str(synth_root), "--out", str(out),
            "--refine", "par", "--seg-band", "--seg", str(REPO / "configs/deeplab/synthetic_cpu.yaml"),
            "--set", *tiny, "--seg-set", *SEG_TINY]  # fmt: skip
    res = real_route.main(argv)
    high, low = json.loads((out / "cls/bkg_sweep/train.json").read_text())["config_pair"]
    assert high > low and f"--refine par --levels {high:g}/{low:g}" in (out / "route.log").read_text()
    assert set(res["pseudo"]) == {"par", "par_band"} and 0 <= res["pseudo"]["par_band"] <= 100
    band, level = out / "cls/pseudo_par_band/train", out / "cls/pseudo_par/train"
    assert res["seg_rounds"][0]["labels"] == str(band) and str(band) in (out / "seg/config.yaml").read_text()
    undecided = [(np.asarray(Image.open(p)) == 255).mean() for p in sorted(band.glob("*.png"))]
    assert len(undecided) == len(list(level.glob("*.png"))) > 0 and max(undecided) > 0
    assert all((np.asarray(Image.open(p)) != 255).all() for p in level.glob("*.png"))


def test_real_route_seg_from_classifier(tmp_path, synth_root, monkeypatch):
    """``--seg-from-classifier``: the DeepLab stage's run names the route's classifier as its weights and starts
    from its backbone (a classifier on the seg preset's tiny CNN, so the two share one)."""
    monkeypatch.setattr(real_route, "IN_PROCESS", True)
    out = tmp_path / "route"
    tiny = [o for o in tiny_overrides(synth_root, out) if not o.startswith(("data.root=", "run.dir=", "model."))]
    cnn = ["model.backbone=resnet18", SEG_TINY[0], "model.output_stride=8"]
    argv = [str(REPO / "configs/cam/synthetic_cpu.yaml"), "--data-root", str(synth_root), "--out", str(out),
            "--refine", "par", "--seg", str(REPO / "configs/deeplab/synthetic_cpu.yaml"), "--seg-from-classifier",
            "--set", *tiny, *cnn, "--seg-set", *SEG_TINY]  # fmt: skip
    res = real_route.main(argv)
    assert 0 <= res["seg_val"]["miou"] <= 100
    assert f"model.pretrained={out / 'cls'}" in (out / "route.log").read_text()
    assert f"pretrained: {out / 'cls'}" in (out / "seg/config.yaml").read_text()
    assert f"pretrained weights {out / 'cls'} = {out / 'cls/checkpoints/last.pt'}" in (out / "route.log").read_text()


def test_real_route_seg_ensemble(tmp_path, synth_root, monkeypatch):
    """``--seg-ensemble 3``: two more DeepLab stages on round 1's labels, seeds S + 3 and S + 6, and round 1's
    stage ensembled with them, scored plain, tagged, and tagged with the CRF."""
    monkeypatch.setattr(real_route, "IN_PROCESS", True)
    out = tmp_path / "route"
    tiny = [o for o in tiny_overrides(synth_root, out) if not o.startswith(("data.root=", "run.dir="))]
    argv = [str(REPO / "configs/cam/synthetic_cpu.yaml"), "--data-root", str(synth_root), "--out", str(out),
            "--refine", "par", "--seg", str(REPO / "configs/deeplab/synthetic_cpu.yaml"), "--seg-ensemble", "3",
            "--set", *tiny, "--seg-set", *SEG_TINY, "run.seed=5"]  # fmt: skip
    res = real_route.main(argv)
    ens = res["seg_ensemble"]
    assert ens["members"] == [str(out / "seg"), str(out / "seg_m1"), str(out / "seg_m2")]
    assert [t["iterations"] for t in ens["train"]] == [4, 4]
    for k, seed in ((1, 8), (2, 11)):
        cfg = (out / f"seg_m{k}/config.yaml").read_text()
        assert f"seed: {seed}," in cfg and str(out / "cls/pseudo_par/train") in cfg
    assert set(ens["val"]) == {"miou", "tagged", "crf_tagged"} and all(0 <= v <= 100 for v in ens["val"].values())
    for folder in ("predictions_ens3", "predictions_tagged_ens3", "predictions_crf_tagged_ens3"):
        assert len(list((out / "seg" / folder / "val").glob("*.png"))) == 8
    log = (out / "route.log").read_text()
    assert f"--ensemble {out / 'seg_m1'} {out / 'seg_m2'} --crf --tags-from {out / 'cls'}" in log
