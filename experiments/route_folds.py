"""experiments/real_route.py's folds: ``--fold F/N`` (the route on a view whose val is one fold of every photo),
``--folds N`` (every fold, each figure's mean, range and standard deviation over them), ``--reuse`` (finished folds
of other runs' JSONs) and ``--gain-over`` (a choice's gain fold by fold)."""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments.data_views import all_ids, fold_split, make_view, nested_subset
from experiments.route_steps import background_only_floor, write_json
from wsss.core.errors import UsageError
from wsss.data.voc import VOCDataset, read_split
from wsss.pipelines.steps import changed_settings, computed_words

# the options that decide a route's figures besides its photos: recorded, so that --reuse tells a finished fold of
# the same command from one of another
SETTINGS = (
    "preset",
    "overrides",
    "refine",
    "seg",
    "seg_set",
    "val_split",
    "seg_rounds",
    "seg_band",
    "seg_from_classifier",
    "seg_ensemble",
    "steps",
    "cam_scales",
    "affinity",
    "aff_set",
    "level",
    "abstain",
    "train_photos",
    "subset_seed",
    "ceiling",
    "variant",
)
# the settings recorded later than the others, as every run ran before they were: a record without them is read so
UNRECORDED = {
    "level": "sweep",
    "abstain": False,
    "train_photos": None,
    "subset_seed": None,
    "ceiling": False,
    "variant": [],
}
Route = Callable[[argparse.Namespace], dict[str, Any]]


def route_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in SETTINGS}


def _what_is_computed(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` without the words of where and how fast the route ran (``pipelines.steps.computed_words``), the
    settings it does not record at their value before they were recorded (``UNRECORDED``)."""
    return {
        k: computed_words(v) if k in ("overrides", "seg_set", "aff_set") else v
        for k, v in {**UNRECORDED, **settings}.items()
    }


def fold_view(root: str, fold_of: str, out: Path) -> dict[str, Any]:
    """``--fold F/N``: the view ``OUT/data`` whose val is fold F of N of the photos (sorted, dealt round-robin) and
    whose train is the others; the fold's entry of the JSON (``view``: the view's root)."""
    fold, folds = (int(x) for x in fold_of.split("/"))
    train_ids, val_ids = fold_split(all_ids(root), fold, folds)
    source = VOCDataset(root, "train")  # has_mask reads the folder, whatever the split
    masked = [i for i in [*train_ids, *val_ids] if source.has_mask(i)]
    view = make_view(root, out / "data", {"train": train_ids, "val": val_ids}, masked)
    return {"fold": fold, "folds": folds, "view": str(view), "val_ids": val_ids}


def subset_view(root: str, k: int, seed: int, val_split: str, out: Path) -> dict[str, Any]:
    """``--train-photos K``: the view ``OUT/data_trainK`` whose train split is K of ``root``'s train photos
    (``data_views.nested_subset`` by ``seed``: the K of a smaller K inside) and whose val is ``root``'s; the JSON's
    ``subset`` entry. A UsageError when ``root`` has fewer train photos."""
    train_ids, val_ids = list(dict.fromkeys(read_split(root, "train"))), read_split(root, val_split)
    try:
        ids = nested_subset(train_ids, k, seed)
    except ValueError:
        raise UsageError(
            f"--train-photos {k}: {root} has {len(train_ids)} train photos; pass at most {len(train_ids)}"
        ) from None
    source = VOCDataset(root, "train")  # has_mask reads the folder, whatever the split
    masked = [i for i in [*ids, *val_ids] if source.has_mask(i)]
    view = make_view(root, out / f"data_train{k}", {"train": ids, val_split: val_ids}, masked)
    return {"train_photos": k, "seed": seed, "of": len(train_ids), "view": str(view), "train_ids": ids}


def cross_validate(args: argparse.Namespace, route: Route) -> dict[str, Any]:
    """``--folds N``: ``route`` on every fold (``--fold F/N`` into ``OUT/foldF``) and the ``summary`` of the folds."""
    if args.fold:
        raise SystemExit("--folds runs every fold; --fold F/N runs one: pass one of them")
    other = _gain_over_folds(args) if args.gain_over else []  # checked before hours of training, not after
    kept = _reusable_folds(args)  # likewise
    runs = []
    for fold in range(args.folds):
        if args.kept_only and fold not in kept:  # the finished folds gathered, the first missing one ends them
            print(
                f"fold {fold}/{args.folds}: in none of --reuse's JSONs; --kept-only: not run, nor any after it",
                file=sys.stderr,
            )
            break
        one = argparse.Namespace(**{**vars(args), **_fold_overrides(args, fold)})
        runs.append(_kept_fold(one, *kept[fold]) if fold in kept else route(one))
        if args.json:  # what the finished folds measured, kept if a later fold is stopped
            write_json(args.json, {"folds": runs, "summary": summarise(runs)})
    res: dict[str, Any] = {"folds": runs, "summary": summarise(runs)}
    if args.gain_over:  # this route's figures minus the other's, on the same folds
        other = _gain_over_folds(args)  # read again: the other run may have finished more folds meanwhile
        res["gain_over"] = {
            "other": str(args.gain_over),
            "summary": summarise([_difference(a, b) for a, b in zip(runs, other)]),
        }
        if len(other) < len(runs):  # the gains cover the folds both have run; the rule needs them all
            res["gain_over"]["folds"] = len(other)
            print(
                f"warning: {args.gain_over} has {len(other)} of {len(runs)} folds: the gains are over those; rerun "
                "this command when it has all (its finished stages are reused)",
                file=sys.stderr,
            )
    return res


def _reusable_folds(args: argparse.Namespace) -> dict[int, tuple[dict[str, Any], Path]]:
    """The finished folds of ``--reuse``'s JSONs by index, each checked to be this command's (the same val photos,
    the same settings, every figure it measures); SystemExit naming the file otherwise."""
    kept: dict[int, tuple[dict[str, Any], Path]] = {}
    mine = _val_ids_of_folds(args) if args.reuse else []
    for path in map(Path, args.reuse):
        res = _read_json(path)
        try:
            entries = res.get("folds", [res])
            folds = [(int(e["fold"]["fold"]), int(e["fold"]["folds"]), list(e["fold"]["val_ids"]), e) for e in entries]
        except (AttributeError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"{path}: not the JSON of a --folds or --fold F/N run ({e!r})") from None
        for fold, of, val_ids, entry in folds:
            if of != args.folds or not 0 <= fold < of or val_ids != mine[fold]:
                raise SystemExit(f"{path}: its fold {fold}/{of} is not this run's (another data set or --folds)")
            if fold in kept:
                raise SystemExit(f"{path}: fold {fold} is in {kept[fold][1]} too: pass one of them")
            ours = route_settings(argparse.Namespace(**{**vars(args), **_fold_overrides(args, fold)}))
            theirs = entry.get("settings")
            if theirs is None:  # a JSON from before the settings were recorded: its figures must all be there
                missing = [k for k, on in (("steps", args.steps), ("seg_ensemble", args.seg_ensemble > 1)) if on]
                if entry.get("preset") != args.preset or any(k not in entry for k in missing):
                    raise SystemExit(f"{path}: fold {fold} is of another preset or lacks {missing}: not this run's")
                print(
                    f"warning: {path}: fold {fold} records no settings (a JSON from before they were): taken as "
                    "this command's on your word (--reuse)",
                    file=sys.stderr,
                )
            elif other := changed_settings(_what_is_computed(theirs), _what_is_computed(ours)):
                raise SystemExit(f"{path}: fold {fold} was run with other settings ({', '.join(other)})")
            kept[fold] = entry, path
    return kept


def _read_json(path: Path) -> Any:
    """Another run's JSON; SystemExit naming the file when it cannot be read, or is no JSON."""
    try:
        text = path.read_text()
    except OSError as e:
        raise SystemExit(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        return json.loads(text)
    except ValueError as e:
        raise SystemExit(f"{path}: not JSON ({e})") from None


def _val_ids_of_folds(args: argparse.Namespace) -> list[list[str]]:
    ids = all_ids(str(Path(args.data_root).resolve()))
    return [fold_split(ids, f, args.folds)[1] for f in range(args.folds)]


def _fold_overrides(args: argparse.Namespace, fold: int) -> dict[str, Any]:
    """The options of fold ``fold``'s route: its index is its seed unless the command sets ``run.seed`` (the folds'
    spread holds both noises)."""
    seed = [] if any(o.startswith("run.seed=") for o in args.overrides) else [f"run.seed={fold}"]
    seg_seed = [] if any(o.startswith("run.seed=") for o in args.seg_set) else [f"run.seed={fold}"]
    return {
        "fold": f"{fold}/{args.folds}",
        "folds": 0,
        "out": str(Path(args.out) / f"fold{fold}"),
        "json": None,
        "overrides": [*args.overrides, *seed],
        "seg_set": [*args.seg_set, *seg_seed],
    }


def _kept_fold(one: argparse.Namespace, entry: dict[str, Any], path: Path) -> dict[str, Any]:
    """A finished fold taken from ``path``; with ``--steps``, its ``floor`` measured where it predates it."""
    print(f"fold {one.fold}: taken from {path} (not run again)", file=sys.stderr)
    entry = {**entry, "reused_from": str(path)}
    if one.steps and "floor" not in entry:
        view = fold_view(str(Path(one.data_root).resolve()), one.fold, Path(one.out).resolve())["view"]
        entry["floor"] = background_only_floor(view, one.val_split)
    return entry


def _gain_over_folds(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The folds of ``--gain-over``'s JSON, checked to hold this run's val photos; SystemExit naming the file."""
    path = Path(args.gain_over)
    try:
        other = _read_json(path)["folds"]
    except (KeyError, TypeError) as e:
        raise SystemExit(f"{path}: not the JSON of a --folds run ({e!r})") from None
    if len(other) > args.folds or [r["fold"]["val_ids"] for r in other] != _val_ids_of_folds(args)[: len(other)]:
        raise SystemExit(f"{path}: its folds are not this run's (another data set or --folds)")
    return other


_NOT_COMPARED = object()  # a key path where the two runs do not both hold a number (a name, a flag, a list's length)


def _difference(a: Any, b: Any) -> Any:
    """``a - b`` at every number both hold at one key path; None where one of them is undefined (None)."""
    number = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return _NOT_COMPARED
    if isinstance(a, number) and isinstance(b, number):
        return a - b
    if (a is None or isinstance(a, number)) and (b is None or isinstance(b, number)):
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        pairs = {k: _difference(a[k], b[k]) for k in a if k in b}
        return {k: v for k, v in pairs.items() if v is not _NOT_COMPARED}
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [None if d is _NOT_COMPARED else d for d in map(_difference, a, b)]
    return _NOT_COMPARED


def figures(obj: Any, prefix: str = "") -> dict[str, float | None]:
    """Every number of a run's JSON by its key path (``a.b.0.c``), an undefined one (None, NaN) as None; flags left
    out."""
    if isinstance(obj, bool):
        return {}
    if obj is None or isinstance(obj, (int, float)):
        return {prefix: float(obj) if obj is not None and math.isfinite(obj) else None}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    return {k: v for key, val in items for k, v in figures(val, f"{prefix}.{key}" if prefix else str(key)).items()}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every number all ``runs`` hold at one key path (``a.b.0.c``): its mean, min, max, standard deviation (n - 1)
    and values. An undefined value (None, NaN) shows as None and the figures are over the ``n`` runs that have one;
    a path undefined in every run is left out."""
    flat = [figures(r) for r in runs]
    out = {}
    for k in [k for k in flat[0] if all(k in f for f in flat[1:])] if flat else []:
        values = [f[k] for f in flat]
        defined = [v for v in values if v is not None]
        if defined:
            out[k] = {
                "mean": statistics.fmean(defined),
                "min": min(defined),
                "max": max(defined),
                "sd": statistics.stdev(defined) if len(defined) > 1 else 0.0,
                "values": values,
                "n": len(defined),
            }
    return out
