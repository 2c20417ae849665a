"""experiments/label_folds.py's scoring of the masks against the labels, its recoveries and its plan against the
run, on the synthetic set (no route is run)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from experiments.label_folds import (
    label_agreement,
    label_view,
    par_region,
    plan_against_run,
    plan_seconds,
    probability_region,
    recovered,
    scored,
    truth_view,
)
from wsss.data.voc import VOCDataset
from wsss.utils.io import read_label_png, save_label_png


@pytest.fixture
def fold(synth_root: Path, tmp_path: Path) -> tuple[Path, dict, VOCDataset]:
    """Fold 0 of 4 of the synthetic set's photos, its truth view and the view's dataset of every photo."""
    info = label_view(str(synth_root), 0, 4, tmp_path)
    truth = truth_view(str(synth_root), info, tmp_path)
    return truth, info, VOCDataset(truth, "all")


def _true_masks(ds: VOCDataset, dest: Path) -> Path:
    dest.mkdir()
    for i in ds.ids:
        save_label_png(dest / f"{i}.png", ds.load_mask(i))
    return dest


def _labelled(ds: VOCDataset, i: str) -> list[int]:
    return [1 + int(c) for c in np.flatnonzero(ds.labels(i))]


def test_the_label_view_hides_the_train_masks_and_the_truth_view_has_them_all(fold, tmp_path):
    truth, info, ds = fold
    view = VOCDataset(info["view"], "train")
    assert not any(view.has_mask(i) for i in info["train_ids"])
    assert all(VOCDataset(info["view"], "val").has_mask(i) for i in info["val_ids"])
    assert sorted(ds.ids) == sorted([*info["train_ids"], *info["val_ids"]])


def test_true_masks_score_100_and_agree_with_every_label(fold, tmp_path):
    truth, _, ds = fold
    res = scored(_true_masks(ds, tmp_path / "masks"), truth)
    assert res["miou_all"] == pytest.approx(100.0)
    labels = res["labels"]
    assert (labels["photos_missing_a_label"], labels["masks_naming_an_unlabelled_class"]) == (0, 0)
    assert labels["labelled_found_share"] == pytest.approx(1.0)


def test_a_dropped_label_and_an_added_class_are_counted(fold, tmp_path):
    truth, _, ds = fold
    masks = _true_masks(ds, tmp_path / "masks")
    dropped, added = ds.ids[0], ds.ids[1]
    gone = _labelled(ds, dropped)[0]
    label = read_label_png(masks / f"{dropped}.png")
    label[label == gone] = 0
    save_label_png(masks / f"{dropped}.png", label)
    other = next(c for c in range(1, ds.num_classes) if c not in _labelled(ds, added))
    label = read_label_png(masks / f"{added}.png")
    label[:2, :2] = other
    save_label_png(masks / f"{added}.png", label)
    res = label_agreement(masks, ds, list(ds.ids))
    assert res["photos_missing_a_label"] == 1 and res["masks_naming_an_unlabelled_class"] == 1
    assert res["photos"][dropped]["missing"] == [gone] and res["photos"][added]["unlabelled"] == [other]
    assert 0 < res["unlabelled_share_of_named"] < 1 and res["labelled_found_share"] < 1


def test_a_recovery_paints_the_missing_class_on_background_only(fold, tmp_path):
    _, _, ds = fold
    masks = _true_masks(ds, tmp_path / "masks")
    i, c = ds.ids[0], _labelled(ds, ds.ids[0])[0]
    label = read_label_png(masks / f"{i}.png")
    label[label == c] = 0
    label[0, :] = 255
    save_label_png(masks / f"{i}.png", label)
    agreement = label_agreement(masks, ds, list(ds.ids))
    out = recovered(masks, agreement, lambda j, k: np.ones(label.shape, bool), tmp_path / "rec")
    got = read_label_png(out / f"{i}.png")
    assert (got[label == 0] == c).all() and (got[0, :] == 255).all()
    untouched = ds.ids[1]
    assert (read_label_png(out / f"{untouched}.png") == read_label_png(masks / f"{untouched}.png")).all()


def test_the_regions_come_from_par_on_train_photos_and_the_probability_peak(tmp_path):
    route = tmp_path / "route"
    (route / "cls" / "pseudo" / "train").mkdir(parents=True)
    save_label_png(route / "cls" / "pseudo" / "train" / "a.png", np.array([[0, 2], [2, 1]], np.uint8))
    assert par_region(route)("a", 2).tolist() == [[False, True], [True, False]]
    assert par_region(route)("b", 2) is None  # a val photo: no PAR label
    (route / "seg" / "probs" / "val").mkdir(parents=True)
    prob = np.zeros((3, 2, 2), np.float16)
    prob[2] = [[0.1, 0.04], [0.06, 0.0]]
    np.save(route / "seg" / "probs" / "val" / "b.npy", prob)
    assert probability_region(route, {"b": "val"})("b", 2).tolist() == [[True, False], [True, False]]
    assert not probability_region(route, {"b": "val"})("b", 1).any()


PLAN = """route: classifier: cam (80 classes)
[1/3] check: wsss check-data D
      estimate: about 0.5 s
[2/3] classifier: wsss train wsss::cam/real_cpu.yaml data.root=D
      estimate: about 2 min 09 s
[3/3] masks: wsss predict R --split train --crf
      estimate: none measured
estimate: about 1 h 02 min in all (rates: measured on this machine, 1 run)
"""


def test_the_plan_is_set_against_the_steps_log_and_the_load(tmp_path):
    assert plan_seconds(PLAN) == {"check": 0.5, "classifier": 129.0, "masks": None, "whole": 3720.0}
    (tmp_path / "plan.txt").write_text(PLAN)
    (tmp_path / "route").mkdir()
    steps = [
        {"step": "check", "seconds": 0.2, "finished": True},
        {"step": "classifier", "seconds": 100.0},
        {"step": "classifier", "seconds": 50.0, "finished": True},
    ]
    (tmp_path / "route" / "steps.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    (tmp_path / "load.jsonl").write_text(
        "".join(json.dumps({"t": t, "load": [x, 0, 0]}) + "\n" for t, x in ((0, 2.0), (30, 4.0)))
    )
    res = plan_against_run(tmp_path)
    assert res["rates"] == "measured on this machine, 1 run"
    assert res["steps"]["classifier"] == {"plan_s": 129.0, "actual_s": 150.0}
    assert res["steps"]["whole"]["actual_s"] == pytest.approx(150.2)
    assert res["load"]["mean"] == 3.0 and res["load"]["max"] == 4.0
