"""Training-time validation on an image without labels (COCO's crowd-only images have none)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO
from wsss.core.config import load_config
from wsss.engine.validate import validate
from wsss.methods.contract import CamDeclaration, Method


class _OneImage:
    """The part of VOCDataset validation reads: one 32x40 image, its mask and its (empty) labels."""

    ids = ["a"]
    num_classes = 4

    def load_image(self, id):
        return np.random.default_rng(0).integers(0, 255, (32, 40, 3), dtype=np.uint8)

    def load_mask(self, id):
        return np.zeros((32, 40), np.uint8)

    def labels(self, id):
        return np.zeros(3, np.float32)


class _CamOnly(torch.nn.Module):
    # what validate reads of a method: its capabilities and the contract's own CAM hook (Method declares them)
    has_cams, has_seg_head, cams = True, False, CamDeclaration()
    cam_passes, image_cams, _device = Method.cam_passes, Method.image_cams, Method._device

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.conv = torch.nn.Conv2d(3, 3, 1)

    def cam_maps(self, x):
        cam = F.relu(self.conv(F.avg_pool2d(x, 4)))
        return cam, cam


@pytest.mark.parametrize("normalize", ["minmax", "max"])
def test_an_image_without_labels_is_all_background(normalize):
    cfg = load_config(REPO / "configs/cam/synthetic_cpu.yaml", [f"infer.cam_normalize={normalize}"])
    out = validate(_CamOnly(cfg), _OneImage(), cfg, torch.device("cpu"), progress=False)
    # the ground truth is all background and so is the seed: background IoU 100, nothing else present
    assert out["cam_miou"] == pytest.approx(100.0) and out["aux_cam_miou"] == pytest.approx(100.0)
