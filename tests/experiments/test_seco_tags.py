"""experiments/seco_tags.py: SeCo's tags redone on saved CAMs and checked against the ground truth."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from experiments import seco_tags
from wsss.core.config import load_config, save_config
from wsss.utils.io import save_cam


def fake_run(tmp_path, synth_root, with_context: bool):
    """A run whose train CAMs are the ground-truth objects (1 on the object, 0 elsewhere), and, with
    ``with_context``, also 1 on the context pixels of the class the context comes with."""
    run = tmp_path / ("ctx" if with_context else "obj")
    (run / "cams" / "train").mkdir(parents=True)
    save_config(load_config(REPO / "configs/seco/synthetic_cpu.yaml"), run / "config.yaml")  # as training writes it
    meta = json.loads((synth_root / "synth_meta.json").read_text())
    owner = {int(k): meta["classes"].index(v["accompanies"]) for k, v in meta["contexts"].items()}
    for name in (synth_root / "ImageSets/Segmentation/train.txt").read_text().split():
        gt = np.array(Image.open(synth_root / "SegmentationClass" / f"{name}.png"))
        ctx = np.array(Image.open(synth_root / "SegmentationContext" / f"{name}.png"))
        keys = sorted(meta["classes"].index(o) for o in set(meta["images"][name]["objects"]))
        cam = np.zeros((len(meta["classes"]) - 1, *gt.shape), dtype=np.float32)
        labels = np.zeros(len(meta["classes"]) - 1, dtype=np.float32)
        for k in keys:
            m = gt == k
            if with_context:
                m |= np.isin(ctx, [cid for cid, c in owner.items() if c == k]) & (gt == 0)
            cam[k - 1], labels[k - 1] = m, 1.0
        save_cam(run / "cams" / "train", name, cam, labels)
    return run


@pytest.mark.parametrize("with_context", [False, True])
def test_context_patches_follow_the_cam(tmp_path, synth_root, with_context):
    stats = seco_tags.tag_stats(
        fake_run(tmp_path, synth_root, with_context), synth_root, patches=8, size=16, min_share=0.1, seed=0
    )
    assert stats["patches"] == 8 * 24
    assert stats["bg %"] + stats["class %"] + stats["ignored %"] == pytest.approx(100)
    assert stats["context patches"] > 0
    if with_context:  # a CAM that covers the context tags the context patches as its class (or
        # ignores them, when a sliver of another object falls in the patch), never as background
        assert stats["context as its class %"] > 50
        assert stats["context as its class %"] + stats["context ignored %"] == pytest.approx(100)
    else:  # a CAM on the objects alone tags them background
        assert stats["context as bg %"] == pytest.approx(100)
        assert stats["class-tag precision %"] == pytest.approx(100)
