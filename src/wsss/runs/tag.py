"""``wsss tag RUN --split SPLIT``: image-level labels for a dataset's photos from the class names alone.

A CLIP-ES run (``wsss import clip_es WEIGHTS``, no training) scores every photo of the split zero-shot
(``ClipES.image_scores``: one softmax over the foreground prompts and the background / scene prompts,
``cam.clip_es.zero_shot_scores``). A class is a label of the photo when its score is at least
``threshold``; with ``at_least_one`` the best class is a label even below it (CLIP-ES makes CAMs only of a
photo's labels). Written into the dataset (``ROOT``):

- ``cls_labels.npy``: the labels of the split's photos (the other photos' entries kept); labels already
  there (non-zero) are replaced only with ``overwrite``;
- ``tags.csv``: one row a photo, ``image,labels,background,<class>,...``: the labels (``cat;dog``), the
  background prompts' share and every class's score, for a person to read; after editing the ``labels``
  column, ``wsss tag RUN --split SPLIT --labels-from ROOT/tags.csv --overwrite`` writes them instead.

Where a photo has a mask, the tags are compared with the classes of its mask: precision and recall over
(photo, class) pairs (``TagSummary``).

The route from photos and class names alone: ``wsss route PHOTOS --classes C --clip FILE`` runs this step
(docs/own-photos.md#with-clip-files); by hand, ``prepare folder`` without ``--labels`` -> ``import clip_es`` ->
``tag`` -> ``cam`` -> ``pseudo --refine crf``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from wsss.core.errors import DataError, UsageError
from wsss.core.files import atomic_write
from wsss.data.classes import ClassLookup, split_names
from wsss.data.prepare.folder import listed_once
from wsss.data.voc import VOCDataset, labels_from_mask, load_cls_labels, write_cls_labels
from wsss.runs.run import Run
from wsss.utils.io import csv_rows, read_text_file

TAGS_FILE = "tags.csv"
DEFAULT_THRESHOLD = 0.1  # a class is a tag at this zero-shot score (`wsss tag --threshold`, `wsss cam --images`)


@dataclass
class TagSummary:
    tagged: int = 0
    labels: int = 0
    with_mask: int = 0
    true_positives: int = 0
    true_labels: int = 0
    mask_tags: int = 0
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.true_positives / self.mask_tags if self.mask_tags else float("nan")

    @property
    def recall(self) -> float:
        return self.true_positives / self.true_labels if self.true_labels else float("nan")

    def add(self, tags: np.ndarray, truth: np.ndarray) -> None:
        """One photo's tags (multi-hot) against its true classes: the (photo, class) pairs of precision / recall."""
        tags, truth = np.asarray(tags) > 0, np.asarray(truth) > 0
        self.with_mask += 1
        self.true_positives += int((truth & tags).sum())
        self.true_labels += int(truth.sum())
        self.mask_tags += int(tags.sum())

    def format(self) -> str:
        lines = [f"tagged {self.tagged} photos with {self.labels} labels; wrote {', '.join(map(str, self.files))}"]
        if self.with_mask:
            lines.append(
                f"tags against the classes of {self.with_mask} photos' masks: precision {self.precision:.3f}, "
                f"recall {self.recall:.3f} (over photo-class pairs)"
            )
        return "\n".join(lines + [f"warning: {w}" for w in self.warnings])


def tag_labels(scores: np.ndarray, threshold: float, at_least_one: bool) -> np.ndarray:
    """Multi-hot (C-1,) float32 of the classes scoring at least ``threshold`` (the best one always, with
    ``at_least_one``)."""
    labels = (scores >= threshold).astype(np.float32)
    if at_least_one and scores.size and not labels.any():
        labels[int(np.argmax(scores))] = 1.0
    return labels


def _check_overwrite(existing: dict[str, np.ndarray] | None, ids: list[str], root: Path, overwrite: bool) -> None:
    labelled = [i for i in ids if existing and i in existing and np.asarray(existing[i]).any()]
    if labelled and not overwrite:
        raise UsageError(
            f"{root / 'cls_labels.npy'}: {len(labelled)} photos of the split already have labels (e.g. "
            f"{labelled[0]}); pass --overwrite to replace them"
        )


def _write_tags_csv(path: Path, rows: dict[str, list[str]], header: list[str]) -> None:
    """``tags.csv``: the rows of this split replace theirs; the other photos' rows are kept."""
    old: dict[str, list[str]] = {}
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as f:
            table = list(csv.reader(f))
        if table and table[0] == header:
            old = {r[0]: r for r in table[1:] if r}
    old.update(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(old[k] for k in sorted(old))
    with atomic_write(path, "w") as f:
        f.write(buf.getvalue())


def read_tags_csv(path: Path, class_names: list[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """{id: multi-hot (C-1,)} from the ``labels`` column of an (edited) ``tags.csv``, and its warnings. Class
    names are matched as ``wsss prepare folder`` matches a labels file's (``ClassLookup``: one that differs from
    a class only in case is taken as it, with a warning; every unknown one is listed in one DataError)."""
    lookup = ClassLookup(class_names)
    table, column_sep = csv_rows(read_text_file(path, "the tags"))
    header = [h.strip() for h in table[0]] if table else []
    rows = [(n, dict(zip(header, r))) for n, r in enumerate(table[1:], start=2) if any(c.strip() for c in r)]
    if "image" not in header or "labels" not in header:
        raise DataError(f"{path}:1: the header needs the columns image and labels")
    notes = [f"{path}: columns separated by {column_sep!r}, not ','"] if column_sep != "," else []
    out = {}
    firsts: dict[str, str] = {}
    for n, row in rows:
        image = (row.get("image") or "").strip()
        listed_once(firsts, image, f"{path}:{n}")
        v = np.zeros(len(class_names) - 1, dtype=np.float32)
        for name in split_names(row.get("labels") or ""):
            c = lookup.lookup(name, n)
            if c is not None:
                v[c - 1] = 1.0  # class c is slot c - 1 of a cls_labels vector
        out[image] = v
    lookup.check(path)
    return out, notes + [w for w in [lookup.case_warning(path)] if w]


def _compare_with_mask(ds: VOCDataset, id: str, labels: np.ndarray, summary: TagSummary) -> None:
    if not ds.has_mask(id):
        return
    summary.add(labels, labels_from_mask(ds.load_mask(id), ds.num_classes))


def tag_split(
    run: Run,
    split: str,
    *,
    root: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    at_least_one: bool = True,
    labels_from: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> TagSummary:
    """Label the photos of ``split`` (module docstring); returns what was written and the comparison with
    the masks."""
    image_scores = getattr(run.method, "image_scores", None)  # CLIP-ES's zero-shot scores (runs/photos.py too)
    if image_scores is None:
        raise UsageError(
            f"{run.dir}: wsss tag needs a CLIP-ES run (wsss import clip_es WEIGHTS ...), not {run.cfg.method}"
        )
    ds = run.dataset(root, split)
    existing = load_cls_labels(ds.root, ds.num_classes) or {}
    _check_overwrite(existing, ds.ids, ds.root, overwrite)
    summary = TagSummary()
    new: dict[str, np.ndarray] = {}
    if labels_from is not None:
        edited, summary.warnings = read_tags_csv(Path(labels_from), ds.class_names)
        missing = [i for i in ds.ids if i not in edited]
        if missing:
            raise DataError(f"{labels_from}: no row for {len(missing)} photos of {split} (e.g. {missing[0]})")
        new = {i: edited[i] for i in ds.ids}
    else:
        rows = {}
        for id in tqdm(ds.ids, desc=f"tag {split}", unit="img", disable=not progress):
            fg, bg = image_scores(ds.load_image(id))
            new[id] = tag_labels(fg, threshold, at_least_one)
            names = ";".join(ds.class_names[1 + c] for c in np.flatnonzero(new[id]))
            rows[id] = [id, names, f"{float(bg.sum()):.4f}", *(f"{float(s):.4f}" for s in fg)]
        header = ["image", "labels", "background", *ds.class_names[1:]]
        _write_tags_csv(ds.root / TAGS_FILE, rows, header)
        summary.files.append(ds.root / TAGS_FILE)
    for id, labels in new.items():
        _compare_with_mask(ds, id, labels, summary)
    summary.files.append(write_cls_labels(ds.root, {**existing, **new}))
    summary.tagged, summary.labels = len(new), int(sum(v.sum() for v in new.values()))
    return summary
