"""experiments/frozen_heads.py on a tiny setting (the six real VOC photos, random backbone, 64 px, two epochs):
each head is trained and scored; a class-specific head whose last bias is very negative has only empty maps."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import VOC_REAL_MINI
from experiments import frozen_heads
from wsss.data import VOCDataset
from wsss.evaluation.bkg_sweep import DEFAULT_THRESHOLDS


def test_frozen_heads_tiny(tmp_path, one_thread):
    out = tmp_path / "heads.json"
    argv = [
        "--data-root",
        str(VOC_REAL_MINI),
        "--split",
        "val",
        "--size",
        "64",
        "--epochs",
        "2",
        "--batch",
        "3",
        "--weights",
        "none",
        "--heads",
        "cam:10",
        "rca:1",
        "sccam:2",
        "--json",
        str(out),
    ]
    res = frozen_heads.main(argv)
    assert list(res["heads"]) == ["cam:10", "rca:1", "sccam:2"]
    for head in res["heads"].values():
        assert head["steps"] == 4  # 2 epochs of 6 photos in batches of 3
        assert 0 <= head["empty_share"] <= 1 and len(head["seeds"]) == len(DEFAULT_THRESHOLDS)
        assert head["seed_best"][1] == max(head["seeds"].values())
    assert len(res["heads"]["rca:1"]["logit_of_zero_features"]) == len(res["heads"]["rca:1"]["prior_logit"]) == 20
    sizes = res["heads"]["sccam:2"]["subcategory_sizes"]  # every labelled image in one of its classes' two
    data = VOCDataset(VOC_REAL_MINI, "val")
    assert [sum(s) for s in sizes] == [int(sum(data.labels(i)[c] for i in data.ids)) for c in range(20)]
    assert json.loads(out.read_text())["heads"]["cam:10"]["seed_best"] == res["heads"]["cam:10"]["seed_best"]


@pytest.mark.parametrize("bias, empty", [(-1e3, 1.0), (1e3, 0.0)])
def test_score_counts_empty_maps(bias, empty, one_thread):
    data = VOCDataset(VOC_REAL_MINI, "val")
    torch.manual_seed(0)
    feats = torch.rand(len(data), 8, 4, 4)
    labels = torch.stack([torch.from_numpy(data.labels(i)) for i in data.ids])
    head = frozen_heads.make_head("rca", 8, 20, 4, 0.03)
    with torch.no_grad():
        head.net[-1].bias.fill_(bias)
    res = frozen_heads.score(head, feats, labels, data)
    assert res["empty_share"] == empty
    assert res["mean_prob_labelled"] == (0.0 if bias < 0 else 1.0)
