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
        "data.root": synth_root, "run.dir": run_dir, "data.crop_size": 64, "data.num_workers": 0,
        "model.backbone": "vgg16_dilated", "model.backbone_kwargs": "{width: 0.0625}", "train.batch_size": 4,
        "train.max_iters": 2, "train.warmup_iters": 0, "train.log_iters": 1, "train.eval_iters": 100,
        "train.ckpt_iters": 2, "infer.cam_scales": "[1.0]", "options.head_dim": 8, "options.queue_len": 8,
        "options.num_centroids": 2, "options.kmeans_n_init": 1,
    }  # fmt: skip
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
    seeds = res["seed_miou_scale1_noflip"]
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
    assert len(set(res["seed_miou_scale1_noflip"].values())) == 1
