"""ExCEL's two routes from the command line, on the tiny CLIP of the recordings (tests/golden/README.md#excel_weights)
written as a weight file:

- training-free on the recording's own two images (a VOC folder of them): ``wsss import excel`` with the
  recorded bank, ``cam``, ``pseudo --refine excel``: the official final labels;
- both routes on the synthetic set with the preset ``configs/excel/synthetic_cpu.yaml``: the bank computed at
  import from the descriptions, ``train`` (through LVC), ``predict``, ``cam`` of the trained run, ``eval``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO
from excel_golden import npz, write_clip_file
from wsss.core.config import load_config
from wsss.data.classes import VOC_CLASSES, write_classes
from wsss.data.prepare import write_split
from wsss.data.voc import write_cls_labels

DESCRIPTORS = REPO / "configs" / "excel" / "descriptors_synthetic.json"


def _recorded_images(root) -> list[str]:
    """A VOC folder of the training-free recording's images 0 and 1 (lossless PNG bytes under .jpg names, as
    recorded) with their masks and labels."""
    f = npz("excel_training_free.npz")
    for sub in ("JPEGImages", "SegmentationClass"):
        (root / sub).mkdir(parents=True)
    ids = ["img0", "img1"]
    for i, id in enumerate(ids):
        Image.fromarray(f[f"img{i}_uint8"]).save(root / "JPEGImages" / f"{id}.jpg", format="PNG")
        Image.fromarray(f[f"img{i}_gt"]).save(root / "SegmentationClass" / f"{id}.png")
    write_classes(root, list(VOC_CLASSES))
    write_cls_labels(root, {id: f[f"img{i}_cls_onehot"].astype(np.float32) for i, id in enumerate(ids)})
    write_split(root, "train", ids)
    return ids


def test_golden_excel_training_free_route_gives_the_official_labels(tmp_path, wsss_cli, one_thread):
    """voc.yaml (every quirk on) at the recording's 160-px squares, the recorded bank: the official labels."""
    data, run = tmp_path / "voc", tmp_path / "tf"
    ids = _recorded_images(data)
    clip = write_clip_file(tmp_path / "tiny_clip.pt")
    bank = tmp_path / "bank.npy"
    np.save(bank, npz("excel_text.npz")["attr_bank"])
    out = wsss_cli(
        "import",
        "excel",
        str(clip),
        "--config",
        str(REPO / "configs/excel/voc.yaml"),
        "--out",
        str(run),
        f"data.root={data}",
        "options.quick_gelu=true",
        f"options.bank={bank}",
        "options.input_size=160",
        "options.embedding_dim=32",
        "run.device=cpu",
    )
    assert "wsss cam" in out
    wsss_cli("cam", str(run), "--split", "train", "--quiet")
    wsss_cli("pseudo", str(run), "--split", "train", "--refine", "excel", "--quiet")
    f = npz("excel_training_free.npz")
    for i, id in enumerate(ids):
        label = np.asarray(Image.open(run / "pseudo" / "train" / f"{id}.png"))
        # the saved maps are float16 (as every wsss cam): a pixel whose PAR scores tie within that rounding may
        # flip; measured: none
        assert (label == f[f"img{i}_label_final"][0]).mean() > 0.999


@pytest.mark.slow
def test_excel_both_routes_on_the_synthetic_set(synth_root, tmp_path, wsss_cli, one_thread):
    clip = write_clip_file(tmp_path / "tiny_clip.pt")
    common = [
        f"data.root={synth_root}",
        "options.quick_gelu=true",
        f"options.descriptors={DESCRIPTORS}",
        "data.crop_size=64",
        "options.input_size=64",
        "data.val_resize=64",
        "data.num_workers=0",
    ]
    # training-free: the bank computed at import from the descriptions, kept in the run
    tf = tmp_path / "tf"
    wsss_cli(
        "import",
        "excel",
        str(clip),
        "--config",
        str(REPO / "configs/excel/synthetic_cpu.yaml"),
        "--out",
        str(tf),
        *common,
    )
    state = torch.load(next((tf / "checkpoints").glob("*.pt")), weights_only=False)["model"]
    assert state["attr_bank"].shape == (32, 8) and bool(state["bank_ready"])
    wsss_cli("cam", str(tf), "--split", "val", "--quiet")
    wsss_cli("pseudo", str(tf), "--split", "val", "--refine", "excel", "--quiet")
    assert "mIoU" in wsss_cli(
        "eval", str(tf / "pseudo" / "val"), "--data-root", str(synth_root), "--split", "val", "--pseudo"
    )

    # trained: the decoder learns through LVC (from step 2) and the affinity target from its own labels (step 3)
    tr = tmp_path / "trained"
    wsss_cli(
        "train",
        str(REPO / "configs/excel/synthetic_cpu.yaml"),
        f"model.pretrained={clip}",
        f"run.dir={tr}",
        *common,
        "train.max_iters=4",
        "train.batch_size=2",
        "options.lvc_start=2",
        "options.aff_from_seg_start=3",
        "train.eval_iters=4",
        "train.ckpt_iters=4",
        "train.log_iters=1",
        "data.val_max_images=2",
        "--quiet",
    )
    assert load_config(tr / "config.yaml").model.pretrained == str(clip)
    state = torch.load(tr / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert int(state["decoder_steps"]) == 4 and bool(state["bank_ready"])
    wsss_cli("predict", str(tr), "--split", "val", "--quiet")
    wsss_cli("cam", str(tr), "--split", "val", "--quiet")  # calibrated maps: the decoder is past LVC
    assert "mIoU" in wsss_cli("eval", str(tr / "predictions" / "val"), "--data-root", str(synth_root), "--split", "val")
