"""One method's whole route on a real-photo dataset, scored at every step: the figures of a row of BENCHMARKS.md's
ccp-dev table.

The route a user runs is ``wsss route`` (docs/own-photos.md#what-it-does). This script adds only what research needs
(folds of every photo, arms, seeds, extra scoring) and runs each step by the package's own step functions and step
runner (experiments/route_steps.py), in this process: a change to a step changes both routes alike. Its steps and
options: docs/benchmarks/history/real-photos.md#research-runner.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/real_route.py configs/rca/real_cpu.yaml \\
        --data-root data/ccp-dev --out runs/ccp/rca --json runs/ccp/rca.json

A step whose outputs exist is not redone (rerun after a stop to finish: SIGTERM stops it as Ctrl-C does, a
training saving its ``last.pt``); ``KEY=VALUE`` words / ``--seg-set`` add overrides to the two trainings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from wsss.cli_common import OVERRIDES_METAVAR, script_parser
from wsss.core.config import load_config
from wsss.data.voc import MASK_DIRS, VOCDataset
from wsss.pipelines.steps import StepRunner

if __package__ in (None, ""):  # run as a script (`python experiments/real_route.py`): its package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.route_folds import cross_validate, fold_view, route_settings, subset_view  # noqa: E402
from experiments.route_masks import masks_experiment  # noqa: E402
from experiments.route_steps import (  # noqa: E402
    background_only_floor,
    cams,
    miou,
    predict,
    preset_path,
    pseudo_labels,
    score,
    scored_predictions,
    sweep,
    train,
    write_json,
)


def route(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cls, root = out / "cls", str(Path(args.data_root).resolve())
    runner = StepRunner(out, command="experiments/real_route.py", transcript=out / "route.log")
    res: dict[str, Any] = {"preset": args.preset, "data_root": root, "settings": route_settings(args)}
    runner.record(res["settings"])
    root = _views(args, res, root, out)
    res["train"] = train(args.preset, [f"data.root={root}", *args.overrides], cls, runner)
    scales, shown = _cam_scales(args)
    cams(cls, scales, shown, runner)
    if args.masks:
        return masks_experiment(args, res, out, cls, root, runner)
    sweep(cls, None, cls / "bkg_sweep/train.json", runner)
    s = json.loads((cls / "bkg_sweep/train.json").read_text())
    level, own = float(s["best_thre"]), float(s["config_bkg_thre"])
    by_level = dict(zip(s["thresholds"], s["miou"]))
    res["seeds"] = {
        "level": level,
        "miou": 100 * float(s["best_miou"]),
        "config_level": own,
        "config_miou": 100 * by_level[own] if own in by_level else None,
    }
    cams(cls, [*scales, f"cam.bkg_thre={level:g}"], f"{shown} --bkg-thre {level:g}", runner)
    res["pseudo"] = {}
    labels_of = partial(pseudo_labels, cls, root, runner=runner)
    if args.level == "own":  # the route's: the labels at the preset's own level, as `wsss route` makes them
        level, res["seeds"]["stage_level"] = own, "own"
    for refine in args.refine:
        affinity_run = None
        if refine == "affinity":  # PSA: seeds at the run's own pair, the affinity network, then the walk
            high, low = s["config_pair"]
            seeds = labels_of("psa", (high, low), "pseudo_psa_seeds")
            affinity_run = out / "aff"
            res["affinity"] = {
                "seed_levels": [high, low],
                "seeds": 100 * miou(seeds.parent / "eval.json"),
                "train": train(
                    args.affinity,
                    [f"data.root={root}", f"data.pseudo_dir={seeds}", *args.aff_set],
                    affinity_run,
                    runner,
                ),
            }
        name = f"pseudo_{refine}" + ("_own_level" if args.level == "own" else "")
        pseudo = labels_of(refine, (level, level), name, affinity_run=affinity_run)
        res["pseudo"][refine] = 100 * miou(pseudo.parent / "eval.json")
    labels = cls / (f"pseudo_{args.refine[0]}" + ("_own_level" if args.level == "own" else "")) / "train"
    if args.seg_band:  # the uncertain pixels between the run's two levels left to the stage's ignore index
        labels = labels_of(args.refine[0], tuple(s["config_pair"]), f"pseudo_{args.refine[0]}_band")
        res["pseudo"][f"{args.refine[0]}_band"] = 100 * miou(labels.parent / "eval.json")
    if args.seg:
        seg_set = [f"model.pretrained={cls}", *args.seg_set] if args.seg_from_classifier else args.seg_set
        _seg_stage(args, res, out, cls, root, labels, seg_set, runner)
        if args.steps:  # each step's own contribution, the gains in "steps"
            _step_gains(args, res, out, cls, root, seg_set, runner)
        if args.abstain:  # the same stage on labels that abstain where the refiners disagree
            _abstain_stage(args, res, out, cls, root, level, seg_set, runner)
        if args.variant:  # the same stage on the same labels with other settings
            _variant_stages(args, res, out, labels, root, seg_set, runner)
        if args.ceiling:  # the same stage on the train photos' true masks
            _ceiling_stage(args, res, out, root, seg_set, runner)
    return res


def _views(args: argparse.Namespace, res: dict[str, Any], root: str, out: Path) -> str:
    """The data set the route runs on: with ``--fold F/N`` a view whose val is that fold of every photo (``fold``),
    with ``--train-photos K`` a view of it whose train split is K of its train photos (``subset``); its root."""
    if args.fold:  # the data set's photos split anew: this fold's val held out, the other folds' photos train
        res["fold"] = fold_view(root, args.fold, out)
        root = res["fold"]["view"]
    if args.train_photos:  # drawn by --subset-seed, else by the classifier's run.seed
        seed = args.subset_seed
        if seed is None:
            seed = load_config(preset_path(args.preset), [f"data.root={root}", *args.overrides]).run.seed
        res["subset"] = subset_view(root, args.train_photos, seed, args.val_split, out)
        root = res["subset"]["view"]
    return root


def _ceiling_stage(
    args: argparse.Namespace, res: dict[str, Any], out: Path, root: str, seg_set: list[str], runner: StepRunner
) -> None:
    """``--ceiling``: the route's DeepLab stage (its preset, ``--seg-set`` and seed) on the true masks of the train
    photos (``data.pseudo_dir`` their folder, as the ceilings by hand were run), scored on val plain and with the
    CRF; the route's share of it is the tables' (experiments/learning_curve.py)."""
    masks = next(p for p in (Path(root) / d for d in MASK_DIRS) if p.is_dir())  # a view's is SegmentationClass
    res["ceiling"] = _scored_stage(args, out / "seg_ceiling", masks, root, seg_set, runner)


def _scored_stage(
    args: argparse.Namespace, seg: Path, labels: Path, root: str, words: list[str], runner: StepRunner
) -> dict[str, Any]:
    """The DeepLab stage ``seg`` on ``labels`` with ``words``, scored on val plain and with the CRF."""
    scored = partial(scored_predictions, root=root, split=args.val_split, runner=runner)
    return {
        "labels": str(labels),
        "train": train(args.seg, [f"data.root={root}", f"data.pseudo_dir={labels}", *words], seg, runner),
        "val": scored(seg),
        "val_crf": scored(seg, crf=True),
    }


def _variant_stages(
    args: argparse.Namespace,
    res: dict[str, Any],
    out: Path,
    labels: Path,
    root: str,
    seg_set: list[str],
    runner: StepRunner,
) -> None:
    """``--variant NAME WORD ...``: the stage on round 1's labels with the variant's words after ``--seg-set``'s
    (``OUT/seg_NAME``), in ``variants.NAME``."""
    res["variants"] = {
        name: _scored_stage(args, out / f"seg_{name}", labels, root, [*seg_set, *words], runner)
        for name, *words in args.variant
    }


def _abstain_stage(
    args: argparse.Namespace,
    res: dict[str, Any],
    out: Path,
    cls: Path,
    root: str,
    level: float,
    seg_set: list[str],
    runner: StepRunner,
) -> None:
    """``--abstain``: the labels of ``wsss pseudo --refine agree`` at the stage's level (PAR's where the CAM's label
    and the CRF's agree, 255 elsewhere), the DeepLab stage on them, scored on val plain and with the CRF (its gains:
    experiments/candidates_table.py)."""
    name = "pseudo_agree" + ("_own_level" if args.level == "own" else "")
    labels = pseudo_labels(cls, root, "agree", (level, level), name, runner=runner)
    res["abstain"] = {
        **_scored_stage(args, out / "seg_abstain", labels, root, seg_set, runner),
        "pseudo": _label_scores(labels.parent / "eval.json"),
    }


def _label_scores(scores: Path) -> dict[str, Any]:
    """A pseudo-label folder's ``wsss eval --pseudo`` JSON in %: its mIoU (255 as background), its mIoU on the pixels
    it labels (``pseudo_miou``) and the share of the pixels it leaves at 255."""
    data = json.loads(scores.read_text())
    return {k: None if data.get(k) is None else 100 * float(data[k]) for k in ("miou", "pseudo_miou", "ignored_share")}


def _seg_stage(
    args: argparse.Namespace,
    res: dict[str, Any],
    out: Path,
    cls: Path,
    root: str,
    labels: Path,
    seg_set: list[str],
    runner: StepRunner,
) -> None:
    """The DeepLab stage's rounds on ``labels``, each scored on val (plain, tagged, soft-tagged), and its ensemble."""
    res["seg_rounds"] = []
    for r in range(1, args.seg_rounds + 1):
        seg = out / ("seg" if r == 1 else f"seg_r{r}")
        trained = train(args.seg, [f"data.root={root}", f"data.pseudo_dir={labels}", *seg_set], seg, runner)
        row = {
            "round": r,
            "labels": str(labels),
            "train": trained,
            "val": score(predict(seg, args.val_split, runner), root, args.val_split, seg / "eval.json", runner),
        }
        row["val_crf"] = scored_predictions(seg, crf=True, root=root, split=args.val_split, runner=runner)
        for gate, suffix in (("hard", "tagged"), ("soft", "tagged_soft")):  # the classifier's tags, both gates
            pred = predict(seg, args.val_split, runner, tags_from=cls, tag_gate=gate)
            row[f"val_{suffix}"] = score(pred, root, args.val_split, seg / f"eval_{suffix}.json", runner)
        if r < args.seg_rounds:  # the next round's labels: this round's predictions of the train photos, naming
            # only each photo's labelled classes, with the CRF (the best of the three on ccp-dev: BENCHMARKS.md)
            labels = predict(seg, "train", runner, crf=True, labelled_only=True)
            row["train_predictions"] = score(labels, root, "train", seg / "eval_train.json", runner, pseudo=True)
        res["seg_rounds"].append(row)
    first = res["seg_rounds"][0]
    res["seg_train"] = first["train"]
    res["seg_val"] = {
        "refine": args.refine[0],
        "miou": first["val"],
        "tagged": first["val_tagged"],
        "tagged_soft": first["val_tagged_soft"],
    }
    if args.seg_ensemble > 1:
        res["seg_ensemble"] = _seg_ensemble(args, out, cls, root, Path(first["labels"]), seg_set, runner)


def _seg_ensemble(
    args: argparse.Namespace, out: Path, cls: Path, root: str, labels: Path, seg_set: list[str], runner: StepRunner
) -> dict[str, Any]:
    """``--seg-ensemble N``: N - 1 more stages on round 1's labels (seeds S + 3k), round 1's stage ensembled with
    them, scored on val plain, tagged, and tagged with the CRF."""
    import yaml

    seed = int(yaml.safe_load((out / "seg/config.yaml").read_text())["run"]["seed"])
    members = [out / f"seg_m{k}" for k in range(1, args.seg_ensemble)]
    words = [f"data.root={root}", f"data.pseudo_dir={labels}", *seg_set]
    trains = [train(args.seg, [*words, f"run.seed={seed + 3 * k}"], m, runner) for k, m in enumerate(members, 1)]
    seg, n, val = out / "seg", args.seg_ensemble, {}
    for name, crf, tagged in (("miou", False, False), ("tagged", False, True), ("crf_tagged", True, True)):
        pred = predict(seg, args.val_split, runner, crf=crf, tags_from=cls if tagged else None, ensemble=members)
        val[name] = score(pred, root, args.val_split, seg / f"eval_ens{n}_{name}.json", runner)
    return {"members": [str(seg), *map(str, members)], "train": trains, "val": val}


def _step_gains(
    args: argparse.Namespace,
    res: dict[str, Any],
    out: Path,
    cls: Path,
    root: str,
    seg_set: list[str],
    runner: StepRunner,
) -> None:
    """``--steps``: each step's own gain (the CRF, the tags, the swept level against the preset's own) in ``res``."""
    first = res["seg_rounds"][0]
    scored = partial(scored_predictions, root=root, split=args.val_split, runner=runner)
    first["val_crf"] = scored(out / "seg", crf=True)
    first["val_crf_tagged"] = scored(out / "seg", crf=True, tags_from=cls)
    res["tags"] = _tag_scores(cls, root, args.val_split)
    res["floor"] = background_only_floor(root, args.val_split)
    # the same stage on the labels at the preset's own level instead of the sweep's
    own = res["seeds"]["config_level"]
    own_labels = pseudo_labels(
        cls, root, args.refine[0], (own, own), f"pseudo_{args.refine[0]}_own_level", runner=runner
    )
    own_seg = out / "seg_own_level"
    res["own_level"] = {
        "level": own,
        "pseudo": 100 * miou(own_labels.parent / "eval.json"),
        "train": train(args.seg, [f"data.root={root}", f"data.pseudo_dir={own_labels}", *seg_set], own_seg, runner),
        "val": scored(own_seg),
        "val_crf": scored(own_seg, crf=True),
        "val_crf_tagged": scored(own_seg, crf=True, tags_from=cls),
    }
    res["steps"] = {
        "crf": first["val_crf"] - first["val"],
        "tags": first["val_tagged"] - first["val"],
        "tags_after_crf": first["val_crf_tagged"] - first["val_crf"],
        "level": first["val"] - res["own_level"]["val"],
        "level_crf_tagged": first["val_crf_tagged"] - res["own_level"]["val_crf_tagged"],
    }
    if "seg_ensemble" in res:
        res["steps"]["ensemble_crf_tagged"] = res["seg_ensemble"]["val"]["crf_tagged"] - first["val_crf_tagged"]


def _tag_scores(cls: Path, root: str, split: str) -> dict[str, float | None]:
    """The precision and recall in % over (photo, class) pairs of the classifier's tags (``--tags-from``'s)."""
    from wsss.runs.jobs import TAG_THRESHOLD
    from wsss.runs.run import load_run
    from wsss.runs.tag import TagSummary, tag_labels

    run, ds, summary = load_run(cls, device="cpu"), VOCDataset(root, split), TagSummary()
    for i in ds.ids:
        summary.add(tag_labels(run.class_probs(ds.load_image(i)), TAG_THRESHOLD, at_least_one=False), ds.labels(i))
    # a classifier that tags nothing (or photos without labels) has no precision (recall): None, not JSON's NaN
    defined = {"precision": summary.precision, "recall": summary.recall}
    return {**{k: None if math.isnan(v) else 100 * v for k, v in defined.items()}, "photos": summary.with_mask}


def _cam_scales(args: argparse.Namespace) -> tuple[list[str], str]:
    """``--cam-scales`` as the CAM step's word (``infer.cam_scales=[...]``) and as ``wsss cam``'s flag."""
    if not args.cam_scales:
        return [], ""
    scales = [float(v) for v in args.cam_scales.replace(",", " ").split()]  # checked by main
    return [f"infer.cam_scales={json.dumps(scales)}"], f" --scales {args.cam_scales}"


def _parser() -> Any:
    p = script_parser(__doc__)
    arg = p.add_argument
    # fmt: off
    arg("preset", help="the classifier's preset, e.g. configs/cam/real_cpu.yaml")
    p.add_overrides("run.seed=1", what="classifier's training (before --seg-set, --aff-set)")
    p.add_data_root(required=True)  # masks on train and val
    p.add_out(required=True)  # the runs (cls/, seg/) and route.log
    arg("--refine", nargs="+", default=["par", "crf"], help="refiners of the pseudo labels (first: seg)")
    arg("--seg", default="configs/deeplab/real_cpu.yaml", help="the DeepLab preset ('' = no seg stage)")
    arg("--val-split", default="val")
    arg("--seg-rounds", type=int, default=1, help="DeepLab rounds (2: on round 1's predictions)")
    arg("--level", choices=("sweep", "own"), default="sweep",
        help="the DeepLab stage's labels at the level sweep-bkg picks on the train masks, or at the preset's own "
             "(cam.bkg_thre: wsss route's)")
    arg("--abstain", action="store_true",
        help="a DeepLab stage on labels that abstain (wsss pseudo --refine agree at the stage's level), scored as "
             "round 1's")
    arg("--seg-band", action="store_true",
        help="the DeepLab stage on the first refiner's labels at the run's own pair (255 between)")
    arg("--seg-from-classifier", action="store_true",
        help="the DeepLab stage starts from the route's classifier's backbone (model.pretrained=OUT/cls)")
    arg("--seg-ensemble", type=int, default=1, metavar="N",
        help="N DeepLab stages on round 1's labels (seeds S + 3k), scored ensembled (wsss predict --ensemble)")
    arg("--steps", action="store_true",
        help="each step's contribution: the stage's val with --crf and --crf --tags-from, the tags' precision / "
             "recall on val, the stage on the labels at the preset's own level; gains in 'steps'")
    arg("--cam-scales", default="", help="wsss cam --scales, e.g. 1.0,1.5,2.0 (default: the preset's)")
    arg("--affinity", default="configs/affinitynet/real_cpu.yaml", help="the preset of --refine affinity")
    arg("--seg-set", nargs="*", default=[], metavar=OVERRIDES_METAVAR, help="overrides of the DeepLab training")
    arg("--aff-set", nargs="*", default=[], metavar=OVERRIDES_METAVAR,
        help="overrides of the affinity network's training")
    arg("--masks", type=int, nargs="+", default=[], metavar="K",
        help="the masks experiment (docs/own-photos.md#how-many-masks): K masked train photos, the DeepLab stage on "
             "them alone, on the pseudo labels, and on both")
    arg("--mask-weights", type=float, nargs="+", default=[1.0], metavar="W",
        help="data.true_mask_weight values of --masks's arm (c) (default 1)")
    arg("--mask-classifier", action="store_true",
        help="--masks's arm (d): a classifier whose CAMs learn the K masks' pixels too (data.true_masks=auto), its "
             "own level and labels, the DeepLab stage on them with the K masks (weight 1)")
    arg("--fold", default="", metavar="F/N",
        help="hold out fold F of N of the data set's photos as val, train on the rest (a view in OUT/data)")
    arg("--train-photos", type=int, default=None, metavar="K",
        help="train on K of the train photos (of --fold's view, else of the data set's train split; a view in "
             "OUT/data_trainK), val unchanged: the first K of the sorted train ids shuffled by --subset-seed, so "
             "that one seed's K photos hold those of every smaller K")
    arg("--subset-seed", type=int, default=None, metavar="S",
        help="the seed of --train-photos's draw (default: the classifier's run.seed)")
    arg("--variant", nargs="+", action="append", default=[], metavar=("NAME", "WORD"),
        help="a DeepLab stage on round 1's labels with these words after --seg-set's (OUT/seg_NAME), scored as round "
             "1's in variants.NAME, e.g. --variant gce options.seg_loss=gce; repeat for more")
    arg("--ceiling", action="store_true",
        help="the same DeepLab stage (preset, --seg-set, seed) on the train photos' true masks, scored on val plain "
             "and with the CRF ('ceiling')")
    arg("--folds", type=int, default=0, metavar="N",
        help="the route on each of N folds (OUT/foldF), then each figure's mean and range over the folds")
    arg("--gain-over", default="", metavar="JSON",
        help="with --folds: each figure's gain over another --folds run's JSON, fold by fold")
    arg("--reuse", nargs="+", default=[], metavar="JSON",
        help="with --folds: take the finished folds these JSONs hold (of --folds or --fold F/N runs of this command) "
             "instead of running them again (when their folders are gone)")
    arg("--kept-only", action="store_true",
        help="with --reuse: run no fold; the JSON of the folds --reuse gives, from fold 0 to the first it lacks")
    # fmt: on
    p.add_json()
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = _parser()
    args = p.parse_args(argv)
    if args.reuse and not args.folds:
        p.error("--reuse takes the finished folds of a --folds run: pass --folds N")
    if args.level == "own" and args.steps:
        p.error("--steps scores the stage at the preset's own level beside the sweep's: drop --level own")
    if args.train_photos is not None and args.train_photos < 1:
        p.error(f"--train-photos {args.train_photos}: a number of photos, 1 or more")
    if args.subset_seed is not None and args.train_photos is None:
        p.error("--subset-seed draws --train-photos's photos: pass --train-photos K")
    if args.ceiling and (not args.seg or args.masks):
        p.error(
            "--ceiling trains the route's DeepLab stage on the true masks: pass --seg PRESET, without --masks "
            "(which trains its own ceiling)"
        )
    if args.kept_only and not args.reuse:
        p.error("--kept-only gathers the folds of --reuse's JSONs: pass --reuse JSON ...")
    try:
        _cam_scales(args)
    except ValueError:
        p.error(f"--cam-scales {args.cam_scales!r}: numbers like 1.0,1.5,2.0")
    # one experiment per --out: two would run the same stages into the same folders
    with StepRunner(args.out, command="experiments/real_route.py").lock(), _threads():
        res = cross_validate(args, route) if args.folds else route(args)
    print(json.dumps(res, indent=1))
    if args.json:
        write_json(args.json, res)
    return res


@contextlib.contextmanager
def _threads() -> Iterator[None]:
    """The steps' intra-op threads: ``OMP_NUM_THREADS``, one unless set (a training's ``run.threads`` sets its own),
    as the measurements ran them; the process's count given back after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS") or 1)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _as_script() -> int:
    """The exit status: a user error is one ``error:`` line, as a ``wsss`` command says it; SIGTERM stops the step as
    Ctrl-C does (a training saves its ``last.pt``: the same command continues it)."""
    from wsss.core.errors import USER_ERRORS, signal_interrupt

    def on_signal(signum: int, frame: Any) -> None:
        raise signal_interrupt(signum)

    signal.signal(signal.SIGTERM, on_signal)
    try:
        main()
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return int(getattr(e, "exit_code", 1))
    except KeyboardInterrupt as e:
        print("stopped; finished steps are kept, rerun the same command to continue", file=sys.stderr)
        return 128 + (signal.SIGTERM if getattr(e, "signum", None) == signal.SIGTERM else signal.SIGINT)
    return 0


if __name__ == "__main__":
    sys.exit(_as_script())
