"""The synthetic co-occurrence dataset: layout, determinism, design frequencies, void band."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from wsss.data import VOCDataset, check_dataset, generate_synthetic, read_classes
from wsss.data.synth import CLASS_NAMES, render_sample
from wsss.data.synth_files import encode_label_png
from wsss.utils.io import read_label_png, save_label_png

BOAT, TRAIN, HORSE, RIDER = 1, 2, 3, 4


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> tuple[Path, dict, float]:
    """1,000 images at 128 px (the demo's size), timed."""
    out = tmp_path_factory.mktemp("synth") / "d"
    t0 = time.perf_counter()
    counts = generate_synthetic(out, n_train=800, n_val=200, size=128, seed=0, verbose=False)
    return out, counts, time.perf_counter() - t0


@pytest.fixture(scope="module")
def samples() -> list:
    return [render_sample(7, "train", i, 128) for i in range(300)]


def test_generation_time_1000_images(big, capsys):
    _, counts, seconds = big
    with capsys.disabled():
        print(f"\n[synth] 1000 images at 128 px generated in {seconds:.2f} s")
    assert counts["images"] == 1000


def test_layout_and_counts(big):
    root, counts, _ = big
    assert counts["train"] == 800 and counts["val"] == 200 and counts["images"] == 1000
    assert read_classes(root) == CLASS_NAMES == ["background", "boat", "train", "horse", "rider", "bird", "bottle"]
    train, val = VOCDataset(root, "train"), VOCDataset(root, "val")
    assert len(train) == 800 and len(val) == 200 and not set(train.ids) & set(val.ids)
    assert len(list((root / "JPEGImages").glob("*.jpg"))) == 1000
    assert len(list((root / "SegmentationClass").glob("*.png"))) == 1000
    table = np.load(root / "cls_labels.npy", allow_pickle=True).item()
    assert set(table) == set(train.ids) | set(val.ids)
    assert all(v.dtype == np.float32 and v.shape == (6,) for v in table.values())
    # per-class image counts agree with the label file
    lab = np.stack(list(table.values()))
    assert counts["class_images"] == {CLASS_NAMES[c]: int(lab[:, c - 1].sum()) for c in range(1, 7)}
    assert min(counts["class_images"].values()) > 150  # every class is well represented
    item = val[0]
    assert item["image"].shape == (128, 128, 3) and item["mask"].shape == (128, 128)


def test_labels_match_masks_and_dataset_checks_clean(big):
    root, _, _ = big
    table = np.load(root / "cls_labels.npy", allow_pickle=True).item()
    for id, vec in list(table.items())[::4]:
        mask = read_label_png(root / "SegmentationClass" / f"{id}.png")
        assert set(np.unique(mask)) <= set(range(7)) | {255}
        present = {int(v) for v in np.unique(mask) if 0 < v < 255}
        assert {int(k) + 1 for k in np.flatnonzero(vec)} == present, id
    report = check_dataset(root)
    assert report.ok, report.format()


def test_context_pixels_are_background(big, samples):
    root, _, _ = big
    for id in ["train_00000", "train_00001", "train_00002", "val_00000", "val_00003"]:
        ctx = read_label_png(root / "SegmentationContext" / f"{id}.png")
        gt = read_label_png(root / "SegmentationClass" / f"{id}.png")
        assert (gt[ctx > 0] == 0).all()
    n_ctx = 0
    for s in samples:
        assert (s.mask[s.context > 0] == 0).all()
        for name, k in (("water", 1), ("rails", 2)):
            assert (name in s.contexts) == bool((s.context == k).any())
        n_ctx += bool(s.contexts)
    assert n_ctx > 60


def test_cooccurrence_frequencies(samples):
    def has(s, c):
        return s.labels[c - 1] > 0

    boat = [s for s in samples if has(s, BOAT)]
    no_boat = [s for s in samples if not has(s, BOAT)]
    train = [s for s in samples if has(s, TRAIN)]
    no_train = [s for s in samples if not has(s, TRAIN)]
    horse = [s for s in samples if has(s, HORSE)]
    rider = [s for s in samples if has(s, RIDER)]
    freq = {
        "water|boat": np.mean(["water" in s.contexts for s in boat]),
        "water|no boat": np.mean(["water" in s.contexts for s in no_boat]),
        "rails|train": np.mean(["rails" in s.contexts for s in train]),
        "rails|no train": np.mean(["rails" in s.contexts for s in no_train]),
        "rider|horse": np.mean([has(s, RIDER) for s in horse]),
    }
    print(freq)
    assert 0.72 <= freq["water|boat"] <= 0.96 and 0.72 <= freq["rails|train"] <= 0.96  # designed 0.85
    assert 0.03 <= freq["water|no boat"] <= 0.2 and 0.03 <= freq["rails|no train"] <= 0.2  # 0.10
    assert 0.55 <= freq["rider|horse"] <= 0.85  # designed 0.70
    assert any(not has(s, HORSE) for s in rider)  # riders also appear alone
    # the mounted rider touches its horse
    touching = 0
    for s in horse:
        if has(s, RIDER) and s.mounted:
            r = s.mask == RIDER
            near = np.zeros_like(r)
            near[:-3] |= r[3:]
            near[3:] |= r[:-3]
            touching += bool((near & (s.mask == HORSE)).any() or (near & (s.mask == 255)).any())
    assert touching >= 0.9 * sum(has(s, RIDER) and s.mounted for s in horse)


def test_context_strength_is_a_parameter(tmp_path: Path):
    """--context-with / --context-without set P(band | class) and P(band | no class); the objects stay."""
    strong = [render_sample(7, "train", i, 96, context_with=1.0, context_without=0.0) for i in range(120)]
    for s, base in zip(strong, (render_sample(7, "train", i, 96) for i in range(120))):
        for name, cls in (("water", BOAT), ("rails", TRAIN)):
            assert (name in s.contexts) == bool(s.labels[cls - 1]), s.contexts  # context <=> its class
        assert s.objects == base.objects  # the same classes as the default design (drawn first)
    assert any("water" in s.contexts for s in strong) and any("rails" in s.contexts for s in strong)
    none = [render_sample(7, "train", i, 96, context_with=0.0, context_without=0.0) for i in range(60)]
    assert not any(s.contexts for s in none) and not any((s.context > 0).any() for s in none)

    import json

    generate_synthetic(
        tmp_path / "d", n_train=4, n_val=0, size=64, seed=1, context_with=0.95, context_without=0.03, verbose=False
    )
    meta = json.loads((tmp_path / "d/synth_meta.json").read_text())
    assert (meta["p_context_with_class"], meta["p_context_without_class"]) == (0.95, 0.03)
    with pytest.raises(ValueError, match="context_without is a probability"):
        generate_synthetic(tmp_path / "e", n_train=1, n_val=0, context_without=-0.1, verbose=False)

    from wsss.cli import main

    assert (
        main(["synth", str(tmp_path / "f"), "--train", "2", "--val", "0", "--size", "48", "--context-without", "0.5"])
        == 0
    )
    meta = json.loads((tmp_path / "f/synth_meta.json").read_text())
    assert (meta["p_context_with_class"], meta["p_context_without_class"]) == (0.85, 0.5)  # unset: the design's
    assert main(["synth", str(tmp_path / "g"), "--train", "1", "--val", "0", "--context-with", "1.5"]) == 1


def test_objects_per_image_and_sizes(samples):
    fractions = []
    for s in samples:
        assert 1 <= s.labels.sum() <= 3 and len(s.objects) <= 3
        for c in np.flatnonzero(s.labels) + 1:
            fractions.append((s.mask == c).mean())
    fractions = np.array(fractions)
    assert fractions.max() <= 0.4
    assert 0.05 <= np.median(fractions) <= 0.2
    assert np.percentile(fractions, 10) >= 0.025


def test_void_band_around_objects(samples):
    for s in samples[:100]:
        m = s.mask
        assert (m == 255).any()
        fg = (m > 0) & (m < 255)
        bg = m == 0
        # no object pixel touches a background pixel (8-neighbourhood): the void band separates them
        pad_bg = np.pad(bg, 1)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                shifted = pad_bg[1 + dy : 1 + dy + 128, 1 + dx : 1 + dx + 128]
                assert not (fg & shifted).any()
        # the band is thin: about 2 px times the boundary length, far below the object area
        assert (m == 255).sum() < 0.6 * fg.sum() + 200


def test_determinism_same_seed_same_bytes(tmp_path: Path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_synthetic(a, n_train=10, n_val=4, size=96, seed=3, verbose=False)
    generate_synthetic(b, n_train=10, n_val=4, size=96, seed=3, n_workers=2, verbose=False)
    generate_synthetic(c, n_train=10, n_val=4, size=96, seed=4, verbose=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert len(files) > 40
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert (a / "JPEGImages/train_00000.jpg").read_bytes() != (c / "JPEGImages/train_00000.jpg").read_bytes()
    # a sample does not depend on how many images are generated
    assert np.array_equal(render_sample(3, "val", 2, 96).mask, read_label_png(a / "SegmentationClass/val_00002.png"))


def test_mask_png_bytes_match_save_label_png(tmp_path: Path):
    m = render_sample(0, "train", 0, 64).mask
    save_label_png(tmp_path / "m.png", m)
    assert (tmp_path / "m.png").read_bytes() == encode_label_png(m)
