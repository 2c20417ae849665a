"""The report's parts about the photos' labels and masks: the photos whose own masks trained the run, left out of its
scores; a val split too small to compare runs by; the route's check of its masks against the labels (per class
labelled in N photos, found in M masks; the lost classes; the photos to draw next)."""

from __future__ import annotations

import copy
import csv
import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wsss.core.choices import ROUTE_DRAW_NEXT_FILE
from wsss.evaluation.agreement import (
    LOST_CLASS_HELP,
    TAUGHT_NOTE,
    lost_class_warnings,
    val_note,
)

SHOWN_TO_DRAW = 10  # rows of draw_next.csv the page shows
ROUTE_SUMMARY = "summary.json"  # `wsss route`'s summary beside its runs


def taught_ids(cfg: Mapping[str, Any]) -> set[str]:
    """The photos whose own masks trained the run of ``cfg`` (its config as written): with ``data.true_masks`` the
    masked photos of its training split (``auto``: the dataset's masks; a folder: the masks in it)."""
    from wsss.data import VOCDataset
    from wsss.data.voc import available_splits

    data = cfg.get("data") or {}
    given, root, split = data.get("true_masks"), data.get("root"), data.get("train_split")
    if not given or not root or not Path(root).is_dir() or split not in available_splits(root):
        return set()
    ds = VOCDataset(root, split)
    if given == "auto":
        return {i for i in ds.ids if ds.has_mask(i)}
    return {i for i in ds.ids if (Path(given) / f"{i}.png").is_file()}


def without_taught(scored: Any, taught: frozenset[str] | set[str]) -> tuple[Any, int]:
    """``scored`` (a dataset view of masked photos, or None) less the ``taught`` photos, and how many were left
    out; None where none is left."""
    if scored is None or not taught:
        return scored, 0
    kept = [i for i in scored.ids if i not in taught]
    if len(kept) == len(scored.ids):
        return scored, 0
    if not kept:
        return None, len(scored.ids)
    view = copy.copy(scored)
    view.ids = kept
    return view, len(scored.ids) - len(kept)


def taught_note(left_out: int) -> str:
    """The sentence on the photos left out of a split's scores."""
    return f"{left_out} masked photos of this split left out of its scores, table and advice: {TAUGHT_NOTE}."


def few_val_note(split: str, val_split: str | None, scored: int) -> str:
    """A val split scored on too few photos to compare runs by (``agreement.val_note``), as a sentence; else ""."""
    note = val_note(scored) if split == val_split and scored else None
    return f"{note[:1].upper()}{note[1:]}. " if note else ""


def route_labels(run: Path) -> dict[str, Any] | None:
    """The route's check of its masks against the labels (``OUT/summary.json``'s ``scores.labels``) of the route
    that made ``run``, or None."""
    try:
        labels = json.loads((Path(run).parent / ROUTE_SUMMARY).read_text())["scores"]["labels"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return labels if isinstance(labels, dict) else None


def labels_section(run: Path, labels: Mapping[str, Any] | None) -> str:
    """The page's section on the labels (empty without the route's check)."""
    if not labels or not isinstance(labels.get("classes"), list):
        return ""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(str(c['name']))}</td><td>{int(c['labelled'])}</td><td>{int(c['found'])}</td>"
        f"<td>{'lost' if c['lost'] else ''}</td></tr>"
        for c in labels["classes"]
    )
    warned = "".join(f"<li>{e(w)}</li>" for w in lost_class_warnings(labels["classes"]))
    share = labels.get("labelled_found")
    agreement = (
        f"<p>The masks name {100 * share:.1f}% of their photos' labelled classes on average; "
        f"{int(labels.get('photos_with_unlabelled', 0))} name a class the photo is not labelled with.</p>"
        if share is not None
        else ""
    )
    return f"""<h2 id="labels">Your labels and the masks</h2>
<p>Each labelled photo's mask names only the background and the photo's labels; a photo you drew keeps your mask
(the route's own prediction of it is in <code>masks/predicted</code>). A class is lost when fewer than half of the
masks of the photos labelled with it show it (what helps: <code>{e(LOST_CLASS_HELP)}</code>).</p>
{f"<ul>{warned}</ul>" if warned else ""}{agreement}
<table><tr><th>class</th><th>labelled in (photos)</th><th>found in (their masks)</th><th></th></tr>{rows}</table>
{_draw_next_html(run)}"""


def _draw_next_html(run: Path) -> str:
    """The first rows of the route's ``draw_next.csv`` beside ``run``."""
    path = Path(run).parent / ROUTE_DRAW_NEXT_FILE
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = [r for _, r in zip(range(SHOWN_TO_DRAW), csv.DictReader(f))]
    except (OSError, csv.Error, UnicodeDecodeError):
        return ""
    if not rows:
        return ""
    e = html.escape
    body = "".join(
        f"<tr><td>{e(r.get('rank') or '')}</td><td>{e(r.get('photo') or '')}</td><td>{e(r.get('labels') or '')}</td>"
        f"<td>{e(r.get('class') or '')}</td><td>{e(r.get('reason') or '')}</td></tr>"
        for r in rows
    )
    return f"""<h3 id="draw-next">Photos to draw next</h3>
<p class=note>The first {len(rows)} of {e(ROUTE_DRAW_NEXT_FILE)}: unmasked photos by class coverage, the classes found
least first, one class after another; within a class, the photos whose mask lacks a labelled class first. Against
as many photos drawn at random it did not win on every fold measured
(docs/labels-and-masks.md#which-photos-to-draw-next): it is an order by class coverage, not a proven better choice.</p>
<table><tr><th>rank</th><th>photo</th><th>labels</th><th>for class</th><th>why</th></tr>{body}</table>"""
