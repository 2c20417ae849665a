"""A class in an image's label with no pixel in its mask (a small object all void, labels from XML) is
legal: check-data warns with the count and ids, and training starts without --skip-check. A class in
the mask but not in the label stays a problem naming the file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, tiny_overrides
from wsss.cli import main
from wsss.data import check_dataset
from wsss.data.voc import write_cls_labels
from wsss.utils.io import read_label_png, save_label_png


def _void_a_labelled_class(root: Path, ids: list[str]) -> None:
    """Paint one labelled class of each id void (255) in its mask, keeping its label."""
    for i in ids:
        path = root / "SegmentationClass" / f"{i}.png"
        mask = read_label_png(path)
        fg = [c for c in np.unique(mask) if 0 < c < 255]
        mask[mask == fg[0]] = 255
        save_label_png(path, mask)


@pytest.fixture()
def voided(synth_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(synth_root, root)
    _void_a_labelled_class(root, ["train_00001", "train_00005", "val_00002"])
    return root


def test_label_without_mask_pixels_is_a_counted_warning(voided: Path):
    report = check_dataset(voided)
    assert report.ok, report.format()
    assert sorted(report.label_only) == ["train_00001", "train_00005", "val_00002"]
    warning = [w for w in report.warnings if "no pixel in the mask" in w]
    assert len(warning) == 1 and "3 images are labelled" in warning[0] and "train_00005" in warning[0]


def test_class_in_mask_but_not_in_label_stays_a_problem(voided: Path):
    table = np.load(voided / "cls_labels.npy", allow_pickle=True).item()
    mask_classes = [c for c in np.unique(read_label_png(voided / "SegmentationClass/train_00003.png")) if 0 < c < 255]
    table["train_00003"][mask_classes[0] - 1] = 0.0
    write_cls_labels(voided, table)
    report = check_dataset(voided)
    assert not report.ok
    assert any("train_00003.png" in p and "in the mask but not in the label" in p for p in report.problems)


def test_training_starts_without_skip_check(voided: Path, tmp_path: Path, capsys):
    run = tmp_path / "run"
    over = tiny_overrides(voided, run, **{"train.max_iters": 1, "train.eval_iters": 100})
    assert main(["train", str(REPO / "configs/cam/synthetic_cpu.yaml"), *over, "--quiet"]) == 0
    assert (run / "checkpoints/last.pt").is_file()
    err = capsys.readouterr().err
    assert "2 images are labelled with a class that has no pixel" in err  # the train split
    assert "1 image is labelled with a class that has no pixel" in err  # the val split
