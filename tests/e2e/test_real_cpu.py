"""configs/cam/real_cpu.yaml end to end on the six real VOC photos: train a few iterations from the
real ImageNet MobileNetV2 -> CAMs -> CAM seeds -> eval (shortened by overrides to fit the test budget;
the preset itself trains on coco128-dev for a number of epochs)."""

from __future__ import annotations

import json

import numpy as np
import torch

from conftest import REPO, VOC_REAL_MINI, VOC_REAL_MINI_IDS
from wsss.cli import main
from wsss.core.config import load_config
from wsss.models.weights import resolve_weight_path

CONFIG = REPO / "configs" / "cam" / "real_cpu.yaml"


def test_real_cpu_preset_end_to_end(tmp_path, one_thread):
    cfg = load_config(CONFIG)
    assert cfg.model.backbone == "mobilenetv2_100" and cfg.model.output_stride == 16
    assert cfg.data.root == "data/coco128-dev"  # inside the clone (not shipped: data.root=DIR), no path outside it
    assert cfg.train.epochs is not None  # the length grows with the data
    weights = resolve_weight_path(cfg.model.pretrained)
    assert weights.is_file()

    run = tmp_path / "run"
    overrides = [
        f"data.root={VOC_REAL_MINI}",
        "data.train_split=val",  # voc-real-mini's only list
        "data.val_split=val",  # the preset has no training-time validation; the test keeps that path
        f"run.dir={run}",
        "train.epochs=1",  # 6 images in batches of 3: 2 iterations
        "train.batch_size=3",
        "train.log_iters=1",
        "train.eval_iters=2",
        "train.ckpt_iters=2",
        "data.crop_size=128",
        "data.val_resize=160",
        "infer.cam_scales=[1.0]",
        "infer.cam_input_size=192",
    ]
    assert main(["train", str(CONFIG), *overrides, "--quiet"]) == 0
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss/cls" in m] == [1, 2]
    assert any(any(k.startswith("val") for k in m) for m in metrics)

    # The backbone started from the real file: after two small steps its stem is still that file's.
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)["model"]
    stem = state["backbone.net.conv_stem.weight"]
    ref = torch.load(weights, map_location="cpu", weights_only=True)["features.0.0.weight"]
    assert torch.corrcoef(torch.stack([stem.flatten(), ref.flatten()]))[0, 1] > 0.99

    assert main(["cam", str(run), "--split", "val", "--quiet"]) == 0
    assert sorted(p.stem for p in (run / "cams" / "val").glob("*.npz")) == sorted(VOC_REAL_MINI_IDS)
    assert sorted(p.stem for p in (run / "cam_labels" / "val").glob("*.png")) == sorted(VOC_REAL_MINI_IDS)
    out = tmp_path / "eval.json"
    argv = ["eval", str(run / "cam_labels" / "val"), "--data-root", str(VOC_REAL_MINI), "--split", "val"]
    assert main([*argv, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert np.isfinite(result["miou"]) and 0.0 <= result["miou"] <= 100.0
