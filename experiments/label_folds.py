"""What the route's masks do with the photos' labels, by folds of every photo: ``wsss route`` on a view whose train
is the other folds' photos (labels, no masks) and whose val is the fold's (with masks), its plan (``--plan``) kept
before it and set against its ``steps.jsonl`` after it, the load sampled while it runs; then every train and val
photo's mask scored against the source set's true masks, as the route made them (``OUT/masks``) and as
``wsss predict --labelled-only --crf`` makes them with the same stage.

    XDG_CACHE_HOME=... nice -n 5 python experiments/label_folds.py --data-root data/coco128-dev --fold 0/5 \\
        --out runs/labels/coco128-dev --json experiments/results/labels/coco128-dev_fold0.json

A fold whose route has finished is not run again (the same ``wsss route`` command continues a stopped one); the JSON
is written after each part that has a figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: its package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.commands import run_wsss  # noqa: E402
from experiments.data_views import all_ids, fold_split, make_view  # noqa: E402
from experiments.route_steps import write_json  # noqa: E402
from wsss.cli_common import script_parser
from wsss.data.voc import VOCDataset  # noqa: E402
from wsss.evaluation import evaluate  # noqa: E402
from wsss.evaluation.agreement import classes_in_mask  # noqa: E402
from wsss.runs.run import allowed_classes  # noqa: E402
from wsss.utils.io import read_label_png, save_label_png  # noqa: E402

LOAD_EVERY_S = 30.0
# a recovered class's region in its probability map: the pixels at this fraction of its peak on the photo or more
# (as a CAM's peak region), set before any figure
PEAK_FRACTION = 0.5


def label_view(root: str, fold: int, folds: int, out: Path) -> dict[str, Any]:
    """The view ``out/data``: train, the other folds' photos without masks; val, fold ``fold``'s photos with theirs."""
    train_ids, val_ids = fold_split(all_ids(root), fold, folds)
    view = make_view(root, out / "data", {"train": train_ids, "val": val_ids}, masked=val_ids)
    return {"fold": fold, "folds": folds, "view": str(view), "train_ids": train_ids, "val_ids": val_ids}


class LoadLog:
    """``os.getloadavg`` every ``every`` seconds into a JSON-lines file, on a thread, while the block runs."""

    def __init__(self, path: Path, every: float = LOAD_EVERY_S) -> None:
        self.path, self.every, self._stop = path, every, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        with open(self.path, "a") as f:
            while True:
                f.write(json.dumps({"t": time.time(), "load": os.getloadavg()}) + "\n")
                f.flush()
                if self._stop.wait(self.every):
                    return

    def __enter__(self) -> LoadLog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def route_words(view: str, route_out: Path, seed: int) -> list[str]:
    return ["route", view, "--out", str(route_out), f"run.seed={seed}", "--quiet"]


def plan_and_route(view: str, out: Path, seed: int) -> dict[str, Any]:
    """The route's plan (``out/plan.txt``, once, before the route's first start) and the route (``out/route``,
    continued if stopped); the load while it ran in ``out/load.jsonl``."""
    route_out, plan = out / "route", out / "plan.txt"
    if not plan.exists():
        tmp = plan.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        run_wsss(*route_words(view, route_out, seed), "--plan", log=tmp, in_process=False)
        tmp.rename(plan)
    if not (route_out / "steps.jsonl").exists() or not _route_finished(route_out):
        with LoadLog(out / "load.jsonl"):
            wall = run_wsss(*route_words(view, route_out, seed), log=out / "route.log", in_process=False)
        return {"route_wall_s": wall}
    return {}


def _route_finished(route_out: Path) -> bool:
    return (route_out / "masks").is_dir() and (route_out / "summary.json").exists()


def plan_seconds(text: str) -> dict[str, float | None]:
    """Each step's estimate in seconds from a ``wsss route --plan`` output (``[i/n] title: ...`` then ``estimate:
    about ...``; None where it says none measured), and ``whole`` for its total."""
    out: dict[str, float | None] = {}
    title = None
    for line in text.splitlines():
        if m := re.match(r"\[\d+/\d+\] (\w[\w ]*?): ", line):
            title = m.group(1)
        elif m := re.match(r"\s*estimate: (?:about )?(.*?)( in all|$| \()", line):
            out["whole" if m.group(2) == " in all" else title or "?"] = duration_seconds(m.group(1))
            title = None
    return out


def duration_seconds(words: str) -> float | None:
    """``12.3 s``, ``4 min 05 s``, ``1 h 02 min`` or ``0 s`` in seconds; None for anything else (none measured)."""
    units = {"h": 3600.0, "min": 60.0, "s": 1.0}
    parts = re.findall(r"([\d.]+) (h|min|s)\b", words)
    return sum(float(n) * units[u] for n, u in parts) if parts else None


def step_seconds(log: Path) -> dict[str, float]:
    """Each step's seconds from a route's ``steps.jsonl``, its runs summed (a stopped and continued step: both)."""
    out: dict[str, float] = {}
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        out[entry["step"]] = out.get(entry["step"], 0.0) + float(entry["seconds"])
    out["whole"] = sum(out.values())
    return out


def load_summary(log: Path) -> dict[str, Any]:
    """The one-minute load averages sampled while the route ran: their count, mean, min and max."""
    loads = [json.loads(line)["load"][0] for line in log.read_text().splitlines() if line.strip()]
    return (
        {
            "samples": len(loads),
            "every_s": LOAD_EVERY_S,
            "mean": statistics.fmean(loads),
            "min": min(loads),
            "max": max(loads),
        }
        if loads
        else {"samples": 0}
    )


def plan_against_run(out: Path) -> dict[str, Any]:
    """The plan kept before the route (``out/plan.txt``) step by step against its ``steps.jsonl``, and the load."""
    plan, actual = plan_seconds((out / "plan.txt").read_text()), step_seconds(out / "route" / "steps.jsonl")
    return {
        "rates": next(
            (
                line.split("rates: ", 1)[1].rstrip(")")
                for line in (out / "plan.txt").read_text().splitlines()
                if "in all (rates: " in line
            ),
            None,
        ),
        "steps": {k: {"plan_s": plan.get(k), "actual_s": actual.get(k)} for k in dict.fromkeys([*plan, *actual])},
        "load": load_summary(out / "load.jsonl"),
    }


def truth_view(root: str, fold: dict[str, Any], out: Path) -> Path:
    """The view ``out/truth``: splits ``all``, ``train`` and ``val`` of the fold's photos, each with its true mask."""
    ids = [*fold["train_ids"], *fold["val_ids"]]
    return make_view(root, out / "truth", {"all": ids, "train": fold["train_ids"], "val": fold["val_ids"]}, ids)


def label_agreement(masks: Path, ds: VOCDataset, ids: list[str]) -> dict[str, Any]:
    """How each photo's mask in ``masks`` agrees with its image labels: the photos missing a labelled class, the
    masks naming an unlabelled class, the share of the classes named that are unlabelled and of the labelled
    classes found; ``photos``: each photo's missing and unlabelled classes (where it has any)."""
    named_total = unlabelled_total = labelled_total = found_total = 0
    photos: dict[str, dict[str, list[int]]] = {}
    for i in ids:
        labelled = set(allowed_classes(ds.labels(i))) - {0}
        named = classes_in_mask(masks / f"{i}.png")
        missing, unlabelled = sorted(labelled - named), sorted(named - labelled)
        named_total, unlabelled_total = named_total + len(named), unlabelled_total + len(unlabelled)
        labelled_total, found_total = labelled_total + len(labelled), found_total + len(labelled & named)
        if missing or unlabelled:
            photos[i] = {"missing": missing, "unlabelled": unlabelled}
    return {
        "photos_scored": len(ids),
        "photos_missing_a_label": sum(bool(p["missing"]) for p in photos.values()),
        "masks_naming_an_unlabelled_class": sum(bool(p["unlabelled"]) for p in photos.values()),
        "classes_named": named_total,
        "unlabelled_share_of_named": unlabelled_total / max(named_total, 1),
        "labelled_classes": labelled_total,
        "labelled_found_share": found_total / max(labelled_total, 1),
        "photos": photos,
    }


def scored(masks: Path, truth: Path) -> dict[str, Any]:
    """The masks' mIoU in % against the true masks (``wsss eval``'s evaluator), over every photo, train and val;
    their agreement with the labels (:func:`label_agreement`)."""
    res = {f"miou_{split}": 100 * evaluate(masks, truth, split).miou for split in ("all", "train", "val")}
    ds = VOCDataset(truth, "all")
    return {**res, "labels": label_agreement(masks, ds, list(ds.ids))}


def linked_masks(folders: list[Path], dest: Path) -> Path:
    """One folder ``dest`` of links to the masks of ``folders`` (the splits' prediction folders), to score at once."""
    dest.mkdir(parents=True, exist_ok=True)
    for folder in folders:
        for mask in folder.glob("*.png"):
            if not (dest / mask.name).exists():
                (dest / mask.name).symlink_to(mask)
    return dest


def predicted_masks(route_out: Path, out: Path, labelled_only: bool) -> Path:
    """``wsss predict OUT/seg --split S --crf`` of train and val, linked into one folder: ``out/before`` over every
    class (the route's masks before it used the labels), or ``out/after`` with ``--labelled-only --save-probs`` (the
    route's masks since; the probabilities for a recovery)."""
    seg = route_out / "seg"
    extra = ["--labelled-only", "--save-probs"] if labelled_only else []
    for split in ("train", "val"):
        run_wsss(
            "predict", str(seg), "--split", split, "--crf", *extra, "--quiet", log=out / "predict.log", in_process=False
        )
    folder = seg / ("predictions_crf_labelled" if labelled_only else "predictions_crf")
    return linked_masks([folder / "train", folder / "val"], out / ("after" if labelled_only else "before"))


def recovered(masks: Path, agreement: dict[str, Any], region: Any, dest: Path) -> Path:
    """The masks of ``masks`` with each photo's missing labelled classes put back (``dest``): ``region(id, c)`` is
    the boolean map of class c's region on photo id (None: none known); only its pixels the mask names background
    change. The other photos' masks are linked as they are."""
    dest.mkdir(parents=True, exist_ok=True)
    for mask in masks.glob("*.png"):
        i, target = mask.stem, dest / mask.name
        missing = agreement["photos"].get(i, {}).get("missing", [])
        if target.exists() or target.is_symlink():
            continue
        label = read_label_png(mask)
        for c in missing:
            where = region(i, c)
            if where is not None:
                label[(label == 0) & where] = c
        if missing:
            save_label_png(target, label)
        else:
            target.symlink_to(mask.resolve())
    return dest


def par_region(route_out: Path) -> Any:
    """A missing class's region from the route's PAR pseudo label of a train photo (None for a val photo)."""

    def region(i: str, c: int) -> np.ndarray | None:
        path = route_out / "cls" / "pseudo" / "train" / f"{i}.png"
        return read_label_png(path) == c if path.exists() else None

    return region


def probability_region(route_out: Path, split_of: dict[str, str]) -> Any:
    """A missing class's region from the stage's labelled-only probability of it: the pixels at ``PEAK_FRACTION``
    of its peak on the photo or more."""

    def region(i: str, c: int) -> np.ndarray:
        prob = np.load(route_out / "seg" / "probs" / split_of[i] / f"{i}.npy", mmap_mode="r")[c].astype(np.float32)
        return prob >= PEAK_FRACTION * prob.max() if prob.max() > 0 else np.zeros(prob.shape, bool)

    return region


def route_summary(route_out: Path) -> dict[str, Any]:
    """What the route chose and scored (its ``summary.json``): the choices' values and the val mIoU."""
    summary = json.loads((route_out / "summary.json").read_text())
    choices = {k: v.get("value") if isinstance(v, dict) else v for k, v in summary.get("choices", {}).items()}
    return {"choices": choices, "val_miou": summary.get("scores", {}).get("val_miou")}


def score_fold(res: dict[str, Any], out: Path, json_path: str) -> None:
    """Before (the stage's masks over every class), after (labelled-only) and each recovery, scored into ``res`` and
    written after each. (The route's ``OUT/masks`` holds the val photos' drawn masks, so it is not scored.)"""
    route_out, truth = out / "route", truth_view(res["data_root"], res["fold"], out)
    if "before" not in res:
        res["before"] = scored(predicted_masks(route_out, out, labelled_only=False), truth)
        write_json(json_path, res)
    after = predicted_masks(route_out, out, labelled_only=True)
    if "after" not in res:
        res["after"] = scored(after, truth)
        write_json(json_path, res)
    split_of = {**dict.fromkeys(res["fold"]["train_ids"], "train"), **dict.fromkeys(res["fold"]["val_ids"], "val")}
    ways = {"par": par_region(route_out), "probability": probability_region(route_out, split_of)}
    for name, region in ways.items():
        key = f"after_recovered_{name}"
        if key not in res:
            res[key] = scored(recovered(after, res["after"]["labels"], region, out / f"recovered_{name}"), truth)
            write_json(json_path, res)


def fold_parser(doc: str | None, out_help: str) -> argparse.ArgumentParser:
    """The options of a fold's script: ``--data-root``, ``--fold F/N``, ``--out`` (``out_help``) and ``--json``."""
    p = script_parser(doc)
    p.add_argument("--data-root", required=True)
    p.add_argument("--fold", required=True, help="F/N: the fold F of N of every photo as val")
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--json", required=True)
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = fold_parser(__doc__, "the folds' folder (OUT/foldF: the view, the plan, the route)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    fold, folds = (int(x) for x in args.fold.split("/"))
    root = str(Path(args.data_root).resolve())
    out = Path(args.out).resolve() / f"fold{fold}"
    out.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {
        "data_root": root,
        "seed": args.seed,
        "fold": label_view(root, fold, folds, out),
        "rates_cache": os.environ.get("XDG_CACHE_HOME"),
    }
    if Path(args.json).exists():  # a resumed fold keeps the figures it has
        res = {**json.loads(Path(args.json).read_text()), **res}
    res.update(plan_and_route(res["fold"]["view"], out, args.seed))
    res["plan_against_run"] = plan_against_run(out)
    res["route"] = route_summary(out / "route")
    write_json(args.json, res)
    score_fold(res, out, args.json)
    return res


if __name__ == "__main__":
    main()
