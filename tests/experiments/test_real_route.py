"""experiments/real_route.py on a tiny setting (synthetic images, the tiny ViT of the CAM preset): every step of
the route is a call of the package's route steps (``wsss.pipelines.route``, those ``wsss route`` runs) in this process,
logged as the ``wsss`` command it stands for, and its scores land in the JSON; a rerun redoes nothing it finished."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, tiny_overrides
from experiments import real_route, route_folds, route_steps
from wsss.data import VOCDataset
from wsss.evaluation import evaluate
from wsss.utils.io import save_label_png

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


def test_real_route_tiny(tmp_path, synth_root):
    out = tmp_path / "route"
    tiny = [o for o in tiny_overrides(synth_root, out) if not o.startswith(("data.root=", "run.dir="))]
    argv = [
        str(REPO / "configs/cam/synthetic_cpu.yaml"),
        "--data-root",
        str(synth_root),
        "--out",
        str(out),
        "--refine",
        "par",
        "crf",
        "affinity",
        "--seg",
        str(REPO / "configs/deeplab/synthetic_cpu.yaml"),
        "--affinity",
        str(REPO / "configs/affinitynet/synthetic_cpu.yaml"),
        "--aff-set",
        *AFF_TINY,
        "--seg-rounds",
        "2",
        "--cam-scales",
        "1.0,0.5",
        *tiny,
        "--seg-set",
        *SEG_TINY,
        "--json",
        str(tmp_path / "r.json"),
    ]
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


def test_real_route_seg_band(tmp_path, synth_root):
    """``--seg-band``: the DeepLab stage learns from the first refiner's labels at the run's own pair, whose
    undecided pixels are 255, not from the one-level labels (which decide every pixel)."""
    out = tmp_path / "route"
    tiny = [o for o in tiny_overrides(synth_root, out) if not o.startswith(("data.root=", "run.dir="))]
    argv = [
        str(REPO / "configs/cam/synthetic_cpu.yaml"),
        "--data-root",
        str(synth_root),
        "--out",
        str(out),
        "--refine",
        "par",
        "--seg-band",
        "--seg",
        str(REPO / "configs/deeplab/synthetic_cpu.yaml"),
        *tiny,
        "--seg-set",
        *SEG_TINY,
    ]
    res = real_route.main(argv)
    high, low = json.loads((out / "cls/bkg_sweep/train.json").read_text())["config_pair"]
    assert high > low and f"--refine par --levels {high:g}/{low:g}" in (out / "route.log").read_text()
    assert set(res["pseudo"]) == {"par", "par_band"} and 0 <= res["pseudo"]["par_band"] <= 100
    band, level = out / "cls/pseudo_par_band/train", out / "cls/pseudo_par/train"
    assert res["seg_rounds"][0]["labels"] == str(band) and str(band) in (out / "seg/config.yaml").read_text()
    undecided = [(np.asarray(Image.open(p)) == 255).mean() for p in sorted(band.glob("*.png"))]
    assert len(undecided) == len(list(level.glob("*.png"))) > 0 and max(undecided) > 0
    assert all((np.asarray(Image.open(p)) != 255).all() for p in level.glob("*.png"))


def test_real_route_own_level_and_labels_that_abstain(tmp_path, synth_root):
    """``--level own --abstain``: the stage learns from the labels at the preset's own level (``wsss route``'s), a
    second stage from ``--refine agree``'s at that level (255 where the refiners disagree), each scored on val plain
    and with the CRF."""
    import yaml

    out = tmp_path / "route"
    tiny = [o for o in tiny_overrides(synth_root, out) if not o.startswith(("data.root=", "run.dir="))]
    argv = [
        str(REPO / "configs/cam/synthetic_cpu.yaml"),
        "--data-root",
        str(synth_root),
        "--out",
        str(out),
        "--refine",
        "par",
        "--level",
        "own",
        "--abstain",
        "--seg",
        str(REPO / "configs/deeplab/synthetic_cpu.yaml"),
        *tiny,
        "--seg-set",
        *SEG_TINY,
        "--variant",
        "gce",
        "options.seg_loss=gce",
    ]
    res = real_route.main(argv)
    own = float(yaml.safe_load((out / "cls/config.yaml").read_text())["cam"]["bkg_thre"])
    log = (out / "route.log").read_text()
    assert f"--refine par --levels {own:g}/{own:g}" in log and f"--refine agree --levels {own:g}/{own:g}" in log
    labels, agreed = out / "cls/pseudo_par_own_level/train", out / "cls/pseudo_agree_own_level/train"
    assert res["seg_rounds"][0]["labels"] == str(labels) and res["seeds"]["stage_level"] == "own"
    assert str(agreed) in (out / "seg_abstain/config.yaml").read_text()
    ab = res["abstain"]
    assert 0 < ab["pseudo"]["ignored_share"] < 100 and 0 <= ab["pseudo"]["pseudo_miou"] <= 100
    assert ab["train"]["iterations"] == 4 and 0 <= ab["val"] <= 100 and 0 <= ab["val_crf"] <= 100
    assert "steps" not in res  # the gains are the table's (experiments/candidates_table.py), not stored twice
    # --variant NAME WORDS: the stage on round 1's labels with the words after --seg-set's
    gce = res["variants"]["gce"]
    assert gce["labels"] == str(labels) and 0 <= gce["val"] <= 100 and 0 <= gce["val_crf"] <= 100
    variant_cfg = yaml.safe_load((out / "seg_gce/config.yaml").read_text())
    assert variant_cfg["options"]["seg_loss"] == "gce" and variant_cfg["data"]["pseudo_dir"] == str(labels)
    with pytest.raises(SystemExit):  # --steps scores the sweep's level against the preset's: not with --level own
        real_route.main([*argv, "--steps"])


def test_real_route_seg_from_classifier(tmp_path, synth_root):
    """``--seg-from-classifier``: the DeepLab stage's run names the route's classifier as its weights and starts
    from its backbone (a classifier on the seg preset's tiny CNN, so the two share one)."""
    out = tmp_path / "route"
    tiny = [o for o in tiny_overrides(synth_root, out) if not o.startswith(("data.root=", "run.dir=", "model."))]
    cnn = ["model.backbone=resnet18", SEG_TINY[0], "model.output_stride=8"]
    argv = [
        str(REPO / "configs/cam/synthetic_cpu.yaml"),
        "--data-root",
        str(synth_root),
        "--out",
        str(out),
        "--refine",
        "par",
        "--seg",
        str(REPO / "configs/deeplab/synthetic_cpu.yaml"),
        "--seg-from-classifier",
        *tiny,
        *cnn,
        "--seg-set",
        *SEG_TINY,
    ]
    res = real_route.main(argv)
    assert 0 <= res["seg_val"]["miou"] <= 100
    assert f"model.pretrained={out / 'cls'}" in (out / "route.log").read_text()
    assert f"pretrained: {out / 'cls'}" in (out / "seg/config.yaml").read_text()
    assert f"pretrained weights {out / 'cls'} = {out / 'cls/checkpoints/last.pt'}" in (out / "route.log").read_text()


def test_real_route_seg_ensemble(tmp_path, synth_root):
    """``--seg-ensemble 3``: two more DeepLab stages on round 1's labels, seeds S + 3 and S + 6, and round 1's
    stage ensembled with them, scored plain, tagged, and tagged with the CRF."""
    out = tmp_path / "route"
    tiny = [o for o in tiny_overrides(synth_root, out) if not o.startswith(("data.root=", "run.dir="))]
    argv = [
        str(REPO / "configs/cam/synthetic_cpu.yaml"),
        "--data-root",
        str(synth_root),
        "--out",
        str(out),
        "--refine",
        "par",
        "--seg",
        str(REPO / "configs/deeplab/synthetic_cpu.yaml"),
        "--seg-ensemble",
        "3",
        *tiny,
        "--seg-set",
        *SEG_TINY,
        "run.seed=5",
    ]
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


def test_real_route_masks(tmp_path, synth_root):
    """``--masks K``: a view in which only the first K masked train photos keep their mask; the sweep
    scores the seeds on them; the DeepLab stage on them alone (as many iterations as the others), on the pseudo
    labels, and on both at each weight; the ceiling on every train mask."""
    out = tmp_path / "route"
    tiny = [o for o in tiny_overrides(synth_root, out) if not o.startswith(("data.root=", "run.dir="))]
    argv = [
        str(REPO / "configs/cam/synthetic_cpu.yaml"),
        "--data-root",
        str(synth_root),
        "--out",
        str(out),
        "--masks",
        "9",
        "--mask-weights",
        "1",
        "3",
        "1e39",
        "--seg",
        str(REPO / "configs/deeplab/synthetic_cpu.yaml"),
        "--mask-classifier",
        *tiny,
        "--seg-set",
        *SEG_TINY,
        "--json",
        str(tmp_path / "m.json"),
    ]
    res = real_route.main(argv)
    train_ids = (synth_root / "ImageSets/Segmentation/train.txt").read_text().split()
    exp, row = res["masks"], res["masks"]["arms"]["9"]
    assert row["ids"] == train_ids[:9] and exp["stage_iterations"] == 4 and exp["weights"] == [1.0, 3.0, 1e39]
    # a weight past float32's range makes the loss infinite at once: the stage diverges, is recorded, the rest runs
    assert row["c_w1e+39"] == {"diverged": row["c_w1e+39"]["diverged"], "run_dir": str(out / "seg_c_m9_w1e+39")}
    assert row["c_w1e+39"]["diverged"].startswith("non-finite loss at iteration 0")
    view = out / "masks_9"
    assert sorted(p.stem for p in (view / "SegmentationClass").glob("*.png")) == sorted(
        train_ids[:9] + (synth_root / "ImageSets/Segmentation/val.txt").read_text().split()
    )
    assert json.loads((out / "cls/bkg_sweep/train_masks_9.json").read_text())["n_images"] == 9  # the K masks only
    level = row["level"]
    assert f"data.pseudo_dir={out / f'cls/pseudo_par_L{level:g}/train'}" in (out / "route.log").read_text()
    # (a): the K photos alone; (c): every train photo, the masked ones at their weight; the ceiling: every mask
    a = (out / "seg_a_m9/config.yaml").read_text()
    assert "train_split: train_masked" in a and "true_masks: auto" in a and "max_iters: 4" in a
    assert "true_mask_weight: 3.0" in (out / "seg_c_m9_w3/config.yaml").read_text()
    assert (
        "targets: 9 of the 24 photos of split train train on their own masks (weight 3)"
        in (out / "route.log").read_text()
    )
    for arm in ("b", "c_w1", "c_w3"):
        assert set(row[arm]) == {"train", "val", "val_crf_tagged"}
    assert set(row["a"]) == {"train", "val", "val_crf"} and row["a"]["train"]["iterations"] == 4
    assert set(res["masks"]["arms"]["ceiling"]) == {"train", "val", "val_crf", "val_crf_tagged"}
    # (d): a classifier whose CAMs learnt the K masks' pixels, its own level and labels, the stage named by it
    log = (out / "route.log").read_text()
    assert "the CAMs learn the pixels of 9 of the 24 photos of split train" in log
    level_d = row["d"]["level"]
    assert f"data.pseudo_dir={out / f'cls_m9/pseudo_par_L{level_d:g}/train'}" in log
    assert f"--tags-from {out / 'cls_m9'}" in log
    assert "true_mask_weight: 1.0" in (out / "seg_d_m9/config.yaml").read_text()
    assert set(row["d"]) == {"classifier", "level", "pseudo_all_masks", "train", "val", "val_crf_tagged"}
    assert json.loads((out / "cls_m9/bkg_sweep/train_masks_9.json").read_text())["n_images"] == 9
    assert json.loads((tmp_path / "m.json").read_text()) == res
    assert real_route.main(argv) == res  # a rerun reuses every stage


def test_real_route_folds(tmp_path, synth_root, capsys):
    """``--folds 2``: the route on each fold's view (every photo in exactly one fold's val, the others
    train) and each figure's mean and range over the folds."""
    out = tmp_path / "route"
    tiny = [o for o in tiny_overrides(synth_root, out) if not o.startswith(("data.root=", "run.dir="))]
    argv = [
        str(REPO / "configs/cam/synthetic_cpu.yaml"),
        "--data-root",
        str(synth_root),
        "--out",
        str(out),
        "--folds",
        "2",
        "--refine",
        "par",
        "--seg",
        "",
        *tiny,
    ]
    res = real_route.main(argv)
    vals = [r["fold"]["val_ids"] for r in res["folds"]]
    every = sorted(
        {
            *(synth_root / "ImageSets/Segmentation/train.txt").read_text().split(),
            *(synth_root / "ImageSets/Segmentation/val.txt").read_text().split(),
        }
    )
    assert sorted(vals[0] + vals[1]) == every and not set(vals[0]) & set(vals[1])
    for f in (0, 1):
        view = out / f"fold{f}/data"
        assert (view / "ImageSets/Segmentation/val.txt").read_text().split() == vals[f]
        cfg = (out / f"fold{f}/cls/config.yaml").read_text()
        assert str(view) in cfg and f"seed: {f}," in cfg  # one seed per fold, the fold's index
    pseudo = res["summary"]["pseudo.par"]
    assert pseudo["values"] == [r["pseudo"]["par"] for r in res["folds"]]
    assert pseudo["min"] <= pseudo["mean"] <= pseudo["max"] and pseudo["sd"] >= 0
    # a choice's gain fold by fold: a second run of other settings against the first's JSON (here the same run
    # again, reused: every gain 0)
    first = tmp_path / "first.json"
    first.write_text(json.dumps(res))
    again = real_route.main([*argv, "--gain-over", str(first)])
    assert again["gain_over"]["summary"]["pseudo.par"]["values"] == [0.0, 0.0]
    # a --gain-over run with fewer folds: the gains over those, said; one of other folds: refused before any training
    first.write_text(json.dumps({**res, "folds": res["folds"][:1]}))
    again = real_route.main([*argv, "--gain-over", str(first)])
    assert again["gain_over"]["summary"]["pseudo.par"]["values"] == [0.0] and again["gain_over"]["folds"] == 1
    assert f"warning: {first} has 1 of 2 folds" in capsys.readouterr().err
    first.write_text(json.dumps({**res, "folds": res["folds"][::-1]}))
    with pytest.raises(SystemExit, match="its folds are not this run's"):
        real_route.main([*argv, "--out", str(tmp_path / "elsewhere"), "--gain-over", str(first)])
    assert not (tmp_path / "elsewhere").exists()


def test_real_route_folds_reuse(tmp_path, synth_root, capsys):
    """``--reuse``: the finished folds a JSON holds are taken, not run again, when their folders are gone
    (another machine, a lost scratch disk); a fold of other settings or other photos is refused before any training."""
    out = tmp_path / "route"
    tiny = [o for o in tiny_overrides(synth_root, out) if not o.startswith(("data.root=", "run.dir="))]
    argv = [
        str(REPO / "configs/cam/synthetic_cpu.yaml"),
        "--data-root",
        str(synth_root),
        "--folds",
        "2",
        "--refine",
        "par",
        "--seg",
        "",
        *tiny,
    ]
    # fold 1 run alone, as the --folds run would run it (the fold's index its seed)
    one = real_route.main(
        [
            str(REPO / "configs/cam/synthetic_cpu.yaml"),
            "--data-root",
            str(synth_root),
            "--out",
            str(tmp_path / "one"),
            "--fold",
            "1/2",
            "--refine",
            "par",
            "--seg",
            "",
            *tiny,
            "run.seed=1",
            "--seg-set",
            "run.seed=1",
        ]
    )
    whole = real_route.main([*argv, "--out", str(out)])
    assert whole["folds"][1]["pseudo"] == one["pseudo"]  # the --fold 1/2 route is the --folds run's fold 1
    (tmp_path / "whole.json").write_text(json.dumps({**whole, "folds": whole["folds"][:1]}))
    (tmp_path / "one.json").write_text(json.dumps(one))
    again = real_route.main(
        [*argv, "--out", str(tmp_path / "gone"), "--reuse", str(tmp_path / "whole.json"), str(tmp_path / "one.json")]
    )
    assert [r["pseudo"] for r in again["folds"]] == [r["pseudo"] for r in whole["folds"]]
    assert again["summary"]["pseudo.par"] == whole["summary"]["pseudo.par"]
    assert not (tmp_path / "gone/fold0").exists() and not (tmp_path / "gone/fold1/cls").exists()  # nothing trained
    assert "fold 1/2: taken from" in capsys.readouterr().err
    # --kept-only gathers the finished folds and runs none: here fold 0 alone (fold 1 in no JSON given)
    kept = real_route.main(
        [*argv, "--out", str(tmp_path / "gone"), "--reuse", str(tmp_path / "whole.json"), "--kept-only"]
    )
    assert [r["pseudo"] for r in kept["folds"]] == [whole["folds"][0]["pseudo"]]
    assert "fold 1/2: in none of --reuse's JSONs" in capsys.readouterr().err and not (tmp_path / "gone/fold1").exists()
    # an entry from before the settings were recorded: taken, with a warning
    (tmp_path / "old.json").write_text(json.dumps({k: v for k, v in one.items() if k != "settings"}))
    real_route.main(
        [*argv, "--out", str(tmp_path / "gone"), "--reuse", str(tmp_path / "whole.json"), str(tmp_path / "old.json")]
    )
    assert "fold 1 records no settings" in capsys.readouterr().err
    # a fold run elsewhere (on a GPU, other threads, loader workers): the same command's, taken, its settings as run
    where = ["run.device=cuda", "run.threads=8", "data.num_workers=4"]
    settings = one["settings"]
    seg_where = ["data.num_workers=4", "infer.crf_workers=8"]
    gpu = {
        **one,
        "settings": {
            **settings,
            "overrides": [*settings["overrides"], *where],
            "seg_set": [*settings["seg_set"], *seg_where],
        },
    }
    (tmp_path / "gpu.json").write_text(json.dumps(gpu))
    mixed = real_route.main(
        [*argv, "--out", str(tmp_path / "gone"), "--reuse", str(tmp_path / "whole.json"), str(tmp_path / "gpu.json")]
    )
    kept = mixed["folds"][1]
    assert set(where) <= set(kept["settings"]["overrides"]) and kept["pseudo"] == one["pseudo"]
    (tmp_path / "gpu.json").write_text(
        json.dumps(
            {**gpu, "settings": {**gpu["settings"], "overrides": [*gpu["settings"]["overrides"], "train.epochs=3"]}}
        )
    )
    with pytest.raises(SystemExit, match=r"fold 1 was run with other settings \(overrides\)"):
        real_route.main([*argv, "--out", str(tmp_path / "x"), "--reuse", str(tmp_path / "gpu.json")])
    # refused before any training: other settings (the classifier's seed), other photos, one fold twice
    with pytest.raises(SystemExit, match=r"fold 0 was run with other settings \(overrides\)"):
        real_route.main([*argv, "run.seed=5", "--out", str(tmp_path / "x"), "--reuse", str(tmp_path / "whole.json")])
    with pytest.raises(SystemExit, match="is not this run's"):
        real_route.main(
            [*argv[:4], "3", *argv[5:], "--out", str(tmp_path / "x"), "--reuse", str(tmp_path / "one.json")]
        )
    with pytest.raises(SystemExit, match="fold 0 is in"):
        real_route.main([*argv, "--out", str(tmp_path / "x"), "--reuse", *[str(tmp_path / "whole.json")] * 2])
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("option", ["--reuse", "--gain-over"])
def test_another_runs_json_that_cannot_serve_is_refused_naming_the_file(tmp_path, synth_root, option):
    """A mistyped path, a file that is not JSON and a JSON of another kind are each said as what they are, in one
    line naming the file, before any training."""
    argv = [
        str(REPO / "configs/cam/synthetic_cpu.yaml"),
        "--data-root",
        str(synth_root),
        "--folds",
        "2",
        "--refine",
        "par",
        "--seg",
        "",
        "--out",
        str(tmp_path / "x"),
        option,
    ]
    (tmp_path / "text.json").write_text("fold 0: 21.5\n")
    (tmp_path / "list.json").write_text("[1, 2]")
    for name, said in [
        ("missing.json", "cannot be read (No such file or directory)"),
        ("text.json", "not JSON ("),
        ("list.json", "not the JSON of a --folds"),
    ]:
        with pytest.raises(SystemExit) as refused:
            real_route.main([*argv, str(tmp_path / name)])
        assert str(refused.value).startswith(f"{tmp_path / name}: {said}") and "\n" not in str(refused.value)
    assert not (tmp_path / "x").exists()


def test_a_kept_fold_gets_the_floor_it_lacks(tmp_path, synth_root):
    """A fold from before ``floor`` was measured gets it from its val photos' masks, as a fold run now would."""
    import argparse

    one = argparse.Namespace(
        fold="0/2", out=str(tmp_path / "fold0"), data_root=str(synth_root), val_split="val", steps=True
    )
    entry = route_folds._kept_fold(one, {"pseudo": {"par": 1.0}}, tmp_path / "old.json")
    view = route_folds.fold_view(str(synth_root), "0/2", tmp_path / "check")["view"]
    assert entry["floor"] == route_steps.background_only_floor(view, "val") and entry["pseudo"] == {"par": 1.0}
    assert entry["reused_from"] == str(tmp_path / "old.json")


def test_summarise_and_fold_split():
    from experiments.data_views import fold_split

    s = route_folds.summarise([{"a": {"b": 1.0}, "n": [2, 4], "only": 1}, {"a": {"b": 3.0}, "n": [4, 4], "x": True}])
    assert s["a.b"] == {"mean": 2.0, "min": 1.0, "max": 3.0, "sd": 2**0.5, "values": [1.0, 3.0], "n": 2}
    assert s["n.0"]["mean"] == 3.0 and "only" not in s and "x" not in s
    # a figure undefined in one run (a classifier that tagged nothing: no precision) is over the others, shown as
    # None; undefined in every run, it is left out (before, NaN stopped the whole summary: statistics.stdev)
    tags = [{"p": float("nan"), "q": None}, {"p": 50.0, "q": None}, {"p": 70.0, "q": None}]
    s = route_folds.summarise(tags)
    assert s["p"]["values"] == [None, 50.0, 70.0] and s["p"]["n"] == 2 and s["p"]["mean"] == 60.0 and "q" not in s
    gains = [route_folds._difference(a, b) for a, b in zip(tags, [{"p": 40.0, "q": 1.0}] * 3)]
    assert [g["p"] for g in gains[1:]] == [10.0, 30.0] and gains[0]["p"] != gains[0]["p"]  # NaN - 40: NaN
    one_undefined = route_folds._difference({"p": None, "name": "a", "f": True}, {"p": 1.0, "name": "b", "f": True})
    assert one_undefined == {"p": None}  # the gain is undefined; the name and the flag are not compared
    ids = [f"{i:03d}" for i in range(11)]
    vals = [fold_split(ids[::-1], f, 5)[1] for f in range(5)]
    assert sorted(sum(vals, [])) == ids and [len(v) for v in vals] == [3, 2, 2, 2, 2]
    train, val = fold_split(ids, 1, 5)
    assert val == ["001", "006"] and sorted(train + val) == ids


def test_real_route_steps(tmp_path, synth_root):
    """``--steps``: the stage with the CRF and the tags, the classifier's tags scored on val, the stage on
    the labels at the preset's own level; each step's gain in ``steps``."""
    out = tmp_path / "route"
    tiny = [o for o in tiny_overrides(synth_root, out) if not o.startswith(("data.root=", "run.dir="))]
    argv = [
        str(REPO / "configs/cam/synthetic_cpu.yaml"),
        "--data-root",
        str(synth_root),
        "--out",
        str(out),
        "--refine",
        "par",
        "--steps",
        "--seg",
        str(REPO / "configs/deeplab/synthetic_cpu.yaml"),
        *tiny,
        "cam.bkg_thre=0.65",
        "--seg-set",
        *SEG_TINY,
    ]
    res = real_route.main(argv)
    first, own, steps = res["seg_rounds"][0], res["own_level"], res["steps"]
    assert own["level"] == 0.65 and (out / "cls/pseudo_par_own_level/train").is_dir()
    assert "data.pseudo_dir=" + str(out / "cls/pseudo_par_own_level/train") in (out / "route.log").read_text()
    assert steps["crf"] == first["val_crf"] - first["val"] and steps["level"] == first["val"] - own["val"]
    assert steps["tags_after_crf"] == first["val_crf_tagged"] - first["val_crf"]
    # the advised route's own figure: the stage on the labels at the preset's level, with the CRF
    assert 0 <= own["val_crf"] <= 100 and (out / "seg_own_level/predictions_crf/val").is_dir()
    assert 0 <= res["tags"]["precision"] <= 100 and 0 <= res["tags"]["recall"] <= 100 and res["tags"]["photos"] == 8
    # the floor: what wsss eval scores masks of background alone on the val photos
    background = tmp_path / "background"
    background.mkdir()
    ds = VOCDataset(synth_root, "val")
    for i in ds.ids:
        save_label_png(background / f"{i}.png", np.zeros_like(ds.load_mask(i)))
    assert res["floor"] == pytest.approx(100 * evaluate(background, synth_root, "val").miou, rel=1e-12)


def test_a_second_experiment_on_one_out_folder_is_refused(tmp_path, synth_root):
    """Two experiments on one --out would run the same stages into the same folders: the second is refused before
    it starts any, naming the first (its lock: here this process's own, held on another descriptor)."""
    from wsss.core.errors import UsageError
    from wsss.utils.runlock import run_dir_lock

    out = tmp_path / "route"
    argv = [str(REPO / "configs/cam/synthetic_cpu.yaml"), "--data-root", str(synth_root), "--out", str(out)]
    in_use = rf"{out}: the run is in use by experiments/real_route.py \(pid .*or use another --out$"
    with run_dir_lock(out, command="experiments/real_route.py", option="--out"):
        with pytest.raises(UsageError, match=in_use):  # noqa: SIM117 (the folder is looked at while still locked)
            real_route.main(argv)
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing of the second: no cls/, no route.log


STEPS = ("run_config", "train_run", "stage_words", "cams", "pseudo_labels", "predict_split", "score")


def _recorded(monkeypatch: pytest.MonkeyPatch, calls: list[tuple[str, tuple, dict]], run: bool) -> None:
    """Each of the package's route steps (``wsss.pipelines.route``) records its calls in ``calls``, and runs (``run``)
    or returns None."""
    from wsss.pipelines import route_calls as steps

    for name in STEPS:
        real = getattr(steps, name)

        def step(*a, _name=name, _real=real, **k):
            calls.append((_name, a, k))
            return _real(*a, **k) if run else None

        monkeypatch.setattr(steps, name, step)


def test_the_experiments_route_runs_the_packages_steps(tmp_path, synth_root, monkeypatch):
    """One implementation: each step of the experiment's route is a call of the package's step functions,
    those ``wsss route`` runs (``wsss.pipelines.route``), in this process: no step starts a ``wsss`` command. A step
    changed in the package changes the experiment's route with it."""
    import subprocess

    calls: list[tuple[str, tuple, dict]] = []
    _recorded(monkeypatch, calls, run=True)

    def no_process(*a, **k):
        raise AssertionError(f"a step started a process: {a}")

    monkeypatch.setattr(subprocess, "run", no_process)
    monkeypatch.setattr(subprocess, "Popen", no_process)
    out = tmp_path / "route"
    tiny = [o for o in tiny_overrides(synth_root, out) if not o.startswith(("data.root=", "run.dir="))]
    argv = [
        str(REPO / "configs/cam/synthetic_cpu.yaml"),
        "--data-root",
        str(synth_root),
        "--out",
        str(out),
        "--refine",
        "par",
        "--seg",
        str(REPO / "configs/deeplab/synthetic_cpu.yaml"),
        *tiny,
        "--seg-set",
        *SEG_TINY,
    ]
    res = real_route.main(argv)
    cls, seg, level = out / "cls", out / "seg", res["seeds"]["level"]
    assert [c[0] for c in calls] == [
        "run_config",
        "train_run",  # the classifier
        "cams",
        "cams",
        "pseudo_labels",
        "score",  # its CAMs, again at the swept level; the PAR labels, scored
        "run_config",
        "train_run",
        "predict_split",
        "score",  # the DeepLab stage, its val masks scored
        "predict_split",
        "score",  # again with the CRF
        "predict_split",
        "score",
        "predict_split",
        "score",  # named by the classifier's tags, hard and soft gates
    ]
    by = {}
    for name, a, k in calls:
        by.setdefault(name, []).append((a, k))
    assert by["run_config"][0][0][2] == cls and by["run_config"][1][0][2] == seg
    assert by["cams"][1][1]["words"] == [f"cam.bkg_thre={level:g}"]
    assert by["pseudo_labels"][0][0] == (cls, "train", (level, level)) and by["pseudo_labels"][0][1]["refine"] == "par"
    assert [k.get("crf") for _, k in by["predict_split"]] == [False, True, False, False]
    assert [k.get("tags_from") for _, k in by["predict_split"]] == [None, None, cls, cls]
    assert [k.get("tag_gate") for _, k in by["predict_split"]] == ["hard", "hard", "hard", "soft"]
    assert 0 <= res["seg_val"]["miou"] <= 100


def test_the_route_and_the_experiment_share_the_steps(tmp_path, monkeypatch):
    """``wsss route``'s steps are the same functions: each of Route's steps calls the package's step
    function, with the route's device and CRF workers."""
    from wsss.pipelines.route import Route
    from wsss.pipelines.route_calls import cam_command, pseudo_command
    from wsss.pipelines.route_values import Choice, RouteOptions

    calls: list[tuple[str, tuple, dict]] = []
    _recorded(monkeypatch, calls, run=False)
    route = Route(RouteOptions(data=str(tmp_path / "data"), out=str(tmp_path / "out"), progress=False))
    route.choices.update(
        device=Choice("cpu", "given"), crf_workers=Choice(2, "given"), presets=Choice("cpu", "the CPU presets")
    )
    route.seg_iters, where = 7, {"device": "cpu", "crf_workers": 2}
    cls, seg, view = tmp_path / "cls", tmp_path / "seg", tmp_path / "view"
    route._job(cam_command(cls))  # a per-photo step's call, from its typed command
    route._job(pseudo_command(cls, "par", (0.4, 0.4)))
    route._stage_config(tmp_path / "data", ["data.root=x"], seg, "masks", view)
    route._predict_split(seg, "val")
    assert calls[0] == ("cams", (cls, "train"), {"progress": False, **where})
    assert calls[1] == ("pseudo_labels", (cls, "train", (0.4, 0.4)), {"refine": "par", "progress": False, **where})
    assert calls[2] == ("stage_words", (["data.root=x"], "masks"), {"view": view, "iterations": 7})
    assert calls[3] == ("run_config", (route.opts.seg, None, seg), {"device": "cpu"})  # the words stage_words gave
    assert calls[-1] == (
        "predict_split",
        (seg, "val"),
        {"root": None, "crf": True, "labelled_only": False, "progress": False, **where},
    )


def test_a_train_subset_is_nested_across_k_and_drawn_by_its_seed(tmp_path, synth_root):
    """``--train-photos K``: for one seed the K photos hold those of every smaller K (a learning curve's points differ
    by the photos added); another seed draws others; the view trains on them, its val the data set's; a K over the
    train photos is one line naming the data set."""
    from experiments.data_views import nested_subset
    from wsss.core.errors import UsageError

    ids = [f"p{i:02d}" for i in range(40)]
    draws = {seed: [nested_subset(ids[::-1], k, seed) for k in (5, 10, 20, 40)] for seed in (0, 1)}
    for small, large in zip(draws[0], draws[0][1:]):
        assert set(small) < set(large) and small == sorted(small)
    assert draws[0][-1] == ids and draws[0][0] != ids[:5]  # all of them at K = all; a draw, not the first K
    assert draws[0][0] != draws[1][0] and draws[0][1] != draws[1][1]
    assert nested_subset(ids, 10, 0) == draws[0][1]  # the ids' order does not move the draw
    entry = route_folds.subset_view(str(synth_root), 7, 3, "val", tmp_path)
    view = tmp_path / "data_train7"
    assert (
        entry["view"] == str(view)
        and entry["of"] == 24
        and entry["train_ids"] == nested_subset(VOCDataset(synth_root, "train").ids, 7, 3)
    )
    assert (view / "ImageSets/Segmentation/train.txt").read_text().split() == entry["train_ids"]
    val = (synth_root / "ImageSets/Segmentation/val.txt").read_text().split()
    assert (view / "ImageSets/Segmentation/val.txt").read_text().split() == val
    assert sorted(p.stem for p in (view / "SegmentationClass").glob("*.png")) == sorted([*entry["train_ids"], *val])
    with pytest.raises(UsageError) as refused:
        route_folds.subset_view(str(synth_root), 25, 0, "val", tmp_path)
    assert str(refused.value) == f"--train-photos 25: {synth_root} has 24 train photos; pass at most 24"


def test_real_route_train_photos_and_the_ceiling(tmp_path, synth_root):
    """``--fold 0/2 --train-photos 10 --ceiling``: the route trains on 10 of the fold's 16 train photos, drawn by the
    classifier's seed, scored on the fold's val; the same DeepLab stage on those photos' true masks lands in
    ``ceiling``. A K over the fold's train photos is refused before any training."""
    from experiments.data_views import fold_split, nested_subset
    from wsss.core.errors import UsageError

    out = tmp_path / "route"
    tiny = [o for o in tiny_overrides(synth_root, out) if not o.startswith(("data.root=", "run.dir="))]
    seg = str(REPO / "configs/deeplab/synthetic_cpu.yaml")
    argv = [
        str(REPO / "configs/cam/synthetic_cpu.yaml"),
        "--data-root",
        str(synth_root),
        "--out",
        str(out),
        "--fold",
        "0/2",
        "--refine",
        "par",
        "--level",
        "own",
        "--seg",
        seg,
        *tiny,
        "run.seed=2",
        "--seg-set",
        *SEG_TINY,
        "run.seed=2",
    ]
    with pytest.raises(UsageError, match=f"^--train-photos 17: {out / 'data'} has 16 train photos; pass at most 16$"):
        real_route.main([*argv, "--train-photos", "17", "--ceiling"])
    assert not (out / "cls").exists()
    res = real_route.main([*argv, "--train-photos", "10", "--ceiling", "--json", str(tmp_path / "r.json")])
    train_ids, val_ids = fold_split(
        sorted(VOCDataset(synth_root, "train").ids + VOCDataset(synth_root, "val").ids), 0, 2
    )
    sub, view = res["subset"], out / "data_train10"
    assert sub["seed"] == 2 and sub["of"] == 16 and sub["view"] == str(view)
    assert sub["train_ids"] == nested_subset(train_ids, 10, 2) and res["fold"]["val_ids"] == val_ids
    assert res["settings"]["train_photos"] == 10 and res["settings"]["ceiling"] is True
    assert (view / "ImageSets/Segmentation/train.txt").read_text().split() == sub["train_ids"]
    assert f"root: {view}" in (out / "cls/config.yaml").read_text()
    # the ceiling: the stage on the view's true masks, the route's seed; scored on the same val photos
    cfg = (out / "seg_ceiling/config.yaml").read_text()
    assert f"pseudo_dir: {view / 'SegmentationClass'}" in cfg and "seed: 2," in (out / "seg/config.yaml").read_text()
    assert (
        f"root: {view}" in cfg
        and cfg.replace("seg_ceiling", "seg").replace(str(view / "SegmentationClass"), res["seg_rounds"][0]["labels"])
        == (out / "seg/config.yaml").read_text()
    )
    ceiling = res["ceiling"]
    assert ceiling["labels"] == str(view / "SegmentationClass") and ceiling["train"]["iterations"] == 4
    assert 0 <= ceiling["val"] <= 100 and 0 <= ceiling["val_crf"] <= 100
    assert len(list((out / "seg_ceiling/predictions_crf/val").glob("*.png"))) == len(val_ids)
    assert json.loads((tmp_path / "r.json").read_text()) == res


def test_a_record_from_before_a_setting_was_recorded_reads_as_run_without_it():
    """``--reuse`` compares the settings of a fold with this command's: a record from before ``--level``,
    ``--abstain``, ``--train-photos`` and ``--ceiling`` were recorded ran without them, and is this command's when it
    leaves them at their defaults, not when it sets one."""
    from wsss.pipelines.steps import changed_settings

    plain = ["configs/cam/real_cpu.yaml", "--data-root", "d", "--out", "o", "--folds", "5"]
    ours = route_folds.route_settings(real_route._parser().parse_args(plain))
    old = {k: v for k, v in ours.items() if k not in route_folds.UNRECORDED}
    compare = route_folds._what_is_computed
    assert changed_settings(compare(old), compare(ours)) == []
    for extra, changed in (
        (["--train-photos", "50"], ["train_photos"]),
        (["--abstain"], ["abstain"]),
        (["--level", "own", "--ceiling"], ["ceiling", "level"]),
    ):
        mine = route_folds.route_settings(real_route._parser().parse_args([*plain, *extra]))
        assert changed_settings(compare(old), compare(mine)) == changed


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--train-photos", "0"], "--train-photos 0: a number of photos, 1 or more"),
        (["--subset-seed", "3"], "--subset-seed draws --train-photos's photos: pass --train-photos K"),
        (["--ceiling", "--seg", ""], "--ceiling trains the route's DeepLab stage on the true masks"),
        (["--ceiling", "--masks", "5"], "--ceiling trains the route's DeepLab stage on the true masks"),
    ],
)
def test_the_learning_curves_options_refuse_what_they_cannot_run(tmp_path, synth_root, capsys, extra, said):
    argv = [str(REPO / "configs/cam/synthetic_cpu.yaml"), "--data-root", str(synth_root), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit):
        real_route.main([*argv, *extra])
    err = capsys.readouterr().err
    assert f"error: {said}" in err and not (tmp_path / "o").exists()
