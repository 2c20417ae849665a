"""experiments/seed_diagnosis.py on a seconds-long RCA run of the synthetic set: the counts add up, and a
classifier whose class maps are negative everywhere (every class switched off) reads as such: every labelled
map empty, probabilities near 0, no class fed to the memory bank, seeds that are background only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import REPO
from experiments import seed_diagnosis
from wsss.core.config import load_config
from wsss.data import VOCDataset
from wsss.engine.trainer import Trainer
from wsss.evaluation.bkg_sweep import DEFAULT_THRESHOLDS
from wsss.runs.run import load_run


@pytest.fixture(scope="module")
def tiny_rca_run(synth_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("diag") / "rca"
    over = {
        "data.root": synth_root,
        "run.dir": run_dir,
        "data.crop_size": 64,
        "data.num_workers": 0,
        "model.backbone": "vgg16_dilated",
        "model.backbone_kwargs": "{width: 0.0625}",
        "train.batch_size": 4,
        "train.max_iters": 2,
        "train.warmup_iters": 0,
        "train.log_iters": 1,
        "train.eval_iters": 100,
        "train.ckpt_iters": 2,
        "infer.cam_scales": "[1.0]",
        "options.head_dim": 8,
        "options.queue_len": 8,
        "options.num_centroids": 2,
        "options.kmeans_n_init": 1,
    }
    cfg = load_config(REPO / "configs/rca/synthetic_cpu.yaml", [f"{k}={v}" for k, v in over.items()])
    Trainer(cfg, progress=False).train()
    return run_dir


def test_counts_add_up(tiny_rca_run, one_thread):
    res = seed_diagnosis.diagnose(tiny_rca_run, "val")
    ds = VOCDataset(load_run(tiny_rca_run).cfg.data.root, "val")
    labels = np.stack([ds.labels(i) for i in ds.ids]) > 0.5
    per_class = list(res["per_class"].values())
    assert [v["images"] for v in per_class] == labels.sum(axis=0).tolist()
    assert 0 <= res["empty_share"] <= 1 and all(0 <= v["empty_maps"] <= v["images"] for v in per_class)
    seeds = res["seed_miou_scale1"]
    assert len(seeds) == len(DEFAULT_THRESHOLDS) and res["seed_best"][1] == max(seeds.values())
    assert set(res["loss_first_last"]["."]) >= {"cls", "coarse"}
    assert len(res["rca_memory"]["queue_entry_norm_mean"]) == labels.shape[1]


def test_every_class_switched_off_reads_as_empty(tiny_rca_run, one_thread, monkeypatch):
    run = load_run(tiny_rca_run)
    with torch.no_grad():  # the last layer of every class head: a large negative bias, so every map is < 0
        run.method.class_heads.net[-1].bias.fill_(-1e3)
    monkeypatch.setattr(seed_diagnosis, "load_run", lambda _: run)
    res = seed_diagnosis.diagnose(tiny_rca_run, "val")
    assert res["empty_share"] == 1.0 and res["mean_prob_labelled"] < 1e-3
    assert all(v["positive_share"] == 0 for v in res["per_class"].values())
    assert res["rca_memory"]["classes_above"] == []
    # seeds of empty maps are background at every level: one score everywhere
    assert len(set(res["seed_miou_scale1"].values())) == 1


def test_what_wsss_cam_wrote_is_counted(tmp_path):
    """The maps `wsss cam` saved: a labelled class whose map is zero everywhere (or missing) is empty, and a
    labelled class that no seed pixel names is counted; nothing is read before `wsss cam` has run."""
    from wsss.utils.io import save_label_png, save_labelled_cam

    labels = {"a": np.array([True, True, False]), "b": np.array([False, False, True])}
    assert seed_diagnosis.saved_outputs(tmp_path, "train", ["a", "b"], labels) is None
    cams = tmp_path / "cams" / "train"
    ramp = np.linspace(0, 1, 12, dtype=np.float32).reshape(1, 3, 4)
    # 0-based keys: image a's second class is empty
    save_labelled_cam(cams, "a", np.array([0, 1]), np.concatenate([ramp, np.zeros_like(ramp)]))
    save_labelled_cam(cams, "b", np.array([2]), ramp)
    res = seed_diagnosis.saved_outputs(tmp_path, "train", ["a", "b"], labels)
    assert res == {"labelled_pairs": 3, "empty_maps": 1, "classes_not_in_seed": None}
    seeds = tmp_path / "cam_labels" / "train"
    save_label_png(seeds / "a.png", np.array([[0, 1, 1, 0]] * 3, dtype=np.uint8))  # names class 1 only
    save_label_png(seeds / "b.png", np.array([[0, 3, 3, 255]] * 3, dtype=np.uint8))
    res = seed_diagnosis.saved_outputs(tmp_path, "train", ["a", "b"], labels)
    assert res == {"labelled_pairs": 3, "empty_maps": 1, "classes_not_in_seed": 1}
