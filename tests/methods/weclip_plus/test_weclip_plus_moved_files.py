"""A trained WeCLIP+ run whose CLIP and DINOv2 files were moved since (a run copied to another machine) predicts as
before: its checkpoint holds every weight and records what the build read off the files (``built_options``)."""

from __future__ import annotations

import shutil

import numpy as np
import torch

from conftest import REPO
from weclip_plus_golden import write_weight_files
from wsss.utils.io import read_label_png


def test_a_run_whose_weight_files_moved_predicts_the_same_masks(synth_root, tmp_path, wsss_cli, one_thread):
    files = tmp_path / "weights"
    files.mkdir()
    clip, dino = write_weight_files(files)
    run = tmp_path / "trained"
    train = [
        "train",
        str(REPO / "configs/weclip_plus/synthetic_cpu.yaml"),
        f"model.pretrained={clip}",
        f"options.dino_weights={dino}",
        f"run.dir={run}",
        f"data.root={synth_root}",
        "options.quick_gelu=true",
        "options.dino_heads=2",
        "data.crop_size=64",
        "data.num_workers=0",
        "options.test_resize_long=64",
        "train.batch_size=2",
        "options.label_update_after=1",
        "train.eval_iters=2",
        "train.ckpt_iters=2",
        "train.log_iters=1",
        "data.val_max_images=2",
        "--quiet",
    ]
    wsss_cli(*train, "train.max_iters=2")
    built = torch.load(run / "checkpoints/last.pt", weights_only=False)["built_options"]
    assert set(built) == {"arch", "dino_arch", "quick_gelu"} and built["quick_gelu"] is True
    wsss_cli("predict", str(run), "--split", "val", "--quiet")
    before = {p.name: read_label_png(p) for p in (run / "predictions/val").glob("*.png")}

    shutil.move(files, tmp_path / "moved")
    # its masks are the same model's: kept (they were refused as stamped "by an older wsss")
    stamp = (run / "predictions/val/.settings.json").read_text()
    wsss_cli("predict", str(run), "--split", "val", "--quiet")
    assert (run / "predictions/val/.settings.json").read_text() == stamp
    out = wsss_cli("predict", str(run), "--split", "val", "--overwrite", "--quiet")
    warned = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and f"model.pretrained {clip}, options.dino_weights {dino} are gone" in warned[0], out
    after = {p.name: read_label_png(p) for p in (run / "predictions/val").glob("*.png")}
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    # a resume builds the same way, and its networks are the checkpoint's, not random ones
    out = wsss_cli(*train, "train.max_iters=4", "--allow-config-change")
    assert "are gone" in out and "training on a random network" not in out, out
    assert torch.load(run / "checkpoints/last.pt", weights_only=False)["step"] == 4

    # a checkpoint of an older wsss records nothing: the build names the files to give
    for name in ("best.pt", "last.pt"):
        state = torch.load(run / "checkpoints" / name, weights_only=False)
        del state["built_options"]
        torch.save(state, run / "checkpoints" / name)
    out = wsss_cli("predict", str(run), "--split", "val", "--overwrite", "--quiet", code=2)
    assert "error: weclip_plus: options.arch / options.dino_arch are empty; give model.pretrained=CLIPFILE" in out
