"""WeCLIP+ from the command line on the synthetic set, with the recordings' tiny CLIP and DINOv2 written as weight files
(tests/golden/README.md#weclip_plus_weights): ``wsss train configs/weclip_plus/synthetic_cpu.yaml`` with both files,
``predict``, ``cam`` of the trained run, ``eval``; then ``wsss import weclip_plus`` of the run saved in the official
checkpoint's layout (every weight in one file) predicts the same labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO
from weclip_plus_golden import write_weight_files
from wsss.core.config import load_config


@pytest.mark.slow
def test_weclip_plus_trains_predicts_and_imports_on_the_synthetic_set(synth_root, tmp_path, wsss_cli, one_thread):
    clip, dino = write_weight_files(tmp_path)
    common = [
        f"data.root={synth_root}",
        "options.quick_gelu=true",
        "options.dino_heads=2",
        "data.crop_size=64",
        "data.num_workers=0",
        "options.test_resize_long=64",
    ]
    run = tmp_path / "trained"
    wsss_cli(
        "train",
        str(REPO / "configs/weclip_plus/synthetic_cpu.yaml"),
        f"model.pretrained={clip}",
        f"run.dir={run}",
        *common,
        f"options.dino_weights={dino}",
        "train.max_iters=3",
        "train.batch_size=2",
        "options.label_update_after=1",
        "train.eval_iters=3",
        "train.ckpt_iters=3",
        "train.log_iters=1",
        "data.val_max_images=2",
        "--quiet",
    )
    cfg = load_config(run / "config.yaml")
    assert cfg.model.pretrained == str(clip) and cfg.options["dino_weights"] == str(dino)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert int(state["decoder_steps"]) == 3
    wsss_cli("predict", str(run), "--split", "val", "--quiet")
    wsss_cli("cam", str(run), "--split", "val", "--quiet")
    assert "mIoU" in wsss_cli(
        "eval", str(run / "predictions" / "val"), "--data-root", str(synth_root), "--split", "val"
    )

    # the trained run in the official checkpoint's layout (module.-prefixed: the CLIP as encoder.*, the DINOv2 as
    # dino_encoder.*, the heads)
    official = {f"module.{k.removeprefix('decoder.')}": v for k, v in state.items() if k.startswith("decoder.")}
    official.update({f"module.encoder.{k.removeprefix('clip.')}": v for k, v in state.items() if k.startswith("clip.")})
    official.update({f"module.dino_encoder.{k[5:]}": v for k, v in state.items() if k.startswith("dino.")})
    ckpt = tmp_path / "wetr_iter_3.pth"
    torch.save(official, ckpt)
    imported = tmp_path / "imported"
    wsss_cli(
        "import",
        "weclip_plus",
        str(ckpt),
        "--config",
        str(REPO / "configs/weclip_plus/synthetic_cpu.yaml"),
        "--out",
        str(imported),
        *common,
        "run.device=cpu",
    )
    wsss_cli("predict", str(imported), "--split", "val", "--quiet")
    for png in sorted((run / "predictions" / "val").glob("*.png")):
        a = np.asarray(Image.open(png))
        b = np.asarray(Image.open(imported / "predictions" / "val" / png.name))
        assert (a == b).all(), png.name
