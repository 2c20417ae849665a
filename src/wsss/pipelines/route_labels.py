"""What the route does with what the user told it (docs/labels-and-masks.md): the
photos' labels against the masks (``evaluation.agreement``), each drawn mask returned as drawn in ``OUT/masks`` (the
route's prediction of every photo in ``OUT/masks/predicted``), ``OUT/draw_next.csv``, and scores named for what
they are: the train photos whose own masks taught the stage set apart, a val split too small to compare runs said so.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wsss.core.choices import ROUTE_DRAW_NEXT_FILE, ROUTE_MASKS_DIR
from wsss.core.files import atomic_write
from wsss.evaluation.agreement import (
    DRAW_NEXT_COLUMNS,
    TAUGHT_NOTE,
    agreement,
    classes_found,
    draw_next,
    lost_class_warnings,
    val_note,
)

PREDICTED_DIR = "predicted"  # in OUT/masks: the route's own prediction of every photo, a drawn one's too


def photo_labels(root: str | Path, splits: Sequence[str]) -> dict[str, set[int]]:
    """Each photo's labelled classes (class ids, background left out) over ``splits`` of the dataset ``root``."""
    from wsss.data import VOCDataset
    from wsss.runs.run import allowed_classes

    out: dict[str, set[int]] = {}
    for split in splits:
        ds = VOCDataset(root, split)
        out |= {i: set(allowed_classes(ds.labels(i))) - {0} for i in ds.ids}
    return out


def masks_against_labels(
    scores: dict[str, Any], preds: Mapping[str, Path], facts: Any, out: Path, run_dir: Path, masks_teach: bool
) -> None:
    """After the route's masks (``preds``: split -> its labelled predictions, gathered in ``out/masks``): each drawn
    photo's mask returned in its prediction's place, the scores of the train photos whose own masks taught the run
    (``run_dir``; a mode whose final run learns no mask: none) set apart, and the masks checked against the labels
    (``scores["labels"]``, ``out/draw_next.csv``)."""
    from wsss.core.config import load_run_config, true_masks_of

    return_drawn_masks(out / ROUTE_MASKS_DIR, facts.root, {"train": facts.masked_train, "val": facts.masked_val})
    set_apart_taught(scores, masks_teach and bool(true_masks_of(load_run_config(run_dir).data)))
    drawn = {*facts.masked_train, *facts.masked_val}
    scores["labels"] = check_labels(preds, facts.root, drawn, facts.class_names, out)


def return_drawn_masks(folder: Path, root: str | Path, drawn: Mapping[str, Sequence[str]]) -> int:
    """Each drawn photo's mask (``drawn``: split -> ids), as prepared in the dataset ``root``, at ``folder/<id>.png``
    in place of the route's prediction (kept in ``folder/predicted``); how many. A copy, never a link: an edit of the
    route's masks leaves your dataset as it is."""
    from wsss.data import VOCDataset

    n = 0
    for split, ids in drawn.items():
        ds = VOCDataset(root, split)
        for i in ids:
            path = ds.mask_path(i)
            if path is not None:
                with atomic_write(folder / f"{i}.png") as f:
                    f.write(path.read_bytes())
                n += 1
    return n


def check_labels(
    preds: Mapping[str, Path], root: str | Path, masked: set[str], class_names: Sequence[str], out: Path
) -> dict[str, Any]:
    """The route's masks of each split (``preds``: split -> its predictions) against the labels of the photos
    without a drawn mask (``masked``: a drawn photo's mask is the user's, so no class of it is lost;
    ``evaluation.agreement.agreement``), and ``out/draw_next.csv``: the unmasked photos to draw next."""
    labels = {i: cs for i, cs in photo_labels(root, list(preds)).items() if i not in masked}
    found: dict[str, set[int]] = {}
    for pred in preds.values():
        found |= classes_found(pred, [i for i in labels if (pred / f"{i}.png").is_file()])
    rows = draw_next(labels, found, masked, class_names)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=DRAW_NEXT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(out / ROUTE_DRAW_NEXT_FILE, "w") as f:
        f.write(text.getvalue())
    return {**agreement(labels, found, class_names), "drawn": len(masked), "draw_next": len(rows)}


def set_apart_taught(scores: dict[str, Any], taught: bool) -> None:
    """With ``taught`` (the stage trained on the masked train photos' own masks), the train split's score and its
    photos' scores moved under ``scores["taught"]``, named so: no train score stands beside val's."""
    if not taught or "train_miou" not in scores:
        return
    photos = scores.get("photos", {})
    scores["taught"] = {
        "miou": scores.pop("train_miou"),
        "photos": scores.pop("train_scored_photos"),
        "note": TAUGHT_NOTE,
        "photo_scores": {i: photos.pop(i) for i in [i for i, p in photos.items() if p["split"] == "train"]},
    }


def label_lines(scores: Mapping[str, Any]) -> list[str]:
    """The closing lines of the labels' check: each class labelled in N photos and found in M of their masks, the
    agreement, a warning for each lost class, where to draw next, the val split's size."""
    check = scores.get("labels")
    lines = []
    if check and check.get("drawn"):
        lines.append(
            f"  your {check['drawn']} drawn masks as you drew them; the route's own of every photo in "
            f"{ROUTE_MASKS_DIR}/{PREDICTED_DIR}/ beside them"
        )
    if check:
        per_class = ", ".join(f"{c['name']} {c['labelled']}/{c['found']}" for c in check["classes"] if c["labelled"])
        if per_class:  # none where every photo has a drawn mask
            lines.append(f"  per class, labelled in N photos / found in M of their masks: {per_class}")
        if check["labelled_found"] is not None:
            lines.append(
                f"  the masks name {100 * check['labelled_found']:.1f}% of their photos' labelled classes "
                f"on average; {check['photos_with_unlabelled']} name an unlabelled class"
            )
        lines += [f"  {w}" for w in lost_class_warnings(check["classes"])]
        if check["draw_next"]:
            lines.append(f"  unmasked photos to draw next, by class coverage: {ROUTE_DRAW_NEXT_FILE}")
    note = val_note(scores.get("val_scored_photos"))
    if note:
        lines.append(f"  {note}")
    return lines
