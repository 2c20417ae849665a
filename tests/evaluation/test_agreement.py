"""Masks against the photos' labels (evaluation/agreement.py): per photo, per class, and the photos to draw next."""

from __future__ import annotations

import numpy as np

from wsss.evaluation.agreement import (
    agreement,
    class_coverage,
    classes_found,
    draw_next,
    lost_class_warnings,
    photo_agreement,
    val_note,
)
from wsss.utils.io import save_label_png

NAMES = ["background", "uno", "nano", "esp32"]


def test_a_photo_s_mask_against_its_labels():
    got = photo_agreement({1, 2}, {2, 3}, NAMES)
    assert got == {
        "labels": ["uno", "nano"],
        "found": ["nano", "esp32"],
        "labelled_found": 0.5,
        "unlabelled_found": ["esp32"],
    }
    assert photo_agreement(set(), {1}, NAMES)["labelled_found"] is None


def test_the_classes_a_mask_names_leave_out_background_and_ignore(tmp_path):
    mask = np.zeros((4, 4), np.uint8)
    mask[0, 0], mask[1, 1], mask[2, 2] = 2, 255, 3
    save_label_png(tmp_path / "a.png", mask)
    assert classes_found(tmp_path, ["a"]) == {"a": {2, 3}}


def test_a_class_found_in_fewer_than_half_of_its_photos_is_lost_and_named_with_what_helps():
    labels = {"a": {1}, "b": {1, 2}, "c": {2}, "d": {2}, "e": {3}}
    found = {"a": {1}, "b": {1}, "c": {2}, "d": set(), "e": set()}
    coverage = class_coverage(labels, found, NAMES)
    assert [(c.name, c.labelled, c.found, c.lost) for c in coverage] == [
        ("uno", 2, 2, False),
        ("nano", 3, 1, True),
        ("esp32", 1, 0, True),
    ]
    check = agreement(labels, found, NAMES)
    assert check["lost"] == ["nano", "esp32"] and check["photos_with_unlabelled"] == 0
    assert check["labelled_found"] == round((1 + 0.5 + 1 + 0 + 0) / 5, 4)
    lines = lost_class_warnings(check["classes"])
    assert len(lines) == 2 and lines[0].startswith("warning: nano is found in 1 of the 3 masks")
    assert "another seed (run.seed=1)" in lines[0] and "more drawn masks of nano" in lines[0]
    assert "docs/labels-and-masks.md#a-lost-class" in lines[0]
    half = class_coverage({"a": {1}, "b": {1}}, {"a": {1}}, NAMES)[0]
    assert not half.lost  # half of its photos: not fewer than half


def test_the_photos_to_draw_next_go_by_class_coverage_one_class_after_another():
    labels = {"u1": {1}, "u2": {1}, "u3": {1}, "n1": {2}, "n2": {2, 1}, "n3": {2}, "e1": {3}, "e2": {3}}
    found = {"u1": {1}, "u2": {1}, "u3": {1}, "n1": set(), "n2": {1}, "n3": {2}, "e1": {3}, "e2": set()}
    rows = draw_next(labels, found, masked={"u3"}, class_names=NAMES)
    # nano (1 of 3) first, then esp32 (1 of 2), then uno (4 of 4), in turn; within a class the masks that lack it
    # first, then those that lack another labelled class; each photo once, the masked one never
    assert [(r["photo"], r["class"]) for r in rows] == [
        ("n1", "nano"),
        ("e2", "esp32"),
        ("n2", "uno"),
        ("n3", "nano"),
        ("e1", "esp32"),
        ("u1", "uno"),
        ("u2", "uno"),
    ]
    assert [r["rank"] for r in rows] == list(range(1, 8))
    assert rows[0]["reason"] == "nano found in 1 of its 3 labelled photos' masks; this photo's mask lacks it"
    assert rows[2]["reason"] == "uno found in 4 of its 4 labelled photos' masks; this photo's mask lacks nano"
    assert rows[2]["labels"] == "uno nano" and rows[5]["reason"] == "uno found in 4 of its 4 labelled photos' masks"


def test_a_val_split_of_fewer_than_ten_photos_is_too_few_to_compare_runs():
    assert val_note(2) is not None and "2 val photos are too few to compare runs" in val_note(2)
    assert val_note(1) is not None and val_note(1).startswith("1 val photo is too few to compare runs")
    assert val_note(10) is None and val_note(None) is None
