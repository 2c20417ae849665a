"""The report's advice (wsss.report.advice) on a crafted confusion: a class taken for another in the photos of both,
a class never found, and the route's fold figures."""

import json

import numpy as np

from wsss.evaluation import evaluate_arrays
from wsss.report.advice import advice, route_folds

NAMES = ["background", "top", "dress", "bag", "shoe"]


def _photo(classes: list[int], taken: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A 4 x 8 photo: a strip of background, then a strip of each class; the prediction takes class a for
    ``taken[a]`` and finds the others."""
    gt = np.zeros((4, 2 * (len(classes) + 1)), np.uint8)
    for k, c in enumerate(classes, 1):
        gt[:, 2 * k : 2 * k + 2] = c
    pred = gt.copy()
    for a, b in taken.items():
        pred[gt == a] = b
    return gt, pred


def _crafted():
    """dress always taken for top (two photos of both), bag for background, top and shoe found."""
    photos = [_photo([1, 2], {2: 1}), _photo([1, 2, 4], {2: 1}), _photo([3, 4], {3: 0}), _photo([1], {})]
    return evaluate_arrays([g for g, _ in photos], [p for _, p in photos], class_names=NAMES)


def test_the_confused_pair_and_the_classes_at_zero_are_named_with_what_they_are_taken_for():
    lines = advice(_crafted())
    assert len(lines) == 2
    assert lines[0].startswith("dress is taken for top: 100.00 % of its pixels in the 2 photos labelled with both.")
    assert "merge them into one class" in lines[0]
    assert lines[1].startswith(
        "At 0 IoU, found in none of the photos whose mask shows them: dress (2 photos; taken "
        "for top), bag (1 photo; taken for background)."
    )


def test_found_classes_get_no_finding():
    gt, _ = _photo([1, 2, 3], {})
    lines = advice(evaluate_arrays([gt], [gt], class_names=NAMES))
    assert lines == [
        "No class is at 0 IoU and no two classes are confused on most of their pixels: the worst photos "
        "below show what the masks miss."
    ]


def test_the_folds_say_whether_more_masks_would_help(tmp_path):
    result = _crafted()
    ahead = {"mixed": {"mean": 20.0, "folds": [19.0, 21.0]}, "masks": {"mean": 22.0, "folds": [21.5, 22.5]}}
    (said,) = advice(result, ahead)[2:]
    assert said.startswith(
        "More masks should help: your masks alone scored 22.00 and the weak labels with your "
        "masks in their place 20.00 (mIoU over 2 folds of the masked photos), so"
    )
    assert "firmer" not in said  # folds 2 apart at most, the stages 2 apart
    behind = {"mixed": {"mean": 20.0, "folds": [15.0, 25.0]}, "masks": {"mean": 12.0, "folds": [11.0, 13.0]}}
    (said,) = advice(result, behind)[2:]
    assert "your masks are still too few to train the stage alone" in said
    assert said.endswith(
        "The folds differ by up to 10.00 points, more than the two stages differ: more masks would "
        "also make these scores firmer."
    )
    # a route folder's summary holds them; a run elsewhere, or a route with --folds 0, has none
    (tmp_path / "seg").mkdir()
    assert route_folds(tmp_path / "seg") is None
    (tmp_path / "summary.json").write_text(json.dumps({"scores": {"val_miou": 20.1}}))
    assert route_folds(tmp_path / "seg") is None
    (tmp_path / "summary.json").write_text(json.dumps({"scores": {"folds": behind}}))
    assert route_folds(tmp_path / "seg") == behind
