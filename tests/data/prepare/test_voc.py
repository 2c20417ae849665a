"""`wsss prepare voc` on a miniature VOC 2012 devkit + SBD release in the real formats (docs/datasets.md#voc-layout)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import sparse
from scipy.io import savemat

from wsss.cli import main
from wsss.core.errors import DataError
from wsss.data import VOCDataset, check_dataset
from wsss.data.prepare.voc import check_counts, prepare_voc
from wsss.data.voc import load_cls_labels, read_split
from wsss.utils.io import read_label_png, save_label_png

A, B, C, D, E, F, T = (
    "2007_000001",
    "2007_000002",
    "2008_000003",
    "2008_000004",
    "2009_000005",
    "2009_000006",
    "2010_000007",
)

# VOC SegmentationClass masks (class indices, 255 = boundary). 15 person, 12 dog, 9 chair, 1 aeroplane.
VOC_MASKS = {
    A: [[0, 0, 255, 15, 15], [0, 255, 15, 15, 15], [0, 0, 255, 15, 15], [0, 0, 0, 0, 0]],
    B: [[12, 12, 255, 0, 0], [12, 12, 255, 0, 0], [255, 255, 0, 0, 0], [0, 0, 0, 0, 0]],
    C: [[1, 1, 1, 1, 1], [255, 255, 255, 255, 255], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
    D: [[0, 0, 0, 0, 0], [0, 9, 9, 9, 0], [0, 9, 9, 9, 0], [0, 0, 0, 0, 0]],
}
# SBD GTcls.Segmentation maps (no boundary class). A's differs from VOC's: VOC must win.
SBD_MAPS = {
    A: [[0, 0, 3, 3, 3], [0, 0, 3, 3, 3], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
    C: [[2, 2, 2, 2, 2], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
    D: [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 7]],
    E: [[0, 0, 0, 0, 0], [0, 20, 20, 0, 0], [0, 20, 20, 0, 5], [0, 0, 0, 0, 5]],
    F: [[19, 19, 19, 19, 19], [19, 19, 19, 19, 19], [0, 0, 0, 0, 0], [8, 8, 0, 0, 0]],
}
# Annotations XML object names (PSA's labels). A also lists a chair the mask does not show.
XML_OBJECTS = {
    A: ["person", "chair"],
    B: ["dog"],
    C: ["aeroplane"],
    D: ["chair"],
    E: ["tvmonitor", "bottle"],
    F: ["train", "cat", "train"],
}


def _jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, quality=95)


def _xml(path: Path, names: list[str]) -> None:
    objs = "".join(
        f"<object><name>{n}</name><difficult>0</difficult>"
        + ("<part><name>head</name></part>" if n == "person" else "")
        + "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object>"
        for n in names
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><filename>{path.stem}.jpg</filename>{objs}</annotation>")


def _gtcls(path: Path, seg: np.ndarray) -> None:
    """An SBD cls/<id>.mat in the release's struct layout: GTcls.{Boundaries, Segmentation, CategoriesPresent}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cats = np.unique(seg[seg > 0]).astype(np.uint8)
    boundaries = np.empty((20, 1), dtype=object)
    for i in range(20):
        boundaries[i, 0] = sparse.csc_matrix((seg == i + 1).astype(np.float64))  # MATLAB sparse, as released
    savemat(
        str(path),
        {"GTcls": {"Boundaries": boundaries, "Segmentation": seg.astype(np.uint8), "CategoriesPresent": cats}},
    )


def _lines(path: Path, ids: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


@pytest.fixture
def downloads(tmp_path) -> tuple[Path, Path]:
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    sets = voc / "ImageSets" / "Segmentation"
    _lines(sets / "train.txt", [A, B])
    _lines(sets / "val.txt", [C, D])
    _lines(sets / "trainval.txt", [A, B, C, D])
    _lines(sets / "test.txt", [T])
    for i, id in enumerate([A, B, C, D, E, T]):  # F's image is only in SBD's img/
        _jpeg(voc / "JPEGImages" / f"{id}.jpg", i)
    for id, m in VOC_MASKS.items():
        save_label_png(voc / "SegmentationClass" / f"{id}.png", np.array(m, dtype=np.uint8))
    for id, names in XML_OBJECTS.items():
        _xml(voc / "Annotations" / f"{id}.xml", names)
    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    for id, m in SBD_MAPS.items():
        _gtcls(sbd / "cls" / f"{id}.mat", np.array(m, dtype=np.uint8))
    _jpeg(sbd / "img" / f"{F}.jpg", 99)
    _lines(sbd / "train.txt", [A, E, C])
    _lines(sbd / "val.txt", [F, D])
    return tmp_path / "VOCdevkit", tmp_path / "benchmark_RELEASE"


def _onehot(*classes: int) -> np.ndarray:
    v = np.zeros(20, dtype=np.float32)
    v[[c - 1 for c in classes]] = 1
    return v


def test_prepare_voc_outputs(downloads, tmp_path):
    voc, sbd = downloads
    out = tmp_path / "out"
    summary = prepare_voc(voc, sbd, out, labels="xml", workers=2, progress=False)

    assert read_split(out, "train_aug") == [A, B, E, F]  # VOC train + SBD train/val - VOC val
    assert read_split(out, "train") == [A, B]
    assert read_split(out, "val") == [C, D]
    assert read_split(out, "trainval") == [A, B, C, D]
    assert read_split(out, "test") == [T]

    aug = out / "SegmentationClassAug"
    assert sorted(p.stem for p in aug.glob("*.png")) == sorted([A, B, C, D, E, F])
    for id in [A, B, C, D]:  # VOC wins, 255 boundaries kept
        np.testing.assert_array_equal(read_label_png(aug / f"{id}.png"), np.array(VOC_MASKS[id], dtype=np.uint8))
    for id in [E, F]:
        np.testing.assert_array_equal(read_label_png(aug / f"{id}.png"), np.array(SBD_MAPS[id], dtype=np.uint8))
    assert Image.open(aug / f"{A}.png").mode == "P"

    labels = load_cls_labels(out, 21)
    assert sorted(labels) == sorted([A, B, C, D, E, F])
    expected = {A: _onehot(15, 9), B: _onehot(12), C: _onehot(1), D: _onehot(9), E: _onehot(20, 5), F: _onehot(19, 8)}
    for id, v in expected.items():
        np.testing.assert_array_equal(labels[id], v)
        assert labels[id].dtype == np.float32
    raw = np.load(out / "cls_labels.npy", allow_pickle=True).item()  # the PSA / ToCo reading
    assert isinstance(raw, dict) and raw[A].shape == (20,)

    assert (out / "classes.txt").read_text().splitlines()[:3] == ["background", "aeroplane", "bicycle"]
    for id in [A, B, C, D, E, F, T]:
        assert (out / "JPEGImages" / f"{id}.jpg").is_file()
    assert os.path.samefile(out / "JPEGImages" / f"{A}.jpg", voc / "VOC2012" / "JPEGImages" / f"{A}.jpg")
    assert (out / "JPEGImages" / f"{F}.jpg").read_bytes() == (sbd / "dataset" / "img" / f"{F}.jpg").read_bytes()

    assert summary.counts["train_aug"] == 4 and summary.counts["masks"] == 6
    assert summary.counts["masks_from_voc"] == 4 and summary.counts["masks_from_sbd"] == 2
    assert any("not the full official releases" in w for w in summary.warnings)

    ds = VOCDataset(out, "train_aug", require_masks=True)  # the toolkit reads what it wrote
    np.testing.assert_array_equal(ds.labels(A), _onehot(15, 9))


def test_prepare_voc_labels_from_masks_and_resume(downloads, tmp_path):
    voc, sbd = downloads
    out = tmp_path / "out"
    prepare_voc(voc, sbd, out, images="copy", workers=0, progress=False)  # labels from the masks by default
    labels = load_cls_labels(out, 21)
    np.testing.assert_array_equal(labels[A], _onehot(15))  # no chair: the mask does not show it
    np.testing.assert_array_equal(labels[F], _onehot(19, 8))
    assert not os.path.samefile(out / "JPEGImages" / f"{A}.jpg", voc / "VOC2012" / "JPEGImages" / f"{A}.jpg")
    for split in ("train_aug", "val"):  # what `wsss train` checks before training
        report = check_dataset(out, split, progress=False)
        assert report.ok, report.format()
    # every split at once, VOC's unlabelled test split included: usable for prediction, not a problem
    report = check_dataset(out, progress=False)
    assert report.ok, report.format()
    assert any("'test'" in w and "prediction only" in w for w in report.warnings), report.warnings
    # a labelled split with one id lacking its label is still a problem
    with open(out / "ImageSets" / "Segmentation" / "val.txt", "a") as f:
        f.write(f"{T}\n")
    report = check_dataset(out, "val", progress=False)
    assert not report.ok and any("no label for 1 id(s)" in p for p in report.problems), report.format()

    # Resume: an existing output is kept, a missing one is written again.
    (out / "SegmentationClassAug" / f"{E}.png").unlink()
    mtime = (out / "SegmentationClassAug" / f"{B}.png").stat().st_mtime_ns
    summary = prepare_voc(voc, sbd, out, labels="mask", images="copy", workers=0, progress=False)
    assert (out / "SegmentationClassAug" / f"{B}.png").stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(
        read_label_png(out / "SegmentationClassAug" / f"{E}.png"), np.array(SBD_MAPS[E], dtype=np.uint8)
    )
    assert summary.counts["images_placed"] == 0


def test_prepare_voc_cli(downloads, tmp_path, capsys):
    voc, sbd = downloads
    out = tmp_path / "cli"
    assert main(["prepare", "voc", "--voc", str(voc), "--sbd", str(sbd), "--out", str(out), "--workers", "0"]) == 0
    text = capsys.readouterr().out
    assert "train_aug" in text and "warning: inputs are not the full official releases" in text
    assert read_split(out, "train_aug") == [A, B, E, F]


def test_prepare_voc_errors(downloads, tmp_path):
    voc, sbd = downloads
    _lines(sbd / "dataset" / "train.txt", [A, E, C, "2011_000099"])
    with pytest.raises(DataError, match="2011_000099"):
        prepare_voc(voc, sbd, tmp_path / "o1", workers=0, progress=False)
    _lines(sbd / "dataset" / "train.txt", [A, E, C])

    savemat(str(sbd / "dataset" / "cls" / f"{E}.mat"), {"other": np.zeros((2, 2))})
    with pytest.raises(DataError, match=rf"{E}\.mat: no GTcls struct"):
        prepare_voc(voc, sbd, tmp_path / "o2", workers=0, progress=False)
    _gtcls(sbd / "dataset" / "cls" / f"{E}.mat", np.full((4, 5), 21, dtype=np.uint8))
    with pytest.raises(DataError, match=r"values \[21\] outside 0..20"):
        prepare_voc(voc, sbd, tmp_path / "o3", workers=0, progress=False)

    with pytest.raises(DataError, match="not a VOC 2012 devkit"):
        prepare_voc(sbd, sbd, tmp_path / "o4", progress=False)
    assert main(["prepare", "voc", "--voc", str(voc), "--sbd", str(tmp_path), "--out", str(tmp_path / "o5")]) == 1


def test_count_checks():
    official = {"voc_train": 1464, "voc_val": 1449, "sbd_train": 8498, "sbd_val": 2857}
    errors, warnings = check_counts({**official, "train_aug": 10582, "cls_labels": 12031, "masks": 12031})
    assert errors == [] and warnings == []
    errors, _ = check_counts({**official, "train_aug": 10581, "cls_labels": 12031, "masks": 12031})
    assert errors == ["train_aug: 10581 ids, expected 10582 from the full official releases"]
    errors, warnings = check_counts({**official, "sbd_val": 100, "train_aug": 9000})
    assert errors == [] and "sbd_val 100 (official 2857)" in warnings[0]


def test_prepare_voc_refuses_ids_that_leave_the_output(downloads, tmp_path):
    voc, sbd = downloads
    _lines(sbd / "dataset" / "train.txt", [A, "../../escaped", C])
    with pytest.raises(DataError, match=r"train\.txt:2: unsafe image id '\.\./\.\./escaped'"):
        prepare_voc(voc, sbd, tmp_path / "out" / "o", workers=0, progress=False)
    assert not (tmp_path / "out").exists() and not list(tmp_path.rglob("escaped*"))


def _users_dataset(root: Path) -> dict[Path, bytes]:
    """A user's dataset of their own classes (what `wsss prepare folder` makes): its files and their bytes."""
    (root / "ImageSets/Segmentation").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "classes.txt").write_text("background\ncat\n")
    (root / "cls_labels.npy").write_bytes(b"mine")
    (root / "ImageSets/Segmentation/train.txt").write_text("x\n")
    (root / "JPEGImages/x.jpg").write_bytes(b"my photo")
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_prepare_voc_refuses_another_dataset_without_overwrite(downloads, tmp_path, capsys):
    """`wsss prepare voc --out mine` wrote over a user's dataset: VOC's classes.txt, cls_labels.npy and split lists in
    place of theirs, VOC's masks beside their photos. Refused now, naming the files, nothing written; --overwrite
    replaces them with VOC's (a fresh run's dataset); an input inside them is refused even then; VOC's own dataset
    is continued without --overwrite (the rule that `wsss data fetch` already kept)."""
    voc, sbd = downloads
    mine = tmp_path / "mine"
    before = _users_dataset(mine)
    args = ["prepare", "voc", "--voc", str(voc), "--sbd", str(sbd), "--out", str(mine), "--workers", "0", "--quiet"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{mine}: holds files that `wsss prepare voc` did not prepare" in err
    assert "classes.txt, cls_labels.npy, ImageSets/Segmentation/train.txt, JPEGImages" in err and "--overwrite" in err
    assert {p: p.read_bytes() for p in mine.rglob("*") if p.is_file()} == before
    # an input inside what --overwrite would replace is refused, and nothing is removed
    inside = mine / "JPEGImages" / "devkit"
    shutil.copytree(voc, inside)
    assert main(["prepare", "voc", "--voc", str(inside), "--out", str(mine), "--workers", "0", "--overwrite"]) == 1
    assert "an output of this command (--overwrite would delete it)" in capsys.readouterr().err
    assert (mine / "JPEGImages/x.jpg").read_bytes() == b"my photo" and inside.is_dir()
    shutil.rmtree(inside)
    assert main([*args, "--overwrite"]) == 0
    assert read_split(mine, "train_aug") == [A, B, E, F]
    assert not (mine / "ImageSets/Segmentation/train.txt").read_text().startswith("x")
    assert not (mine / "JPEGImages/x.jpg").exists() and (mine / "classes.txt").read_text().startswith("background\n")
    assert voc.is_dir() and sbd.is_dir()  # the inputs are never touched
    assert main(args) == 0  # VOC's own dataset: continued
