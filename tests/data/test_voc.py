"""VOC-layout datasets: real VOC photos (voc-real-mini), cls_labels.npy handling, the classifier
training wrapper and its pseudo-label targets (``target_dir``, AffinityNet's training labels)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from conftest import VOC_REAL_MINI, VOC_REAL_MINI_IDS
from wsss.core.config import TrueMasks
from wsss.core.errors import ConfigError, DataError
from wsss.data import ClsTrainDataset, VOCDataset, read_classes
from wsss.data.classes import COCO_CLASSES, VOC_CLASSES
from wsss.data.transforms import TrainAugment
from wsss.data.voc import run_dataset, true_mask_paths, write_cls_labels
from wsss.utils.io import save_label_png


@pytest.fixture()
def mini_copy(tmp_path: Path) -> Path:
    root = tmp_path / "voc"
    shutil.copytree(VOC_REAL_MINI, root)
    return root


def mask_classes(path: Path) -> set[int]:
    """Foreground classes of a mask, read independently of the code under test."""
    values = np.unique(np.asarray(Image.open(path)))
    return {int(v) for v in values if 0 < v < 255}


# ---- class lists --------------------------------------------------------------------------------


def test_class_lists():
    assert len(VOC_CLASSES) == 21 and VOC_CLASSES[0] == "background"
    assert VOC_CLASSES[1] == "aeroplane" and VOC_CLASSES[15] == "person" and VOC_CLASSES[20] == "tvmonitor"
    assert len(COCO_CLASSES) == 81 and len(set(COCO_CLASSES)) == 81
    assert COCO_CLASSES[1] == "person" and COCO_CLASSES[5] == "airplane" and COCO_CLASSES[80] == "toothbrush"


def test_read_classes(tmp_path: Path):
    assert read_classes(tmp_path) == VOC_CLASSES
    (tmp_path / "classes.txt").write_text("background\ncat\n  dog  \n\n")  # blank lines at the end: nothing shifts
    assert read_classes(tmp_path) == ["background", "cat", "dog"]
    (tmp_path / "classes.txt").write_text("background\n\ncat\n")  # would make cat class 1, not the line's 2
    with pytest.raises(DataError, match=r"classes\.txt:2: blank line"):
        read_classes(tmp_path)
    (tmp_path / "classes.txt").write_text("background\ncat\ncat\n")
    with pytest.raises(DataError, match=r"classes\.txt.*duplicate.*cat"):
        read_classes(tmp_path)
    (tmp_path / "classes.txt").write_text("background\n")
    with pytest.raises(DataError, match=r"classes\.txt"):
        read_classes(tmp_path)


def test_a_dataset_moved_away_while_a_job_reads_it_is_not_taken_for_voc(tmp_path: Path):
    """A dataset edited while a job reads it: a data set folder renamed after the job read its
    split was read as VOC's 21 classes ("the dataset has 21 classes but the run was trained with 7"); no folder is
    now "dataset root not found"."""
    gone = tmp_path / "moved_away"
    with pytest.raises(DataError, match=rf"^{gone}: dataset root not found$"):
        read_classes(gone)


# ---- VOCDataset on real VOC photos --------------------------------------------------------------


def test_real_mini_ids_classes_and_labels_from_masks():
    ds = VOCDataset(VOC_REAL_MINI, "val")
    assert ds.root == VOC_REAL_MINI and ds.split == "val"
    assert ds.ids == VOC_REAL_MINI_IDS and len(ds) == 6
    assert ds.class_names == VOC_CLASSES and ds.num_classes == 21
    union = set()
    for id in ds.ids:
        expected = mask_classes(VOC_REAL_MINI / "SegmentationClass" / f"{id}.png")
        lab = ds.labels(id)
        assert lab.dtype == np.float32 and lab.shape == (20,)
        assert {int(k) + 1 for k in np.flatnonzero(lab)} == expected, id
        union |= {VOC_CLASSES[c] for c in expected}
    # the classes SOURCE.md lists for these photos
    assert union == {"bottle", "person", "chair", "sofa", "bus", "car", "aeroplane", "sheep", "bird"}
    names = {id: {VOC_CLASSES[int(k) + 1] for k in np.flatnonzero(ds.labels(id))} for id in ds.ids}
    assert names["voc2012val_sample_1"] == {"aeroplane"}
    assert names["voc2012val_sample_23"] == {"sheep"}
    assert names["voc2012val_sample_114"] == {"bird"}
    assert {"bus", "car"} <= names["2011_000025"]


def test_real_mini_items_and_paths():
    ds = VOCDataset(VOC_REAL_MINI, "val", require_masks=True)
    item = ds[0]
    assert set(item) == {"id", "image", "mask", "labels"} and item["id"] == "2011_000003"
    img, mask = item["image"], item["mask"]
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert mask.dtype == np.uint8 and mask.shape == img.shape[:2] == (338, 500)
    assert ds.image_path("2011_000003") == VOC_REAL_MINI / "JPEGImages/2011_000003.jpg"
    assert ds.mask_path("2011_000003") == VOC_REAL_MINI / "SegmentationClass/2011_000003.png"
    assert ds.has_mask("2011_000003") and not ds.has_mask("nope")
    assert ds.mask_path("nope") is None
    with pytest.raises(DataError, match="nope"):
        ds.load_mask("nope")
    with pytest.raises(DataError, match=r"nope\.jpg"):
        ds.load_image("nope")


def test_missing_split_names_file_and_lists_splits():
    with pytest.raises(DataError, match=r"train_aug\.txt.*available splits: val"):
        VOCDataset(VOC_REAL_MINI, "train_aug")


def test_split_file_blank_lines_and_png_images_and_aug_masks(mini_copy: Path):
    (mini_copy / "ImageSets/Segmentation/val.txt").write_text("\n2011_000003\n\n  2011_000025 \n\n")
    # a .png image instead of .jpg
    jpg = mini_copy / "JPEGImages/2011_000025.jpg"
    Image.open(jpg).save(jpg.with_suffix(".png"))
    jpg.unlink()
    # SegmentationClassAug is preferred over SegmentationClass
    aug = mini_copy / "SegmentationClassAug"
    aug.mkdir()
    m = np.zeros((338, 500), np.uint8)
    m[:10, :10] = 12  # dog
    Image.fromarray(m, mode="L").save(aug / "2011_000003.png")
    ds = VOCDataset(mini_copy, "val")
    assert ds.ids == ["2011_000003", "2011_000025"]
    assert ds.image_path("2011_000025").suffix == ".png"
    assert ds[1]["image"].shape == (375, 500, 3)
    assert ds.mask_path("2011_000003") == aug / "2011_000003.png"
    assert ds.mask_path("2011_000025") == mini_copy / "SegmentationClass/2011_000025.png"
    assert np.flatnonzero(ds.labels("2011_000003")).tolist() == [11]


def test_require_masks_and_no_labels_at_all(mini_copy: Path):
    (mini_copy / "SegmentationClass/voc2012val_sample_23.png").unlink()
    with pytest.raises(DataError, match="voc2012val_sample_23"):
        VOCDataset(mini_copy, "val", require_masks=True)
    ds = VOCDataset(mini_copy, "val")
    assert not ds.has_mask("voc2012val_sample_23") and ds[3]["mask"] is not None
    with pytest.raises(DataError, match=r"voc2012val_sample_23.*cls_labels\.npy"):
        ds.labels("voc2012val_sample_23")
    # with a label file, a sample without a mask is fine (training needs image labels only)
    write_cls_labels(mini_copy, {id: np.eye(20, dtype=np.float32)[16] for id in VOC_REAL_MINI_IDS})
    item = VOCDataset(mini_copy, "val")[4]
    assert item["mask"] is None and np.flatnonzero(item["labels"]).tolist() == [16]


def test_cls_labels_npy_is_preferred_and_cached(mini_copy: Path):
    table = {}
    for id in VOC_REAL_MINI_IDS:
        v = np.zeros(20, np.float32)
        v[14] = 1.0  # everybody is a "person" according to the label file
        table[id] = v
    write_cls_labels(mini_copy, table)
    loaded = np.load(mini_copy / "cls_labels.npy", allow_pickle=True).item()
    assert set(loaded) == set(VOC_REAL_MINI_IDS) and loaded["2011_000003"].dtype == np.float32
    ds = VOCDataset(mini_copy, "val")
    assert np.flatnonzero(ds.labels("voc2012val_sample_23")).tolist() == [14]
    # loaded once: deleting the file does not change the answers
    (mini_copy / "cls_labels.npy").unlink()
    assert np.flatnonzero(ds[5]["labels"]).tolist() == [14]
    # a fresh dataset falls back to the masks
    assert np.flatnonzero(VOCDataset(mini_copy, "val").labels("voc2012val_sample_23")).tolist() == [16]


def test_cls_labels_length_mismatch_names_both_files(mini_copy: Path):
    write_cls_labels(mini_copy, {id: np.ones(6, np.float32) for id in VOC_REAL_MINI_IDS})
    ds = VOCDataset(mini_copy, "val")
    with pytest.raises(DataError) as e:
        ds.labels("2011_000003")
    msg = str(e.value)
    assert "cls_labels.npy" in msg and "classes.txt" in msg and "6" in msg and "20" in msg
    # with a custom classes.txt the message names that file
    (mini_copy / "classes.txt").write_text("background\na\nb\nc\n")
    with pytest.raises(DataError, match=r"cls_labels\.npy.*classes\.txt lists 4 classes"):
        VOCDataset(mini_copy, "val").labels("2011_000003")


def test_mask_values_outside_classes_raise(mini_copy: Path):
    (mini_copy / "classes.txt").write_text("background\naeroplane\nbicycle\n")
    ds = VOCDataset(mini_copy, "val")
    assert ds.num_classes == 3
    assert ds.labels("voc2012val_sample_1").tolist() == [1.0, 0.0]
    with pytest.raises(DataError, match=r"voc2012val_sample_23\.png.*\[17\]"):
        ds.labels("voc2012val_sample_23")


# ---- ClsTrainDataset ----------------------------------------------------------------------------


def test_cls_train_dataset_sample():
    base = VOCDataset(VOC_REAL_MINI, "val")
    ds = ClsTrainDataset(base, TrainAugment(96), seed=0)
    assert len(ds) == 6 and ds.num_classes == 21 and ds.class_names == VOC_CLASSES
    s = ds[3]  # voc2012val_sample_1: a single aeroplane
    assert s["id"] == "voc2012val_sample_1"
    assert s["image"].shape == (3, 96, 96) and s["image"].dtype == torch.float32
    assert s["labels"].dtype == torch.float32 and s["labels"].shape == (20,)
    assert s["img_box"].dtype == torch.long and s["img_box"].shape == (4,)
    h0, h1, w0, w1 = s["img_box"].tolist()
    assert 0 <= h0 < h1 <= 96 and 0 <= w0 < w1 <= 96
    assert int(s["label_idx"]) == 1  # aeroplane, 1-based
    assert int(ds[0]["label_idx"]) == -1  # bottle + person
    # seeded: the same sample twice, and another epoch differs
    assert torch.equal(ds[3]["image"], s["image"])
    ds.set_epoch(1)
    assert not torch.equal(ds[3]["image"], s["image"])


def test_cls_train_dataset_extra_views_and_loader():
    base = VOCDataset(VOC_REAL_MINI, "val")

    def views(image, crop, rng):
        assert image.dtype == np.uint8 and crop.shape == (64, 64, 3)
        return {"orig_hw": torch.tensor(image.shape[:2]), "flip": torch.from_numpy(crop[:, ::-1].copy())}

    ds = ClsTrainDataset(base, TrainAugment(64), extra_views=views)
    s = ds[0]
    assert s["orig_hw"].tolist() == [338, 500] and s["flip"].shape == (64, 64, 3)
    ds2 = ClsTrainDataset(base, TrainAugment(64), extra_views={"mean": lambda img, crop: float(crop.mean())})
    assert isinstance(ds2[1]["mean"], float)
    torch.manual_seed(0)
    batch = next(iter(DataLoader(ds, batch_size=3, shuffle=False)))
    assert batch["image"].shape == (3, 3, 64, 64) and batch["labels"].shape == (3, 20)
    assert batch["img_box"].shape == (3, 4) and batch["label_idx"].shape == (3,)
    assert batch["id"] == VOC_REAL_MINI_IDS[:3]


def test_target_follows_the_augmentation(synth_root, tmp_path):
    base = VOCDataset(synth_root, "train")
    for i in base.ids:
        save_label_png(tmp_path / f"{i}.png", base.load_mask(i))
    aug = TrainAugment(48, scale_range=(0.5, 1.5), hflip=True)
    plain = ClsTrainDataset(base, aug, seed=5)
    with_t = ClsTrainDataset(base, aug, seed=5, target_dir=tmp_path)
    for k in range(4):
        a, b = plain[k], with_t[k]
        assert "target" not in a
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["img_box"], b["img_box"])
        ref = aug(base.load_image(base.ids[k]), plain.rng_for(k), mask=base.load_mask(base.ids[k]))
        assert torch.equal(b["target"], torch.from_numpy(ref["mask"].astype(np.int64)))
        h0, h1, w0, w1 = b["img_box"].tolist()
        outside = torch.ones(48, 48, dtype=torch.bool)
        outside[h0:h1, w0:w1] = False
        assert bool((b["target"][outside] == 255).all())  # crop padding is ignore
    (tmp_path / f"{base.ids[3]}.png").unlink()
    with pytest.raises(DataError, match=f"{base.ids[3]}.png"):
        ClsTrainDataset(base, aug, target_dir=tmp_path)


def test_the_datasets_own_masks_as_targets_give_the_masks():
    # the fully supervised ceiling of a route: data.pseudo_dir = ROOT/SegmentationClass, the
    # palette PNGs as shipped (VOC's 255 object borders included), are read as the masks themselves
    base = VOCDataset(VOC_REAL_MINI, "val")
    aug = TrainAugment(96, scale_range=(0.75, 1.25), hflip=True)
    ds = ClsTrainDataset(base, aug, seed=2, target_dir=VOC_REAL_MINI / "SegmentationClass")
    for k, id in enumerate(base.ids):
        mask = base.load_mask(id)
        assert np.array_equal(ds.load_target(id, mask.shape), mask)
        ref = aug(base.load_image(id), ds.rng_for(k), mask=mask)
        assert torch.equal(ds[k]["target"], torch.from_numpy(ref["mask"].astype(np.int64)))
    assert (base.load_mask(base.ids[0]) == 255).any()  # the borders are in the masks, and so in the targets


def test_true_masks_win_over_pseudo_labels_and_carry_their_weight(synth_root, tmp_path):
    # data.true_masks: the user's mask of a photo is its target, its pseudo label is not read (nor needed)
    base = VOCDataset(synth_root, "train")
    pseudo, masks = tmp_path / "pseudo", tmp_path / "masks"
    for i in base.ids:
        save_label_png(pseudo / f"{i}.png", np.full(base.load_mask(i).shape, 255, np.uint8))  # all ignored
    masked = base.ids[:2]
    for i in masked:
        save_label_png(masks / f"{i}.png", base.load_mask(i))
        (pseudo / f"{i}.png").unlink()
    found = true_mask_paths(synth_root, "train", TrueMasks(folder=masks))
    assert found == {i: masks / f"{i}.png" for i in masked}
    assert set(true_mask_paths(synth_root, "train", TrueMasks(own=True))) == set(base.ids)  # the set's own masks
    aug = TrainAugment(48, scale_range=(0.9, 1.1), hflip=False)
    ds = ClsTrainDataset(base, aug, seed=1)
    ds.set_target_dir(pseudo, true_masks=found, true_mask_weight=3.0)
    for k, id in enumerate(base.ids[:4]):
        s = ds[k]
        mask = base.load_mask(id)
        if id in masked:
            ref = aug(base.load_image(id), ds.rng_for(k), mask=mask)
            assert torch.equal(s["target"], torch.from_numpy(ref["mask"].astype(np.int64)))
            assert bool((s["target"] != 255).any()) and float(s["target_weight"]) == 3.0
        else:
            assert bool((s["target"] == 255).all()) and float(s["target_weight"]) == 1.0
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["target_weight"].tolist() == [3.0, 3.0, 1.0, 1.0]
    # without true masks a sample has no weight (the other methods' batches are unchanged)
    assert "target_weight" not in ClsTrainDataset(base, aug, seed=1, target_dir=synth_root / "SegmentationClass")[0]
    # an unmasked photo without a pseudo label: the error names its file; no pseudo labels at all: the split file
    (pseudo / f"{base.ids[2]}.png").unlink()
    with pytest.raises(DataError, match=f"{base.ids[2]}.png.*no true mask"):
        ds.set_target_dir(pseudo, true_masks=found)
    with pytest.raises(DataError, match=r"train\.txt: .* no true mask"):
        ds.set_target_dir(None, true_masks=found)
    with pytest.raises(DataError, match=r"train\.txt: no segmentation targets"):
        ds.set_target_dir(None, true_masks={})
    with pytest.raises(DataError, match="mask folder not found"):
        true_mask_paths(synth_root, "train", TrueMasks(folder=tmp_path / "nowhere"))


def test_a_classifiers_targets_ignore_the_photos_without_a_mask(synth_root, tmp_path):
    # data.true_masks on a classifier (Method.mask_term): no pseudo labels; a photo without a mask gets an ignored
    # target and weight 0, a masked one its mask and data.true_mask_weight
    base = VOCDataset(synth_root, "train")
    masks = tmp_path / "masks"
    masked = base.ids[1:3]
    for i in masked:
        save_label_png(masks / f"{i}.png", base.load_mask(i))
    aug = TrainAugment(48, scale_range=(0.9, 1.1), hflip=False)
    ds = ClsTrainDataset(base, aug, seed=1)
    found = true_mask_paths(synth_root, "train", TrueMasks(folder=masks))
    ds.set_target_dir(None, true_masks=found, true_mask_weight=2.0, unmasked_ignored=True)
    for k, id in enumerate(base.ids[:4]):
        s = ds[k]
        if id in masked:
            ref = aug(base.load_image(id), ds.rng_for(k), mask=base.load_mask(id))
            assert torch.equal(s["target"], torch.from_numpy(ref["mask"].astype(np.int64)))
            assert float(s["target_weight"]) == 2.0
        else:
            assert bool((s["target"] == 255).all()) and float(s["target_weight"]) == 0.0
    with pytest.raises(ValueError, match="without pseudo labels"):
        ds.set_target_dir(masks, unmasked_ignored=True)


def test_a_run_without_data_root_asks_for_data_root(tmp_path):
    """A command on a run whose config names no data set, without --data-root: one ConfigError naming the run."""
    with pytest.raises(ConfigError, match=r"run: the run's config has no data.root; .* --data-root DIR$"):
        run_dataset(None, None, "train", tmp_path / "run")
