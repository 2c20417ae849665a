"""experiments/label_runs.py's scores of a run's masks over its sets of train photos, and label_coverage.py's share
of a mask given to the classes, on the synthetic set (no stage is trained)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from experiments.label_coverage import coverage, foreground_share
from experiments.label_folds import label_view, truth_view
from experiments.label_runs import agreed, run_scores, undrawn_photos
from wsss.data.voc import VOCDataset
from wsss.evaluation.agreement import classes_found
from wsss.pipelines.route_labels import photo_labels
from wsss.utils.io import IGNORE, read_label_png, save_label_png


@pytest.fixture
def fold(synth_root: Path, tmp_path: Path) -> tuple[dict, Path]:
    """Fold 0 of 4 of the synthetic set, and a folder of every photo's true mask."""
    info = label_view(str(synth_root), 0, 4, tmp_path)
    ds = VOCDataset(truth_view(str(synth_root), info, tmp_path), "all")
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in ds.ids:
        save_label_png(masks / f"{i}.png", ds.load_mask(i))
    return info, masks


def test_the_common_photos_are_those_no_variant_can_draw():
    train = [f"p{i}" for i in range(50)]
    rule, shuffled = train[:25], train[10:40]
    assert undrawn_photos(train, rule, shuffled) == train[30:]  # the first 20 of each: p0-p19 and p10-p29


def test_a_drawn_photos_mask_counts_over_every_photo_and_not_over_the_undrawn(fold):
    info, masks = fold
    view, train = Path(info["view"]), list(info["train_ids"])
    drawn = train[0]
    label = read_label_png(masks / f"{drawn}.png")
    gone = int(next(c for c in np.unique(label) if c not in (0, IGNORE)))
    label[label == gone] = 0  # the drawn photo's predicted mask misses one of its labels
    save_label_png(masks / f"{drawn}.png", label)
    res = run_scores({"train": masks, "val": masks}, view, train, train[2:], [drawn])
    assert res["val_miou"] == pytest.approx(100.0)
    assert res["labelled_found"] < 1 and res["undrawn"]["labelled_found"] == pytest.approx(1.0)
    assert (res["undrawn"]["photos"], res["common"]["photos"]) == (len(train) - 1, len(train) - 2)


def test_a_class_no_photo_of_the_set_is_labelled_with_is_uncounted(fold):
    info, masks = fold
    view, train = Path(info["view"]), list(info["train_ids"])
    labels, names = photo_labels(view, ["train"]), VOCDataset(view, "train").class_names
    res = agreed(labels, classes_found(masks, train), names, train[:1])
    expected = set().union(*labels.values()) - labels[train[0]]
    assert expected  # the other photos are labelled with a class the first is not
    assert res["uncounted"] == [names[c] for c in sorted(expected)] and res["lost"] == []
    assert agreed(labels, classes_found(masks, train), names, train)["uncounted"] == []


def test_the_foreground_share_leaves_the_ignored_pixels_out(tmp_path):
    mask = np.zeros((4, 4), np.uint8)
    mask[0] = 3  # 4 pixels of a class
    mask[1] = IGNORE  # 4 ignored
    save_label_png(tmp_path / "a.png", mask)
    save_label_png(tmp_path / "b.png", np.zeros((4, 4), np.uint8))
    assert foreground_share(tmp_path, ["a"]) == pytest.approx(4 / 12, abs=1e-4)  # rounded to 4 places
    assert foreground_share(tmp_path, ["a", "b"]) == pytest.approx(4 / 24, abs=1e-4)
    assert foreground_share(tmp_path, []) is None


def test_coverage_sets_the_runs_masks_against_the_pseudo_labels_and_the_truth(fold, tmp_path):
    info, masks = fold
    train = list(info["train_ids"])
    (tmp_path / "route" / "cls" / "pseudo").mkdir(parents=True)
    empty = tmp_path / "route" / "cls" / "pseudo" / "train"  # pseudo labels of background alone
    empty.mkdir()
    for i in train:
        save_label_png(empty / f"{i}.png", np.zeros_like(read_label_png(masks / f"{i}.png")))
    (tmp_path / "after").symlink_to(masks)  # seed 0's masks are the truth
    runs = {"seed0": {"drawn": []}, "rule10": {"drawn": train[:1]}}
    predicted = tmp_path / "runs" / "rule10" / "seg" / "predictions_crf_labelled" / "train"
    predicted.parent.mkdir(parents=True)
    predicted.symlink_to(empty)  # rule10's masks are all background
    rows = coverage(tmp_path, runs, train[1:])
    truth = foreground_share(masks, train[:1])
    drawn = rows["rule10"]["drawn"]
    assert truth and drawn["foreground"] == {"run": 0.0, "seed0": truth, "pseudo": 0.0, "truth": truth}
    assert drawn["labelled_found"] == {"run": 0.0, "seed0": 1.0}
    assert rows["seed0"]["drawn"]["foreground"]["run"] is None  # it drew none
