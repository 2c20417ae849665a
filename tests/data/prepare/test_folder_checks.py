"""`wsss prepare folder --masks`: every bad input listed at once, nothing written on failure, the same
rules as check-data (truncated images, masks contradicting labels), and a val split by default."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from wsss.cli import main
from wsss.core.errors import DataError
from wsss.data import check_dataset
from wsss.data.prepare.folder import prepare_folder
from wsss.data.voc import read_split
from wsss.utils.io import save_label_png

CLASSES = ["background", "cat", "dog"]


@pytest.fixture
def folder(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    rng = np.random.default_rng(0)
    lines = ["image,labels"]
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (16, 20, 3), dtype=np.uint8)).save(images / f"im{i}.jpg", quality=90)
        mask = np.zeros((16, 20), np.uint8)
        mask[4:10, 5:12] = 1 + i % 2
        save_label_png(masks / f"im{i}.png", mask)
        lines.append(f"im{i}.jpg,{CLASSES[1 + i % 2]}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return tmp_path


def _prepare(folder, **kw):
    return prepare_folder(
        folder / "images",
        folder / "labels.csv",
        folder / "classes.txt",
        folder / "out",
        masks=folder / "masks",
        progress=False,
        **kw,
    )


def test_every_bad_input_is_listed_and_nothing_is_written(folder):
    save_label_png(folder / "masks/im1.png", np.full((16, 20), 7, np.uint8))  # not a class
    save_label_png(folder / "masks/im3.png", np.zeros((8, 20), np.uint8))  # wrong size
    mask = np.zeros((16, 20), np.uint8)
    mask[:4] = 1  # a cat in the mask of im5, labelled dog only
    save_label_png(folder / "masks/im5.png", mask)
    data = (folder / "images/im6.jpg").read_bytes()
    (folder / "images/im6.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG
    with pytest.raises(DataError) as e:
        _prepare(folder)
    msg = str(e.value)
    assert msg.startswith("4 problem(s)") and "nothing was written" in msg
    needles = (
        "im1.png: illegal mask values [7]",
        "im3.png: mask size 20x8",
        "im5.png (in the mask but not in the label: 1 (cat))",
        "im6.jpg",
    )
    for needle in needles:
        assert needle in msg, needle
    assert not (folder / "out").exists()


def test_label_without_mask_pixels_is_a_warning(folder):
    save_label_png(folder / "masks/im2.png", np.zeros((16, 20), np.uint8))  # the cat all background
    s = _prepare(folder)
    assert any("1 images are labelled with a class that has no pixel" in w and "im2" in w for w in s.warnings)
    assert check_dataset(folder / "out", progress=False).ok


def test_val_split_by_default_with_masks(folder, capsys):
    argv = [
        "prepare",
        "folder",
        "--images",
        str(folder / "images"),
        "--labels",
        str(folder / "labels.csv"),
        "--classes",
        str(folder / "classes.txt"),
        "--out",
        str(folder / "out"),
        "--masks",
        str(folder / "masks"),
    ]
    assert main([*argv, "--quiet"]) == 0
    val, train = read_split(folder / "out", "val"), read_split(folder / "out", "train")
    assert len(val) == 2 and len(train) == 8 and not set(val) & set(train)
    assert check_dataset(folder / "out", progress=False).ok
