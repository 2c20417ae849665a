"""Masks against the photos' labels: which labelled classes each photo's mask names and which it names unlabelled,
how many of each class's labelled photos show the class (a lost class: fewer than half), and which unmasked photos
to draw next, by class coverage (docs/labels-and-masks.md).

Nothing here chooses a run: the figures describe masks, and they do not rank runs as the runs' scores do
(docs/labels-and-masks.md#per-class-labelled-in-n-photos-found-in-m-masks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsss.utils.io import IGNORE, plural

LOST_BELOW = 0.5  # a class is lost when found in fewer than this share of its labelled photos' masks
LOST_CLASS_HELP = "docs/labels-and-masks.md#a-lost-class"
FEW_VAL = 10  # a val split of fewer masked photos is too few to compare runs by
TAUGHT_NOTE = "the stage trained on these photos' own masks: what it learned, not a score of its masks"


def classes_in_mask(path: str | Path) -> set[int]:
    """The foreground classes a label PNG names (background 0 and the ignore value 255 left out)."""
    from wsss.utils.io import read_label_png

    return {int(v) for v in np.unique(read_label_png(path)) if v not in (0, IGNORE)}


def classes_found(folder: str | Path, ids: Sequence[str]) -> dict[str, set[int]]:
    """Each photo's classes in ``folder/<id>.png``."""
    return {i: classes_in_mask(Path(folder) / f"{i}.png") for i in ids}


def photo_agreement(labelled: set[int], found: set[int], class_names: Sequence[str]) -> dict[str, Any]:
    """One photo's mask against its labels: the share of its labelled classes the mask names (None without a label)
    and the classes it names that the photo is not labelled with."""
    share = len(labelled & found) / len(labelled) if labelled else None
    return {
        "labels": [class_names[c] for c in sorted(labelled)],
        "found": [class_names[c] for c in sorted(found)],
        "labelled_found": round(share, 4) if share is not None else None,
        "unlabelled_found": [class_names[c] for c in sorted(found - labelled)],
    }


@dataclass
class ClassCoverage:
    """One class: the photos labelled with it and, of those, the masks that name it."""

    name: str
    labelled: int
    found: int

    @property
    def lost(self) -> bool:
        return self.labelled > 0 and self.found < LOST_BELOW * self.labelled

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "lost": self.lost}


def class_coverage(
    labels: Mapping[str, set[int]], found: Mapping[str, set[int]], class_names: Sequence[str]
) -> list[ClassCoverage]:
    """Each foreground class: labelled in how many photos, found in how many of those photos' masks."""
    out = []
    for c in range(1, len(class_names)):
        mine = [i for i, cs in labels.items() if c in cs]
        out.append(ClassCoverage(class_names[c], len(mine), sum(c in found.get(i, set()) for i in mine)))
    return out


def agreement(
    labels: Mapping[str, set[int]], found: Mapping[str, set[int]], class_names: Sequence[str]
) -> dict[str, Any]:
    """The masks against the labels: per photo (:func:`photo_agreement`), per class (:func:`class_coverage`), and
    over the photos: the mean share of labelled classes found and the photos whose mask names an unlabelled class."""
    photos = {i: photo_agreement(labels[i], found.get(i, set()), class_names) for i in sorted(labels)}
    shares = [p["labelled_found"] for p in photos.values() if p["labelled_found"] is not None]
    coverage = class_coverage(labels, found, class_names)
    return {
        "labelled_found": round(float(np.mean(shares)), 4) if shares else None,
        "photos_with_unlabelled": sum(bool(p["unlabelled_found"]) for p in photos.values()),
        "classes": [c.to_json() for c in coverage],
        "lost": [c.name for c in coverage if c.lost],
        "photos": photos,
    }


def lost_class_warnings(classes: Sequence[Mapping[str, Any]]) -> list[str]:
    """A line for each lost class of ``agreement()["classes"]``: its figures and what helps."""
    return [
        f"warning: {c['name']} is found in {c['found']} of the {c['labelled']} masks of the photos labelled with it "
        f"(fewer than half): it is lost. What helps: another seed (run.seed=1), more drawn masks of {c['name']} "
        f"({LOST_CLASS_HELP})"
        for c in classes
        if c["lost"]
    ]


DRAW_NEXT_COLUMNS = ("rank", "photo", "labels", "class", "reason")


def draw_next(
    labels: Mapping[str, set[int]], found: Mapping[str, set[int]], masked: set[str], class_names: Sequence[str]
) -> list[dict[str, Any]]:
    """The unmasked photos ranked for drawing (columns :data:`DRAW_NEXT_COLUMNS`): by class coverage, the classes
    found least first, one photo of each class in turn; within a class, the photos whose mask lacks one of their
    labelled classes first. Each photo once, for the first class it comes up for. Against a random choice:
    docs/labels-and-masks.md#which-photos-to-draw-next."""
    coverage = class_coverage(labels, found, class_names)
    order = sorted(
        (c for c in range(1, len(class_names)) if coverage[c - 1].labelled),
        key=lambda c: (coverage[c - 1].found / coverage[c - 1].labelled, coverage[c - 1].found, c),
    )
    queues = {}
    for c in order:
        mine = [i for i in sorted(labels) if c in labels[i] and i not in masked]
        # the photos whose mask lacks this class first, then those lacking another labelled class
        queues[c] = sorted(mine, key=lambda i: (c in found.get(i, set()), labels[i] <= found.get(i, set())))
    rows: list[dict[str, Any]] = []
    taken: set[str] = set()
    while any(queues.values()):
        for c in order:
            queue = queues[c]
            while queue and queue[0] in taken:
                queue.pop(0)
            if not queue:
                continue
            i = queue.pop(0)
            taken.add(i)
            named = " ".join(class_names[k] for k in sorted(labels[i]))
            reason = _reason(coverage[c - 1], labels[i], found.get(i, set()), c, class_names)
            rows.append({"rank": len(rows) + 1, "photo": i, "labels": named, "class": class_names[c], "reason": reason})
    return rows


def _reason(cov: ClassCoverage, labelled: set[int], found: set[int], c: int, class_names: Sequence[str]) -> str:
    """Why a photo is drawn for class ``c``: the class's coverage and what the photo's mask misses."""
    why = f"{cov.name} found in {cov.found} of its {cov.labelled} labelled photos' masks"
    if c not in found:
        return f"{why}; this photo's mask lacks it"
    missing = sorted(labelled - found)
    if missing:
        return f"{why}; this photo's mask lacks {', '.join(class_names[k] for k in missing)}"
    return why


def val_note(scored: int | None) -> str | None:
    """A val split scored on fewer than :data:`FEW_VAL` photos: too few to compare runs by."""
    if scored is None or scored >= FEW_VAL:
        return None
    few = f"{plural(scored, 'val photo')} {'is' if scored == 1 else 'are'} too few to compare runs by"
    return f"{few} (fewer than {FEW_VAL}): draw masks of more val photos"
