"""``check_dataset``: a clean dataset passes; each kind of breakage is reported with its file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import VOC_REAL_MINI as VOC_MINI
from wsss.data import check_dataset, generate_synthetic
from wsss.data.voc import VOCDataset, write_cls_labels


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("check") / "clean"
    generate_synthetic(root, n_train=8, n_val=4, size=64, seed=1, verbose=False)
    return root


@pytest.fixture()
def ds(clean_root: Path, tmp_path: Path) -> Path:
    """A fresh copy of the clean dataset to break."""
    root = tmp_path / "ds"
    shutil.copytree(clean_root, root)
    return root


def labels(root: Path) -> dict:
    return np.load(root / "cls_labels.npy", allow_pickle=True).item()


def only_problem_mentions(report, *needles: str) -> str:
    assert not report.ok
    hits = [p for p in report.problems if all(n in p for n in needles)]
    assert hits, report.format()
    return hits[0]


def test_clean_dataset_is_ok(clean_root: Path):
    report = check_dataset(clean_root)
    assert report.ok, report.format()
    assert report.problems == [] and report.n_problems == 0
    assert report.n_images == 12 and report.n_masks == 12
    assert report.splits == {"train": 8, "val": 4}
    assert set(report.class_counts) == {"boat", "train", "horse", "rider", "bird", "bottle"}
    assert sum(report.class_counts.values()) >= 12
    text = report.format()
    assert "OK" in text and "train (8 ids)" in text
    only_val = check_dataset(clean_root, "val")
    assert only_val.ok and only_val.n_images == 4 and list(only_val.splits) == ["val"]


def test_real_voc_photos_are_ok():
    report = check_dataset(VOC_MINI)
    assert report.ok, report.format()
    assert report.n_images == 6 and report.n_masks == 6 and report.label_source == "masks"
    assert report.class_counts["person"] == 2 and report.class_counts["sheep"] == 1


def test_truncated_jpeg(ds: Path):
    path = ds / "JPEGImages/train_00003.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    msg = only_problem_mentions(check_dataset(ds), "train_00003.jpg")
    assert "truncated" in msg or "cannot read" in msg


def test_missing_image(ds: Path):
    (ds / "JPEGImages/val_00001.jpg").unlink()
    only_problem_mentions(check_dataset(ds, "val"), "val_00001.jpg", "not found")


def test_a_webp_photo_is_found_where_the_dataset_finds_it_and_a_missing_one_names_what_was_looked_for(ds: Path):
    """check-data and the dataset look a photo up in one place (``find_image``): what one reads, the other checks."""
    jpg = ds / "JPEGImages/val_00001.jpg"
    Image.open(jpg).save(jpg.with_suffix(".webp"), lossless=True)
    jpg.unlink()
    assert check_dataset(ds, "val").ok
    assert VOCDataset(ds, "val").image_path("val_00001") == jpg.with_suffix(".webp")
    jpg.with_suffix(".webp").unlink()
    only_problem_mentions(check_dataset(ds, "val"), "val_00001.jpg", "not found", "looked for .jpg/", "/.webp/")


def test_missing_mask(ds: Path):
    (ds / "SegmentationClass/train_00002.png").unlink()
    report = check_dataset(ds, full_masks=True)  # as `wsss train` checks its val split: every image is scored
    only_problem_mentions(report, "train_00002.png", "missing")
    assert report.n_masks == 11
    # cls_labels.npy labels every image: a split of which some images have masks is legal (`prepare
    # folder --masks` keeps masked photos in train beside unmasked ones, for sweep-bkg)
    report = check_dataset(ds, "train")
    assert report.ok and any("split 'train': 7 of its 8 images have a mask" in w for w in report.warnings)


def test_missing_mask_without_labels_means_no_labels(ds: Path):
    (ds / "cls_labels.npy").unlink()
    (ds / "SegmentationClass/val_00000.png").unlink()
    only_problem_mentions(check_dataset(ds, "val"), "val_00000.png", "no labels")


def test_mask_value_outside_classes(ds: Path):
    path = ds / "SegmentationClass/val_00002.png"
    m = np.asarray(Image.open(path)).copy()
    m[:3, :3] = 9  # 7 classes: 0..6 and 255 are legal
    Image.fromarray(m, mode="L").save(path)
    msg = only_problem_mentions(check_dataset(ds), "val_00002.png", "illegal")
    assert "[9]" in msg


def test_mask_size_and_mode(ds: Path):
    Image.fromarray(np.zeros((32, 32), np.uint8), mode="L").save(ds / "SegmentationClass/train_00000.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(ds / "SegmentationClass/train_00001.png")
    report = check_dataset(ds)
    only_problem_mentions(report, "train_00000.png", "size")
    only_problem_mentions(report, "train_00001.png", "mode RGB")


def test_cls_labels_length_disagrees_with_classes_txt(ds: Path):
    write_cls_labels(ds, {k: np.zeros(20, np.float32) for k in labels(ds)})
    msg = only_problem_mentions(check_dataset(ds), "cls_labels.npy", "classes.txt")
    assert "20" in msg and "6" in msg


def test_label_disagrees_with_mask(ds: Path):
    table = labels(ds)
    vec = table["train_00004"]
    present = int(np.flatnonzero(vec)[0])
    vec[present] = 0.0  # drop a class that the mask shows
    vec[(present + 1) % 6] = 1.0  # and claim one it does not (unless it was there already)
    write_cls_labels(ds, table)
    msg = only_problem_mentions(check_dataset(ds), "cls_labels.npy", "train_00004")
    assert "train_00004.png" in msg and "in the mask but not in the label" in msg


def test_cls_labels_missing_id_and_not_multi_hot(ds: Path):
    table = labels(ds)
    del table["val_00003"]
    table["val_00000"] = table["val_00000"] * 0.5 + 0.25
    write_cls_labels(ds, table)
    report = check_dataset(ds)
    only_problem_mentions(report, "cls_labels.npy", "val_00003")
    only_problem_mentions(report, "cls_labels.npy", "multi-hot", "val_00000")


def test_cls_labels_not_a_dict(ds: Path):
    np.save(ds / "cls_labels.npy", np.zeros((12, 6), np.float32))
    only_problem_mentions(check_dataset(ds), "cls_labels.npy", "dict")


def test_bad_classes_txt_and_missing_split(ds: Path):
    (ds / "classes.txt").write_text("background\nboat\nboat\n")
    only_problem_mentions(check_dataset(ds), "classes.txt", "duplicate")
    report = check_dataset(ds, "test")
    only_problem_mentions(report, "test.txt", "available splits: train, val")


def test_max_problems_caps_the_list(ds: Path):
    for p in (ds / "SegmentationClass").glob("*.png"):
        Image.fromarray(np.full((64, 64), 50, np.uint8), mode="L").save(p)
    report = check_dataset(ds, max_problems=3)
    assert len(report.problems) == 3 and report.n_problems >= 12
    assert "more" in report.format()
