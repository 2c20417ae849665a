"""experiments/compare.py: the table, chart and BENCHMARKS.md block from fake results; the per-method pipeline
(a seg head, a separate segmentation stage, none) on a tiny budget."""

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import tiny_overrides
from experiments import compare
from wsss.utils.io import read_label_png

META = {
    "date": "2026-01-02",
    "machine": {"cpu": "Test CPU @ 1GHz", "cores": 2, "torch": "2.0", "threads": 2},
    "data": "synth 8+2 @ 64px seed 0",
    "command": ".venv/bin/python experiments/compare.py --methods cam rca sccam",
}


def fake_results():
    part = {"miou": 41.234, "mean_far": 0.71, "far_water": 0.0, "far_rails": 3.64}
    return [
        {
            "method": "cam",
            "status": "ok",
            "iters": 1500,
            "batch": 8,
            "train_s": 630.0,
            "cam_s": 81.2,
            "predict_s": 37.4,
            "seg_source": "seg head",
            "cam": dict(part, miou=48.95),
            "mask": dict(part, miou=32.56),
            "seg": part,
        },
        {
            "method": "rca",
            "status": "ok",
            "iters": 1500,
            "batch": 8,
            "train_s": 900.0,
            "cam_s": 80.0,
            "seg_source": "n/a",
            "cam": dict(part, miou=45.0),
            "mask": dict(part, miou=38.0),
        },
        {"method": "sccam", "status": "missing (no synthetic_cpu preset yet)"},
    ]


def rows(markdown: str) -> dict[str, list[str]]:
    out = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] not in ("method", "---"):
            out[cells[0]] = cells
    return out


def test_table_numbers_and_na():
    r = rows(compare.table(fake_results()))
    assert r["cam"][1:5] == ["49.0", "32.6", "41.2", "seg head"]
    assert r["cam"][5:8] == ["0.7", "0.0", "3.6"]
    assert r["cam"][9:] == ["1500 x 8", "10.5 min", "81 s", "37 s", "n/a"]
    assert r["rca"][3:8] == ["n/a"] * 5  # no segmentation: every seg column n/a
    assert r["rca"][12] == "n/a"
    assert r["sccam"][1] == "missing (no synthetic_cpu preset yet)"
    assert all(len(v) == 14 for v in r.values())


def test_publish_writes_json_chart_and_replaces_the_marked_block(tmp_path):
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text(
        "# Benchmarks\n\nintro\n\n<!-- compare:begin -->\nold table\n<!-- compare:end -->\n\n## After\ntail\n"
    )
    out = tmp_path / "experiments/results"
    compare.publish(META, fake_results(), out, bench)
    text = bench.read_text()
    assert (
        "old table" not in text and text.startswith("# Benchmarks\n\nintro\n\n") and text.endswith("## After\ntail\n")
    )
    assert "Measured 2026-01-02 on Test CPU @ 1GHz, 2 cores, torch 2.0 (2 threads)" in text
    assert "![compare](experiments/results/compare.png)" in text and "Not implemented yet: sccam." in text
    assert rows(text)["cam"][1] == "49.0"
    assert json.loads((out / "compare.json").read_text())["results"][0]["cam"]["miou"] == 48.95
    with Image.open(out / "compare.png") as im:
        rgb = np.asarray(im.convert("RGB"))
    assert rgb.shape[1] > 600 and len(np.unique(rgb.reshape(-1, 3), axis=0)) > 50  # a drawn chart

    once = bench.read_text()
    compare.publish(META, fake_results(), out, bench)  # a rerun replaces the block, nothing else
    assert bench.read_text() == once and once.count(compare.BEGIN) == 1

    fresh = tmp_path / "NEW.md"
    fresh.write_text("# Benchmarks\n\nsomething\n")
    compare.write_benchmarks(fresh, "<!-- compare:begin -->\nX\n<!-- compare:end -->")
    assert (
        fresh.read_text().startswith("# Benchmarks\n\nsomething\n\n## Method comparison")
        and "\nX\n" in fresh.read_text()
    )
    broken = tmp_path / "BROKEN.md"
    broken.write_text("<!-- compare:begin -->\nno end\n")
    with pytest.raises(ValueError, match="BROKEN.md"):
        compare.write_benchmarks(broken, "X")


def test_render_only_reads_an_older_compare_json(tmp_path, capsys):
    old = {
        "meta": {"date": "2026-11-22", "machine": "x86_64, 2 cores, torch threads 2", "data": "synth"},
        "results": [{k: v for k, v in fake_results()[0].items() if k not in ("iters", "batch", "seg_source")}],
    }
    (tmp_path / "compare.json").write_text(json.dumps(old))
    compare.main(["--render-only", "--results", str(tmp_path), "--benchmarks", str(tmp_path / "B.md")])
    text = (tmp_path / "B.md").read_text()
    assert "on x86_64, 2 cores, torch threads 2; data: synth" in text
    assert rows(text)["cam"][4] == "seg head" and rows(text)["cam"][9] == "n/a"


def test_pipelines_on_a_tiny_budget(tmp_path):
    """A method without a seg head (the cam preset with model.decoder=none) gets a separate segmentation
    stage trained on its pseudo labels; a method with one is predicted directly; no stage preset: n/a."""
    from wsss.data import generate_synthetic

    synth_root = tmp_path / "synth"
    generate_synthetic(synth_root, n_train=8, n_val=4, size=64, seed=5)
    tiny = [o for o in tiny_overrides(synth_root, tmp_path) if not o.startswith(("run.dir", "data.root"))]
    tiny += ["train.max_iters=2", "train.eval_iters=100", "data.val_max_images=1"]
    runs = tmp_path / "runs"
    # a classifier-only method: its segmentation is a second run trained on its train pseudo labels
    stage = compare.Pipeline(
        "cam",
        overrides=("model.decoder=none",),
        seg_preset="configs/cam/synthetic_cpu.yaml",
        seg_overrides=("data.pseudo_dir={pseudo}", "run.seed=1"),
    )
    res = compare.run_method(stage, synth_root, runs, tiny)
    assert res["status"] == "ok", res
    assert res["seg_source"] == "stage configs/cam/synthetic_cpu.yaml"
    assert (res["iters"], res["batch"]) == (2, 4)
    seg_cfg = yaml.safe_load((runs / "cam_seg/config.yaml").read_text())
    assert seg_cfg["data"]["pseudo_dir"] == str(runs / "cam/pseudo/train") and seg_cfg["run"]["seed"] == 1
    assert (runs / "cam_seg/predictions/val").is_dir() and not (runs / "cam/predictions").exists()
    assert 0 < res["seg_train_s"] < res["train_s"] and res["predict_s"] > 0
    from wsss.evaluation import evaluate

    assert res["seg"]["miou"] == pytest.approx(100 * evaluate(runs / "cam_seg/predictions/val", synth_root, "val").miou)
    assert 0 <= res["mask"]["miou_covered"] <= 100

    # a method with a seg head (here the finished stage run, so `wsss train` only resumes): predicted directly
    head = compare.Pipeline(
        "cam_seg",
        preset="configs/cam/synthetic_cpu.yaml",
        overrides=(f"data.pseudo_dir={runs / 'cam/pseudo/train'}", "run.seed=1"),
    )
    res = compare.run_method(head, synth_root, runs, tiny)
    assert res["status"] == "ok" and res["seg_source"] == "seg head" and "seg_train_s" not in res, res
    assert res["seg"]["miou"] == pytest.approx(100 * evaluate(runs / "cam_seg/predictions/val", synth_root, "val").miou)

    # refine "affinity" (SC-CAM's pipeline): AffinityNet trained on the PSA seeds, then the random walk
    walk = compare.Pipeline(
        "cam",
        name="cam_walk",
        overrides=("model.decoder=none",),
        refine="affinity",
        seg="none",
        aff_overrides=(
            "model.backbone_kwargs={channels: [8, 16, 16, 32], stem_width: 8}",
            "loss.start_iters={}",
            "options.aux_dim=8",
            "options.final_dim=8",
            "options.out_dim=16",
        ),
    )
    res = compare.run_method(walk, synth_root, runs, tiny)
    assert res["status"] == "ok" and res["seg_source"] == "n/a", res
    aff_cfg = yaml.safe_load((runs / "cam_walk_aff/config.yaml").read_text())
    assert aff_cfg["method"] == "affinitynet" and aff_cfg["data"]["pseudo_dir"] == str(runs / "cam_walk_aff_seeds")
    assert 0 < res["aff_train_s"] < res["train_s"]
    seeds = {i: read_label_png(runs / "cam_walk_aff_seeds" / f"{i}.png") for i in ("train_00000", "train_00001")}
    walked = {i: read_label_png(runs / "cam_walk/pseudo/train" / f"{i}.png") for i in seeds}
    assert any((s == 255).any() for s in seeds.values())  # la/ha seeds leave pixels undecided
    assert not any((w == 255).any() for w in walked.values())  # the walk decides every pixel

    no_stage = compare.Pipeline("cam", seg_preset="configs/deeplab/does_not_exist.yaml")
    assert compare.seg_plan(no_stage, runs / "cam") == "none"
    assert compare.seg_plan(no_stage, runs / "cam_seg") == "head"
    missing = compare.run_method(compare.Pipeline("nosuch"), synth_root, runs, tiny)
    assert missing["status"].startswith("missing")
    failed = compare.run_method(compare.Pipeline("cam", overrides=("train.max_iter=1",)), synth_root, runs, tiny)
    assert failed["status"].startswith("failed") and "max_iter" in failed["status"]


def test_seco_quirks_variant_switches_every_quirk_back_on():
    """The `seco_quirks` row is SeCo's CPU preset (all quirks corrected) with every official quirk on."""
    from dataclasses import fields

    from wsss.core.config import load_config
    from wsss.methods.seco import SeCoOptions

    every = {f.name.removeprefix("quirk_") for f in fields(SeCoOptions) if f.name.startswith("quirk_")}
    assert set(compare.SECO_QUIRKS) == every
    pipe = compare.PIPELINES["seco_quirks"]
    assert pipe.label == "seco_quirks" and pipe.method == "seco"
    preset = pipe.preset_path()
    plain = load_config(preset).options  # the preset and its bases (_base_/quirks/seco_corrected.yaml)
    assert all(plain[f"quirk_{q}"] is False for q in every)
    opts = load_config(preset, list(pipe.overrides)).options
    assert all(opts[f"quirk_{q}"] is True for q in every)


def test_describe_data_names_the_context_strength(tmp_path):
    from wsss.data import generate_synthetic

    generate_synthetic(
        tmp_path / "strong", n_train=3, n_val=2, size=48, seed=4, context_with=0.95, context_without=0.03, verbose=False
    )
    text = compare.describe_data(tmp_path / "strong")
    assert text == "synth 3+2 @ 48px seed 4, context given its class 0.95 / without 0.03 (strong)"
    (tmp_path / "custom").mkdir()
    assert compare.describe_data(tmp_path / "custom") == "custom"  # not a synthetic set: its name


def test_choose_levels_rule():
    sweep = {
        "best_thre": 0.15,
        "best_miou": 0.62,
        "pairs": [
            {"high": 0.7, "low": 0.25, "miou_decided": 0.57, "decided": 0.88},
            {"high": 0.4, "low": 0.1, "miou_decided": 0.655, "decided": 0.891},
            {"high": 0.3, "low": 0.05, "miou_decided": 0.70, "decided": 0.80},  # best score, decides too little
        ],
    }
    lv = compare.choose_levels(sweep)
    assert (lv["bkg_thre"], lv["high_thre"], lv["low_thre"]) == (0.15, 0.4, 0.1)
    assert lv["seed_miou"] == pytest.approx(62.0) and lv["pair_decided"] == pytest.approx(89.1)
    lv = compare.choose_levels(sweep, min_decided=0.95)  # no pair decides enough: the most deciding one
    assert (lv["high_thre"], lv["low_thre"]) == (0.4, 0.1)
    assert "high_thre" not in compare.choose_levels({"best_thre": 0.3, "best_miou": 0.5})


def test_calibration_protocol_on_a_tiny_run(tmp_path):
    """run_method calibrates on the run's own train CAMs: the sweep's best seed level and the rule's pair are
    written into the run's config, the train seeds are rewritten at that level, the table prints them."""
    from wsss.core.config import load_config
    from wsss.data import VOCDataset, generate_synthetic
    from wsss.utils.io import load_cam

    root = tmp_path / "synth"
    generate_synthetic(root, n_train=8, n_val=2, size=64, seed=5)
    tiny = [o for o in tiny_overrides(root, tmp_path) if not o.startswith(("run.dir", "data.root"))]
    tiny += ["train.max_iters=2", "train.eval_iters=100", "data.val_max_images=1", "cam.bkg_thre=0.69"]
    runs = tmp_path / "runs"
    res = compare.run_method(compare.Pipeline("cam"), root, runs, tiny)
    assert res["status"] == "ok", res
    run = runs / "cam"
    sweep = json.loads((run / "bkg_sweep/train.json").read_text())
    lv = res["levels"]
    assert res["calibrated"] and lv == compare.choose_levels(sweep)
    cfg = load_config(run / "config.yaml")
    assert (cfg.cam.bkg_thre, cfg.cam.high_thre, cfg.cam.low_thre) == (lv["bkg_thre"], lv["high_thre"], lv["low_thre"])
    ds = VOCDataset(root, "train")
    from wsss.runs.jobs import labelled_seed

    for i in ds.ids[:3]:  # the seeds are those of the chosen level, not the preset's 0.69
        cam = load_cam(run / "cams/train" / f"{i}.npz", ds.num_classes - 1)
        keys = np.flatnonzero(ds.labels(i))
        expected = labelled_seed(keys, cam[keys], lv["bkg_thre"])
        np.testing.assert_array_equal(read_label_png(run / "cam_labels/train" / f"{i}.png"), expected)
    assert res["cam"]["miou"] == pytest.approx(lv["seed_miou"], abs=1e-6)
    cells = rows(compare.table([res]))["cam"]
    assert cells[13] == f"{lv['bkg_thre']:g}/{lv['high_thre']:g}/{lv['low_thre']:g} (calibrated)"
    plain = compare.run_method(compare.Pipeline("cam", name="cam_preset"), root, runs, tiny, calibrated=False)
    assert plain["levels"]["bkg_thre"] == 0.69 and rows(compare.table([plain]))["cam_preset"][13].endswith("(preset)")


def test_rows_are_published_after_every_method_and_kept_rows_stay(tmp_path, monkeypatch):
    """An interrupted comparison keeps the rows it finished; ``--keep`` keeps the other methods' rows
    and their preset descriptions."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "classes.txt").write_text("background\nboat\n")
    fake = {r["method"]: r for r in fake_results()}
    old_meta = dict(META, presets={"rca": {"method": "rca"}, "cam": {"method": "old cam"}})
    (tmp_path / "compare.json").write_text(json.dumps({"meta": old_meta, "results": [fake["rca"], fake["cam"]]}))

    def run_method(p, *args, **kwargs):
        if p.label == "sccam":
            raise KeyboardInterrupt
        return dict(fake[p.label], train_s=1.0)

    monkeypatch.setattr(compare, "run_method", run_method)
    monkeypatch.setattr(compare, "describe_data", lambda root: "synth")
    argv = ["--methods", "cam", "sccam", "--keep", "--data", str(data), "--results", str(tmp_path), "--benchmarks", ""]
    with pytest.raises(KeyboardInterrupt):
        compare.main(argv)
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert [(r["method"], r["train_s"]) for r in saved["results"]] == [("rca", 900.0), ("cam", 1.0)]
    assert saved["meta"]["presets"]["rca"] == {"method": "rca"}
    assert saved["meta"]["presets"]["cam"]["method"] == "cam"  # the re-run's preset, read from configs/


def test_machine_reports_the_threads_of_the_runs():
    assert compare.machine(["train.lr=1", "run.threads=1"])["threads"] == 1
    assert compare.machine([])["threads"] == torch.get_num_threads()
