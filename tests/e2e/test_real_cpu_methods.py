"""The real-photo presets of RCA, SC-CAM and AffinityNet (configs/{rca,sccam,affinity}/real_cpu.yaml): the CAM
baseline's ImageNet MobileNetV2 at stride 16 and an epoch schedule; each trains from the real file and writes CAMs
on the six real VOC photos (shortened by overrides to a seconds-long run). The *_effnet presets are the same on
TensorFlow's ImageNet EfficientNet-Lite0, the DeepLab stage's among them (it writes predictions)."""

from __future__ import annotations

import json

import numpy as np
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
    "cam": ["data.crop_size=96"],
    "deeplab": ["data.crop_size=96", f"data.pseudo_dir={VOC_REAL_MINI / 'SegmentationClass'}"],
}


@pytest.mark.parametrize(
    "preset",
    ["rca/real_cpu", "sccam/real_cpu", "cam/real_cpu_effnet", "rca/real_cpu_effnet", "deeplab/real_cpu_effnet"],
)
def test_real_cpu_preset_of_method(preset, tmp_path, one_thread):
    method, name = preset.split("/")
    cfg = load_config(REPO / "configs" / f"{preset}.yaml")
    base = load_config(REPO / "configs" / "cam" / f"{name}.yaml")  # the CAM baseline on the same backbone
    assert cfg.method == method
    assert (cfg.model.backbone, cfg.model.output_stride, cfg.model.pretrained) == (
        base.model.backbone,
        base.model.output_stride,
        base.model.pretrained,
    )
    assert cfg.data.root == base.data.root and cfg.train.epochs is not None
    assert resolve_weight_path(cfg.model.pretrained).is_file()

    run = tmp_path / "run"
    overrides = [
        f"data.root={VOC_REAL_MINI}",
        "data.train_split=val",
        f"run.dir={run}",
        "train.epochs=1",
        "train.batch_size=3",
        "train.log_iters=1",
        "train.ckpt_iters=2",
        "infer.cam_scales=[1.0]",
        *TINY[method],
    ]
    assert main(["train", str(REPO / "configs" / f"{preset}.yaml"), *overrides, "--quiet"]) == 0
    logs = run / "round_1" / "metrics.jsonl" if method == "sccam" else run / "metrics.jsonl"
    steps = [json.loads(line)["step"] for line in logs.read_text().splitlines() if "loss/loss" in line]
    assert steps == [1, 2]  # one epoch of 6 images in batches of 3
    if method == "deeplab":  # the stage writes masks, no CAMs
        assert main(["predict", str(run), "--split", "val", "--quiet"]) == 0
        assert sorted(p.stem for p in (run / "predictions" / "val").glob("*.png")) == sorted(VOC_REAL_MINI_IDS)
        return
    assert main(["cam", str(run), "--split", "val", "--quiet"]) == 0
    assert sorted(p.stem for p in (run / "cams" / "val").glob("*.npz")) == sorted(VOC_REAL_MINI_IDS)


def test_real_cpu_affinity_preset_trains_and_walks_a_photo(tmp_path, one_thread):
    """configs/affinitynet/real_cpu.yaml (PSA's walk on photos, experiments/real_route.py --refine affinity): the CAM
    baseline's MobileNetV2 at stride 16 trains from the real file on seeds (here the photos' own masks, borders
    255), and its walk labels a whole photo at its size with only the photo's classes, at a calibrated level."""
    from wsss.cam.affinity import alpha_for_level
    from wsss.data import VOCDataset
    from wsss.runs.run import load_run

    preset = REPO / "configs" / "affinitynet" / "real_cpu.yaml"
    cfg, base = load_config(preset), load_config(CAM_PRESET)
    assert (cfg.model.backbone, cfg.model.output_stride, cfg.model.pretrained) == (
        base.model.backbone,
        base.model.output_stride,
        base.model.pretrained,
    )
    assert cfg.train.epochs is not None and not cfg.options["quirk_interior_sources"]
    run = tmp_path / "aff"
    overrides = [
        f"data.root={VOC_REAL_MINI}",
        "data.train_split=val",
        f"run.dir={run}",
        "train.epochs=1",
        "train.batch_size=3",
        "train.log_iters=1",
        "train.ckpt_iters=2",
        "data.crop_size=96",
        f"data.pseudo_dir={VOC_REAL_MINI / 'SegmentationClass'}",
    ]
    assert main(["train", str(preset), *overrides, "--quiet"]) == 0
    steps = [
        json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines() if "loss/loss" in line
    ]
    assert steps == [1, 2]

    aff = load_run(run, device="cpu")
    ds = VOCDataset(VOC_REAL_MINI, "val")
    id = ds.ids[0]
    image, labels, mask = ds.load_image(id), ds.labels(id), ds.load_mask(id)
    cam = np.zeros((len(labels), *image.shape[:2]), np.float32)
    for c in np.flatnonzero(labels):
        cam[c] = 0.8 * (mask == c + 1)  # a CAM of the labelled classes on their own pixels
    label = aff.method.random_walk_label(image, cam, labels, alpha_for_level(0.6))
    assert label.shape == image.shape[:2]
    assert set(np.unique(label).tolist()) <= {0, *(int(c) + 1 for c in np.flatnonzero(labels))}
    assert (label > 0).any() and (label == 0).any()


def test_the_effnet_stage_learns_at_its_preset_rate_where_the_base_rate_diverges(tmp_path, one_thread, capsys):
    """configs/deeplab/real_cpu_effnet.yaml's learning rate: ten steps on the six real VOC photos' masks at the
    preset's crop keep the loss under twice its first value, and the MobileNetV2 preset's rate on this backbone does
    not (its loss grows by orders of magnitude here, as on coco128-dev:
    docs/benchmarks/history/real-photos.md#effnet-stage-lr)."""
    preset = REPO / "configs" / "deeplab" / "real_cpu_effnet.yaml"
    base_lr = load_config(REPO / "configs" / "deeplab" / "real_cpu.yaml").train.lr
    losses, said = {}, {}
    for name, lr in (("preset", load_config(preset).train.lr), ("base", base_lr)):
        run = tmp_path / name
        overrides = [
            f"data.root={VOC_REAL_MINI}",
            "data.train_split=val",
            f"run.dir={run}",
            f"data.pseudo_dir={VOC_REAL_MINI / 'SegmentationClass'}",
            "train.epochs=5",
            "train.batch_size=3",
            "train.log_iters=1",
            "train.ckpt_iters=100",
            f"train.lr={lr}",
            "data.num_workers=0",
        ]
        assert main(["train", str(preset), *overrides, "--quiet"]) == 0
        said[name] = capsys.readouterr().err
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        losses[name] = [r["loss/seg"] for r in rows if "loss/seg" in r]
    assert len(losses["preset"]) == 10 and base_lr > load_config(preset).train.lr
    assert max(losses["preset"][5:]) < 2 * losses["preset"][0]
    assert max(losses["base"][5:]) > 2 * losses["base"][0]
    assert "the training diverges" not in said["preset"]
    assert ("the training diverges" in said["base"]) == (max(losses["base"]) > 100 * losses["base"][0])
