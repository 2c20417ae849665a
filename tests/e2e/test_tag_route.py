"""Masks from photos and class names alone (runs/tag.py): ``prepare folder`` without labels -> ``import
clip_es`` -> ``tag`` -> ``cam`` -> ``pseudo --refine crf`` on the six real VOC photos with the golden tiny
CLIP. The weights are random, so the labels are whatever CLIP scores say: the test checks that each step
wrote what the next reads, that tags.csv and cls_labels.npy agree with the scores and the threshold, that
the printed precision/recall are those of the tags against the masks, and that an edited tags.csv wins."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, VOC_REAL_MINI, VOC_REAL_MINI_IDS
from golden import load_golden
from wsss.cli import main
from wsss.data.classes import VOC_CLASSES
from wsss.data.voc import labels_from_mask, load_cls_labels


@pytest.mark.slow
def test_photos_and_class_names_to_masks(tmp_path, capsys, one_thread):
    weights = tmp_path / "tiny_clip.npz"
    np.savez(weights, **load_golden("clip_es_state_dict"))
    (tmp_path / "classes.txt").write_text("\n".join(VOC_CLASSES) + "\n")
    ds, run = tmp_path / "photos", tmp_path / "clip_es"

    def wsss(*argv: str, code: int = 0) -> str:
        got = main(list(argv))
        out = capsys.readouterr()
        assert got == code, f"wsss {' '.join(argv)}\n{out.err[-3000:]}"
        return out.out + out.err

    wsss(
        "prepare",
        "folder",
        "--images",
        str(VOC_REAL_MINI / "JPEGImages"),
        "--classes",
        str(tmp_path / "classes.txt"),
        "--masks",
        str(VOC_REAL_MINI / "SegmentationClass"),
        "--val-fraction",
        "0",
        "--out",
        str(ds),
        "--quiet",
    )
    labels = load_cls_labels(ds, len(VOC_CLASSES))
    assert sorted(labels) == sorted(VOC_REAL_MINI_IDS) and not any(v.any() for v in labels.values())

    wsss(
        "import",
        "clip_es",
        str(weights),
        "--config",
        str(REPO / "configs/clip_es/voc.yaml"),
        "--out",
        str(run),
        f"data.root={ds}",
        "options.text_heads=2",
        "options.quick_gelu=true",
        "run.device=cpu",
    )
    out = wsss("tag", str(run), "--split", "train", "--threshold", "0.03", "--quiet")

    with open(ds / "tags.csv", newline="") as f:
        rows = {r["image"]: r for r in csv.DictReader(f)}
    labels = load_cls_labels(ds, len(VOC_CLASSES))
    tp = n_tags = n_true = 0
    for id in VOC_REAL_MINI_IDS:
        scores = np.array([float(rows[id][c]) for c in VOC_CLASSES[1:]])
        assert 0.0 < scores.sum() + float(rows[id]["background"]) <= 1.0 + 1e-3  # one softmax, 4 decimals
        expect = scores >= 0.03
        if not expect.any():
            expect[np.argmax(scores)] = True
        assert np.array_equal(labels[id] > 0, expect)
        assert rows[id]["labels"] == ";".join(VOC_CLASSES[1 + c] for c in np.flatnonzero(expect))
        truth = labels_from_mask(np.asarray(Image.open(VOC_REAL_MINI / "SegmentationClass" / f"{id}.png")), 21) > 0
        tp, n_tags, n_true = tp + (truth & expect).sum(), n_tags + expect.sum(), n_true + truth.sum()
    assert f"precision {tp / n_tags:.3f}, recall {tp / n_true:.3f}" in out and "6 photos' masks" in out
    assert "already have labels" in wsss("tag", str(run), "--split", "train", "--quiet", code=1)  # no silent overwrite

    wsss("cam", str(run), "--split", "train", "--quiet")
    wsss("pseudo", str(run), "--split", "train", "--refine", "crf", "--quiet")
    for id in VOC_REAL_MINI_IDS:
        with np.load(run / "cams" / "train" / f"{id}.npz") as z:
            assert sorted(z["keys"].tolist()) == (1 + np.flatnonzero(labels[id])).tolist()  # class ids
        mask = np.asarray(Image.open(run / "pseudo" / "train" / f"{id}.png"))
        assert mask.shape == np.asarray(Image.open(VOC_REAL_MINI / "JPEGImages" / f"{id}.jpg")).shape[:2]
        assert set(np.unique(mask).tolist()) <= {0, 255, *(1 + np.flatnonzero(labels[id])).tolist()}

    # a person's correction: the labels column of tags.csv, written back
    text = (ds / "tags.csv").read_text().splitlines()
    head, first = text[0], text[1].split(",")
    first[1] = "dog;person"
    (tmp_path / "edited.csv").write_text("\n".join([head, ",".join(first), *text[2:]]) + "\n")
    wsss("tag", str(run), "--split", "train", "--labels-from", str(tmp_path / "edited.csv"), "--overwrite", "--quiet")
    edited = load_cls_labels(ds, len(VOC_CLASSES))[first[0]]
    assert np.flatnonzero(edited).tolist() == [VOC_CLASSES.index("dog") - 1, VOC_CLASSES.index("person") - 1]
