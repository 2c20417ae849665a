"""The report's parts about labels and masks (report/labels.py): the photos whose own masks trained the run left out
of its scores, a val split too small to compare runs by, the route's check of its masks against the labels."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from wsss.data.voc import read_split
from wsss.report import write_report


def _set_data(run: Path, **keys: object) -> None:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["data"].update(keys)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def test_the_photos_whose_own_masks_trained_the_run_are_left_out_of_its_scores(reported_copy, tmp_path):
    run = reported_copy
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    root = Path(cfg["data"]["root"])
    val = read_split(root, "val")
    taught = tmp_path / "my_masks"  # a folder of true masks: three of the val photos' trained the run
    taught.mkdir()
    for i in val[:3]:
        (taught / f"{i}.png").write_bytes((root / "SegmentationClass" / f"{i}.png").read_bytes())
    _set_data(run, train_split="val", true_masks=str(taught))
    page = write_report(run, max_images=0).read_text()
    scores = json.loads((run / "report/summary.json").read_text())["val"]
    assert scores and all(r["n_images"] == len(val) - 3 for r in scores.values())
    assert "3 masked photos of this split left out of its scores, table and advice: the stage trained on" in page
    # every masked photo taught it: no score at all, and the page says why
    _set_data(run, true_masks="auto")
    page = write_report(run, max_images=0).read_text()
    assert json.loads((run / "report/summary.json").read_text())["val"] == {}
    assert f"{len(val)} masked photos of this split left out" in page


def test_a_val_split_of_fewer_than_ten_photos_is_called_too_few(reported_copy):
    page = write_report(reported_copy, max_images=0).read_text()
    n = len(read_split(yaml.safe_load((reported_copy / "config.yaml").read_text())["data"]["root"], "val"))
    assert n < 10 and f"{n} val photos are too few to compare runs by (fewer than 10)" in page


def test_the_route_s_check_of_its_masks_against_the_labels_is_a_section_with_the_photos_to_draw(reported_copy):
    run = reported_copy
    (run.parent / "draw_next.csv").write_text(
        "rank,photo,labels,class,reason\n1,p7,uno nano,nano,nano found in 0 of "
        "its 2 labelled photos' masks; this photo's mask lacks it\n"
    )
    labels = {
        "labelled_found": 0.5,
        "photos_with_unlabelled": 0,
        "lost": ["nano"],
        "classes": [
            {"name": "uno", "labelled": 2, "found": 2, "lost": False},
            {"name": "nano", "labelled": 2, "found": 0, "lost": True},
        ],
    }
    page = write_report(run, max_images=0, labels=labels).read_text()
    assert '<h2 id="labels">Your labels and the masks</h2>' in page
    assert "warning: nano is found in 0 of the 2 masks of the photos labelled with it" in page
    assert "<tr><td>nano</td><td>2</td><td>0</td><td>lost</td></tr>" in page
    assert "<td>p7</td><td>uno nano</td><td>nano</td>" in page and "not a proven better choice" in page
    # read from the route's summary beside the run by default; none: no section
    (run.parent / "summary.json").write_text(json.dumps({"scores": {"labels": labels}}))
    assert "warning: nano is found in 0" in write_report(run, max_images=0).read_text()
    assert 'id="labels"' not in write_report(run, max_images=0, labels={}).read_text()
