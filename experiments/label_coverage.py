"""Why the agreement over every train photo fell as masks were drawn: how much of a photo the masks give to a class
(``foreground``: the mean share of a mask's pixels that are a class, ignored ones left out), against the fold
route's pseudo labels and the true masks, and the share of the photos' labels the masks name (``labelled_found``,
the run's and seed 0's), on each run's drawn photos and on the photos no run draws (``label_runs.py``'s
``common``). On a fold that ``experiments/label_runs.py`` has run:

    python experiments/label_coverage.py --data-root data/coco128-dev --fold 0/5 --out runs/labels/coco128-dev \\
        --json experiments/results/labels/coco128-dev_fold0_coverage.json

It reads ``OUT/foldF`` (``route/cls/pseudo/train``, ``truth/SegmentationClass``, each run's masks) and the fold's
``_runs.json`` beside ``--json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: its package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.label_folds import fold_parser  # noqa: E402
from experiments.label_runs import agreed, run_masks, undrawn_photos  # noqa: E402
from experiments.route_steps import write_json  # noqa: E402
from wsss.data.voc import VOCDataset  # noqa: E402
from wsss.evaluation.agreement import classes_found  # noqa: E402
from wsss.pipelines.route_labels import photo_labels  # noqa: E402
from wsss.utils.io import IGNORE, read_label_png  # noqa: E402


def foreground_share(folder: Path, ids: list[str]) -> float | None:
    """The mean over ``ids`` of the share of a mask's pixels that are a class (not background; ignored ones left
    out); None without ``ids``."""
    shares = []
    for i in ids:
        mask = read_label_png(folder / f"{i}.png")
        kept = mask != IGNORE
        shares.append(float(((mask != 0) & kept).sum() / max(int(kept.sum()), 1)))
    return round(float(np.mean(shares)), 4) if shares else None


def coverage(out: Path, runs: dict[str, Any], common: list[str]) -> dict[str, Any]:
    """Per run, on the photos it drew and on the ``common`` photos: the foreground share of its masks, of the seed-0
    route's, of the pseudo labels and of the true masks; the share of the labels its masks and seed 0's name."""
    sources = {"pseudo": out / "route" / "cls" / "pseudo" / "train", "truth": out / "truth" / "SegmentationClass"}
    seed0 = run_masks(out, "seed0")["train"]
    labels, names = photo_labels(out / "data", ["train"]), VOCDataset(out / "data", "train").class_names
    rows: dict[str, Any] = {}
    for name, run in runs.items():
        masks = {"run": run_masks(out, name)["train"], "seed0": seed0}
        rows[name] = {}
        for where, ids in (("drawn", run["drawn"]), ("common", common)):
            shares = {what: foreground_share(folder, ids) for what, folder in {**masks, **sources}.items()}
            found = {
                what: agreed(labels, classes_found(folder, ids), names, ids)["labelled_found"]
                for what, folder in masks.items()
            }
            rows[name][where] = {"foreground": shares, "labelled_found": found}
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = fold_parser(__doc__, "label_folds.py's --out (its OUT/foldF is read)")
    args = p.parse_args(argv)
    fold = int(args.fold.split("/")[0])
    out = Path(args.out).resolve() / f"fold{fold}"
    runs_json = Path(args.json).with_name(Path(args.json).name.replace("_coverage", "_runs"))
    if not runs_json.is_file():
        raise SystemExit(f"error: {runs_json}: no label_runs.py results beside --json")
    results = json.loads(runs_json.read_text())
    common = undrawn_photos(VOCDataset(out / "data", "train").ids, results["rule"], results["random"])
    res = {"data_root": str(Path(args.data_root).resolve()), "fold": fold, "common_photos": len(common)}
    res["runs"] = coverage(out, results["runs"], common)
    write_json(args.json, res)
    for name, row in res["runs"].items():
        print(name, json.dumps(row))
    return res


if __name__ == "__main__":
    main()
