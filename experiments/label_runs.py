"""Whether agreement with the labels ranks runs, and whether the route's draw-next list beats a random choice: on a
fold that ``experiments/label_folds.py`` has run, the route's DeepLab stage trained again, from the fold route's
pseudo labels, as variants of the fold's route:

- ``seed1``: another seed (``run.seed=1``), no photo drawn;
- ``rule10`` / ``rule20``: the first K photos of the draw-next list (``wsss.evaluation.agreement.draw_next`` over the
  train photos, from the fold route's labelled-only masks) given their true masks;
- ``random10`` / ``random20``: K train photos drawn at random (one shuffle by the fold's number, so the 10 are among
  the 20), given their true masks.

Each variant's stage is the route's ``seg`` step with the view changed (``data.true_masks=auto``: the drawn photos'
masks in place of their pseudo labels, the route's "mixed" stage; with 20 masks the route would choose between
stages by folds, which is not run here). Its masks are ``wsss predict --labelled-only --crf`` of train and val, as
the route's; the val mIoU is theirs against the val photos' true masks, the agreement is the mean share of each
train photo's labelled classes its predicted mask names, and a class is lost when fewer than half of its labelled
photos' masks name it. Both over three sets of train photos: every one (``labelled_found``, ``lost``); those no
variant draws (``common``: the same photos for every run, to rank the runs by); and those this run did not draw
(``undrawn``: as the route counts, since a drawn photo's mask is the user's). ``uncounted`` names the classes that
none of a set's photos is labelled with. The fold's own route is the variant ``seed0``.

    XDG_CACHE_HOME=... nice -n 5 python experiments/label_runs.py --data-root data/coco128-dev --fold 0/5 \\
        --out runs/labels/coco128-dev --json experiments/results/labels/coco128-dev_fold0_runs.json

Resumable: a variant with a score is not run again; a run scored before ``common`` and ``undrawn`` were is scored
again from its masks (``--variants ''`` does only that).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: its package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.commands import run_wsss  # noqa: E402
from experiments.data_views import all_ids, fold_split, make_view  # noqa: E402
from experiments.label_folds import fold_parser  # noqa: E402
from experiments.route_steps import write_json  # noqa: E402
from wsss.data.voc import VOCDataset  # noqa: E402
from wsss.evaluation import evaluate  # noqa: E402
from wsss.evaluation.agreement import agreement, classes_found, draw_next  # noqa: E402
from wsss.pipelines.route_labels import photo_labels  # noqa: E402

VARIANTS = ("rule10", "random10", "seed1", "rule20", "random20")  # run in this order: the K=10 pair first
MOST_DRAWN = 20  # the largest K of VARIANTS: the rule's and the shuffle's first 20 are the photos a variant may draw


def drawn_photos(name: str, rule: list[str], shuffled: list[str]) -> list[str]:
    """The train photos a variant draws: the first K of the rule's list or of the shuffle; none for a seed."""
    if name.startswith("rule"):
        return rule[: int(name[4:])]
    if name.startswith("random"):
        return shuffled[: int(name[6:])]
    return []


def stage_words(view: Path, route_out: Path, seg_dir: Path, seed: int) -> list[str]:
    """The fold route's ``seg`` step (from its ``plan.json``; a route planned before there was one: the words the
    route then typed) with the view, the seed and the run folder changed."""
    plan = route_out / "plan.json"
    if plan.is_file():
        words = next(s for s in json.loads(plan.read_text())["steps"] if s["name"] == "seg")["command"].split()[1:]
    else:
        pseudo = route_out / "cls" / "pseudo" / "train"
        words = ["train", "wsss::deeplab/real_cpu.yaml", f"data.pseudo_dir={pseudo}", "data.true_masks=auto"]
    changed = {"data.root": str(view), "run.seed": str(seed), "run.dir": str(seg_dir)}
    kept = [w for w in words if w.split("=", 1)[0] not in changed]
    return [*kept, *(f"{k}={v}" for k, v in changed.items()), "--quiet"]


def labelled_masks(seg_dir: Path, log: Path) -> dict[str, Path]:
    """``wsss predict SEG --split S --labelled-only --crf`` of train and val: each split's masks folder."""
    for split in ("train", "val"):
        words = ["predict", str(seg_dir), "--split", split, "--labelled-only", "--crf", "--quiet"]
        run_wsss(*words, log=log, in_process=False)
    return {s: predicted(seg_dir, s) for s in ("train", "val")}


def predicted(seg_dir: Path, split: str) -> Path:
    """Where ``wsss predict SEG --split S --labelled-only --crf`` writes its masks."""
    return seg_dir / "predictions_crf_labelled" / split


def undrawn_photos(train_ids: list[str], rule: list[str], shuffled: list[str]) -> list[str]:
    """The train photos that no variant draws: neither among the rule's first :data:`MOST_DRAWN` nor the shuffle's."""
    drawable = set(rule[:MOST_DRAWN]) | set(shuffled[:MOST_DRAWN])
    return [i for i in train_ids if i not in drawable]


def agreed(labels: dict[str, set[int]], found: dict[str, set[int]], names: list[str], ids: list[str]) -> dict[str, Any]:
    """The masks of ``ids`` (``found``: each photo's classes) against their ``labels``: the mean share of labels
    found, the lost classes, and the labelled classes that none of ``ids`` is labelled with (``uncounted``)."""
    mine = {i: labels[i] for i in ids}
    res = agreement(mine, {i: found[i] for i in ids}, names)
    uncounted = set().union(*labels.values()) - set().union(*mine.values())
    return {
        "photos": len(ids),
        "labelled_found": res["labelled_found"],
        "lost": res["lost"],
        "uncounted": [names[c] for c in sorted(uncounted)],
    }


def run_scores(
    masks: dict[str, Path], view: Path, train_ids: list[str], common: list[str], drawn: list[str]
) -> dict[str, Any]:
    """A run's val mIoU in % and its train masks' agreement with the labels over every train photo, over the
    ``common`` ones and over those it did not draw (``undrawn``); each mask read once."""
    labels, names = photo_labels(view, ["train"]), VOCDataset(view, "train").class_names
    found = classes_found(masks["train"], train_ids)
    drawn_set = set(drawn)
    everything = agreed(labels, found, names, train_ids)
    undrawn = [i for i in train_ids if i not in drawn_set]
    return {
        "val_miou": 100 * evaluate(masks["val"], view, "val").miou,
        "labelled_found": everything["labelled_found"],
        "lost": everything["lost"],
        "common": agreed(labels, found, names, common),
        "undrawn": agreed(labels, found, names, undrawn),
    }


def run_masks(out: Path, name: str) -> dict[str, Path]:
    """A run's masks of train and val: the fold route's (``after/``, both splits) for ``seed0``, else its stage's."""
    splits = ("train", "val")
    return {s: out / "after" if name == "seed0" else predicted(out / "runs" / name / "seg", s) for s in splits}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = fold_parser(__doc__, "label_folds.py's --out (its OUT/foldF/route is read)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="which, in order (comma-separated)")
    args = p.parse_args(argv)
    fold, folds = (int(x) for x in args.fold.split("/"))
    root = str(Path(args.data_root).resolve())
    out = Path(args.out).resolve() / f"fold{fold}"
    route_out, after = out / "route", out / "after"
    if not (after.is_dir() and (route_out / "cls" / "pseudo" / "train").is_dir()):
        raise SystemExit(f"error: {out}: run experiments/label_folds.py on fold {fold} first (no after/ masks)")
    train_ids, val_ids = fold_split(all_ids(root), fold, folds)
    fold_view = out / "data"
    labels = photo_labels(fold_view, ["train"])
    names = VOCDataset(fold_view, "train").class_names
    rule = [r["photo"] for r in draw_next(labels, classes_found(after, train_ids), set(), names)]
    shuffled = sorted(train_ids)
    random.Random(fold).shuffle(shuffled)
    res: dict[str, Any] = json.loads(Path(args.json).read_text()) if Path(args.json).exists() else {}
    res.update({"data_root": root, "fold": fold, "folds": folds})
    res.update({"rule": rule[:MOST_DRAWN], "random": shuffled[:MOST_DRAWN]})
    runs = res.setdefault("runs", {})
    common = undrawn_photos(train_ids, rule, shuffled)
    if "seed0" not in runs:
        runs["seed0"] = {
            "seed": 0,
            "drawn": [],
            **run_scores(run_masks(out, "seed0"), fold_view, train_ids, common, []),
        }
    for name, run in runs.items():  # scored before there were "common" and "undrawn"
        if "common" not in run or "undrawn" not in run:
            run.update(run_scores(run_masks(out, name), fold_view, train_ids, common, run["drawn"]))
    write_json(args.json, res)
    for name in [v for v in args.variants.split(",") if v]:
        if name in runs:
            continue
        drawn, seed = drawn_photos(name, rule, shuffled), 1 if name == "seed1" else 0
        here = out / "runs" / name
        view = make_view(root, here / "data", {"train": train_ids, "val": val_ids}, [*val_ids, *drawn])
        wall = run_wsss(*stage_words(view, route_out, here / "seg", seed), log=here / "run.log", in_process=False)
        masks = labelled_masks(here / "seg", here / "run.log")
        scores = run_scores(masks, view, train_ids, common, drawn)
        runs[name] = {"seed": seed, "drawn": drawn, "stage_s": round(wall, 1), **scores}
        write_json(args.json, res)
    return res


if __name__ == "__main__":
    main()
