"""The route's masks against what the user told it (pipelines/route_labels.py): a lost class named in the closing
lines, the labelled photos' masks naming only their labels, the drawn masks returned as drawn, draw_next.csv, the
train score said for what it is."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from wsss.cli import main
from wsss.core.checkpoint import load_checkpoint, save_checkpoint
from wsss.data import VOCDataset
from wsss.data.views import make_view
from wsss.pipelines.route import Route
from wsss.pipelines.route_values import RouteOptions
from wsss.utils.io import read_label_png

TINY = ["train.epochs=null", "train.max_iters=1", "data.crop_size=64", "data.num_workers=0", "train.batch_size=2"]


def _single_label(root: Path, split: str) -> dict[str, int]:
    ds = VOCDataset(root, split)
    labels = {i: np.flatnonzero(ds.labels(i)) + 1 for i in ds.ids}
    return {i: int(c[0]) for i, c in labels.items() if len(c) == 1}


@pytest.fixture(scope="module")
def collapsed(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The synthetic set's photos of one class each (every val photo and four train photos masked), and a DeepLab
    stage on them whose head never names one class (its bias far below the others'): the collapse of a user's
    class that is in none of its photos' masks. (view root, run, the lost class)."""
    tmp = tmp_path_factory.mktemp("collapse")
    train, val = _single_label(synth_root, "train"), _single_label(synth_root, "val")
    counts = np.bincount(list(train.values()), minlength=7)
    lost = int(np.argmax(counts))  # the class of the most photos is lost
    root = make_view(synth_root, tmp / "data", {"train": sorted(train), "val": sorted(val)}, [*sorted(train)[:4], *val])
    run = tmp / "seg"
    words = [
        "train.eval_iters=100",
        "train.ckpt_iters=1",
        "train.warmup_iters=0",
        "infer.crf_workers=0",
        "data.val_split=",
        "--quiet",
    ]
    preset, labels = str(REPO / "configs/deeplab/synthetic_cpu.yaml"), synth_root / "SegmentationClass"
    words = [f"data.root={root}", f"data.pseudo_dir={labels}", f"run.dir={run}", *TINY, *words]
    assert main(["train", preset, *words]) == 0
    for path in sorted((run / "checkpoints").glob("*.pt")):
        state = load_checkpoint(path)
        for key, value in state["model"].items():
            if key.startswith("net.classifier.branches."):
                value.zero_()  # every pixel alike: each class by its bias alone
        bias = state["model"]["net.classifier.branches.0.bias"]
        bias[1:] = 10.0
        bias[lost] = -50.0
        save_checkpoint(state, path)
    return root, run, VOCDataset(root, "train").class_names[lost]


def test_a_lost_class_is_named_and_the_labelled_photos_masks_name_only_their_labels(collapsed, tmp_path, one_thread):
    root, run, lost = collapsed
    out, said = tmp_path / "out", []
    route = Route(
        RouteOptions(data=str(root), out=str(out), folds=0, overrides=TINY, crf_workers=0, progress=False),
        say=said.append,
    )
    route.plan()
    route._masks(run)
    route._summary(0.0)
    text = "\n".join(said)
    summary = json.loads((out / "summary.json").read_text())
    check = summary["scores"]["labels"]
    # the lost class named, with its figures and what helps; the other classes found in their photos
    assert check["lost"] == [lost]
    assert f"warning: {lost} is found in 0 of the " in text and "another seed (run.seed=1)" in text
    assert f"more drawn masks of {lost} (docs/labels-and-masks.md#a-lost-class)" in text
    assert text.count("warning: ") == 1
    # the labelled photos' masks (the route's own, in masks/predicted) name only the background and their labels
    for split in ("train", "val"):
        ds = VOCDataset(root, split)
        for i in ds.ids:
            found = set(np.unique(read_label_png(out / "masks/predicted" / f"{i}.png")).tolist()) - {0, 255}
            assert found <= {int(c) + 1 for c in np.flatnonzero(ds.labels(i))}, (i, found)
    assert check["photos_with_unlabelled"] == 0
    per_class = {c["name"]: (c["labelled"], c["found"]) for c in check["classes"]}
    assert all(found == labelled for name, (labelled, found) in per_class.items() if name != lost)
    assert f"{lost} {per_class[lost][0]}/0" in text
    # counted over the photos whose masks the route makes: a drawn photo's mask is the user's
    undrawn = {i for s in ("train", "val") for ds in [VOCDataset(root, s)] for i in ds.ids if not ds.has_mask(i)}
    assert set(check["photos"]) == undrawn and sum(n for n, _ in per_class.values()) == len(undrawn)
    # a drawn photo's mask is the user's as drawn; the others the route's prediction
    drawn = sum(ds.has_mask(i) for s in ("train", "val") for ds in [VOCDataset(root, s)] for i in ds.ids)
    assert f"your {drawn} drawn masks as you drew them; the route's own of every photo in masks/predicted/" in text
    ds = VOCDataset(root, "train")
    for i in ds.ids:
        expected = ds.mask_path(i) if ds.has_mask(i) else out / "masks/predicted" / f"{i}.png"
        assert (out / "masks" / f"{i}.png").read_bytes() == Path(expected).read_bytes()
    # the unmasked photos to draw, the lost class's first, each with why
    with (out / "draw_next.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows and rows[0]["class"] == lost and "this photo's mask lacks it" in rows[0]["reason"]
    assert {r["photo"] for r in rows} == {i for i in ds.ids if not ds.has_mask(i)}
    assert [r["rank"] for r in rows] == [str(n) for n in range(1, len(rows) + 1)]
    # this stage trained on pseudo labels alone (no data.true_masks): the train photos' masks taught it nothing
    assert "train_miou" in summary["scores"] and "taught" not in summary["scores"]
    assert "taught the stage" not in text and "trained on these photos' own masks" not in text
    assert f"{len(VOCDataset(root, 'val').ids)} val photos are too few to compare runs by" in text


def test_with_every_photo_drawn_the_closing_lines_count_no_class():
    from wsss.pipelines.route_labels import label_lines

    drawn = {"drawn": 6, "classes": [{"name": "cat", "labelled": 0, "found": 0, "lost": False}], "lost": []}
    lines = label_lines({"labels": {**drawn, "labelled_found": None, "photos_with_unlabelled": 0, "draw_next": 0}})
    assert lines and not any("per class" in line or "warning" in line for line in lines)
    seen = {**drawn, "classes": [{"name": "cat", "labelled": 3, "found": 1, "lost": True}], "lost": ["cat"]}
    lines = label_lines({"labels": {**seen, "labelled_found": 0.5, "photos_with_unlabelled": 0, "draw_next": 2}})
    assert any("per class, labelled in N photos / found in M of their masks: cat 3/1" in line for line in lines)
    assert any(line.startswith("  warning: cat is found in 1 of the 3 masks") for line in lines)
