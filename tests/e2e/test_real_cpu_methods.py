"""The real-photo presets of RCA and SC-CAM (configs/{rca,sccam}/real_cpu.yaml): the CAM baseline's
ImageNet MobileNetV2 at stride 16 and an epoch schedule; each trains from the real file and writes CAMs
on the six real VOC photos (shortened by overrides to a seconds-long run)."""

from __future__ import annotations

import json

import pytest

from conftest import REPO, VOC_REAL_MINI, VOC_REAL_MINI_IDS
from wsss.cli import main
from wsss.core.config import load_config
from wsss.models.weights import resolve_weight_path

CAM_PRESET = REPO / "configs" / "cam" / "real_cpu.yaml"
TINY = {
    "rca": ["data.crop_size=96", "infer.cam_input_size=96", "options.head_dim=4", "options.queue_len=4"],
    "sccam": [
        "data.crop_size=96",
        "options.round0_epochs=1",
        "options.schedule_epochs=1",
        "options.snapshot_epochs=[1]",
        "options.num_subcategories=2",
    ],
}


@pytest.mark.parametrize("method", ["rca", "sccam"])
def test_real_cpu_preset_of_method(method, tmp_path, one_thread):
    cfg = load_config(REPO / "configs" / method / "real_cpu.yaml")
    base = load_config(CAM_PRESET)
    assert cfg.method == method
    assert (cfg.model.backbone, cfg.model.output_stride, cfg.model.pretrained) == (
        base.model.backbone, base.model.output_stride, base.model.pretrained,
    )  # fmt: skip
    assert cfg.data.root == base.data.root and cfg.train.epochs is not None
    assert resolve_weight_path(cfg.model.pretrained).is_file()

    run = tmp_path / "run"
    overrides = [
        f"data.root={VOC_REAL_MINI}", "data.train_split=val", f"run.dir={run}", "train.epochs=1",
        "train.batch_size=3", "train.log_iters=1", "train.ckpt_iters=2", "infer.cam_scales=[1.0]", *TINY[method],
    ]  # fmt: skip
    assert main(["train", str(REPO / "configs" / method / "real_cpu.yaml"), *overrides, "--quiet"]) == 0
    assert main(["cam", str(run), "--split", "val", "--quiet"]) == 0
    logs = run / "round_1" / "metrics.jsonl" if method == "sccam" else run / "metrics.jsonl"
    steps = [json.loads(line)["step"] for line in logs.read_text().splitlines() if "loss/loss" in line]
    assert steps == [1, 2]  # one epoch of 6 images in batches of 3
    assert sorted(p.stem for p in (run / "cams" / "val").glob("*.npz")) == sorted(VOC_REAL_MINI_IDS)
