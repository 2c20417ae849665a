"""experiments/reference_classifier.py on a tiny setting: the six real VOC photos, one epoch of 96-px crops,
single-scale CAMs; the seeds are scored at every level of `wsss sweep-bkg` and the best one reported."""

from __future__ import annotations

import json

import numpy as np
import torch

from conftest import VOC_REAL_MINI
from experiments import reference_classifier
from wsss.data import VOCDataset
from wsss.evaluation.bkg_sweep import DEFAULT_THRESHOLDS


def test_reference_classifier_tiny(tmp_path, one_thread):  # the script sets its own threads: restored after
    out = tmp_path / "ref.json"
    argv = [
        "--data-root",
        str(VOC_REAL_MINI),
        "--split",
        "val",
        "--epochs",
        "1",
        "--batch",
        "3",
        "--crop",
        "96",
        "--scales",
        "1.0",
        "--json",
        str(out),
    ]
    result = reference_classifier.main(argv)
    assert result["steps"] == 2  # one epoch of 6 images in batches of 3
    assert result["levels"] == list(DEFAULT_THRESHOLDS) and len(result["miou"]) == len(DEFAULT_THRESHOLDS)
    assert result["best_miou"] == max(result["miou"]) > 0
    assert result["best_level"] == result["levels"][result["miou"].index(result["best_miou"])]
    assert json.loads(out.read_text())["best_miou"] == result["best_miou"]


def test_reference_cams_are_per_class_maps_at_image_size():
    data = VOCDataset(VOC_REAL_MINI, "val")
    torch.manual_seed(0)
    model = reference_classifier.PlainClassifier(data.num_classes - 1)
    with torch.no_grad():
        maps = reference_classifier.cams(model, data, [1.0])
    assert sorted(maps) == sorted(data.ids)
    for id, cam in maps.items():
        assert cam.shape == (data.num_classes - 1, *data.load_mask(id).shape)
        assert np.all(cam >= 0) and np.all(cam <= 1)
