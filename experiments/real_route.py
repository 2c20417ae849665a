"""One method's whole route on a real-photo dataset, scored at every step: the figures of a row of BENCHMARKS.md's
ccp-dev table.

The route a user runs is ``wsss route`` (``wsss.pipelines.route``, docs/own-photos.md#what-it-does). This script adds
only what research needs (folds of every photo, arms, seeds, extra scoring) and runs every step of its route by the
package's own step functions and its step runner (``wsss.pipelines.steps``: ``OUT/route.log``, ``OUT/steps.jsonl``,
the lock and the settings record), in this process: a change to a step changes the product's route and this one
alike. Its steps and options: docs/benchmarks/history/real-photos.md#research-runner.

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
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from wsss.cli_common import OVERRIDES_METAVAR, script_parser
from wsss.core.config import SCOPE
from wsss.core.errors import TrainingDiverged
from wsss.data.voc import VOCDataset, read_split
from wsss.pipelines import route as steps  # the route's steps: looked up at each call, the one implementation
from wsss.pipelines.route import MASKED_SPLIT, mixed_stage_words, stage_iterations
from wsss.pipelines.steps import StepRunner, changed_settings, computed_words
from wsss.runs.jobs import predictions_folder

if __package__ in (None, ""):  # run as a script (`python experiments/real_route.py`): its package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.data_views import all_ids, first_masked, fold_split, make_view  # noqa: E402

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]


def _step(runner: StepRunner, command: str, work: Callable[[], T]) -> tuple[T, float]:
    """One step of the route: ``work``, a call of the route's steps (as ``wsss route`` runs them), in this process,
    run by the shared step runner (``wsss.pipelines.steps``): its output in ``OUT/route.log`` after ``$ COMMAND``
    (the ``wsss`` command a user would type for it), its time in ``OUT/steps.jsonl``; its result and wall seconds."""
    return runner.run(command.split()[1], command, work)


def _preset(path: str) -> str:
    """A preset argument: a file from the working folder, else from the repository (``configs/...``: the steps ran as
    ``wsss`` commands in the repository, where the defaults of ``--seg`` and ``--affinity`` name their presets)."""
    if Path(path).is_absolute() or path.startswith(SCOPE) or Path(path).exists():
        return path
    return str(REPO / path) if (REPO / path).exists() else path


def _miou(path: Path) -> float:
    return float(json.loads(path.read_text())["miou"])


def _score(pred: Path, root: str, split: str, scores: Path, runner: StepRunner, *, pseudo: bool = False) -> float:
    """The masks in ``pred`` scored on the split's masks (the route's step ``score``), written into ``scores`` as
    ``wsss eval --json`` writes them; the mIoU in %."""
    from wsss.core.files import atomic_write

    def scored() -> Any:
        result = steps.score(pred, root, split, pseudo=pseudo)
        print(result.format_table())
        return result

    flag = " --pseudo" if pseudo else ""
    result, _ = _step(runner, f"wsss eval {pred} --data-root {root} --split {split}{flag} --json {scores}", scored)
    with atomic_write(scores, "w") as f:
        json.dump(result.to_json(), f, indent=2)
    return 100 * _miou(scores)


def _predict(
    seg: Path, split: str, runner: StepRunner, *, crf: bool = False, tags_from: Path | None = None,
    tag_gate: str = "hard", labelled_only: bool = False, ensemble: list[Path] | None = None,
) -> Path:  # fmt: skip
    """The masks of the split by the run ``seg`` (the route's step ``predict_split``); their folder."""
    flags = [*(["--ensemble", *map(str, ensemble)] if ensemble else []),
             *(["--labelled-only"] if labelled_only else []), *(["--crf"] if crf else []),
             *(["--tags-from", str(tags_from), "--tag-gate", tag_gate] if tags_from is not None else [])]  # fmt: skip
    pred, _ = _step(runner, " ".join(["wsss predict", str(seg), "--split", split, *flags, "--quiet"]),
                    lambda: steps.predict_split(seg, split, crf=crf, tags_from=tags_from, tag_gate=tag_gate,
                                                labelled_only=labelled_only, ensemble=ensemble or (),
                                                progress=False))  # fmt: skip
    return pred


def _cams(cls: Path, words: list[str], shown: str, runner: StepRunner) -> None:
    """The CAMs and seeds of the train split (the route's step ``cams``) with ``words`` (``shown``: as flags)."""
    _step(runner, f"wsss cam {cls} --split train{shown} --quiet",
          lambda: steps.cams(cls, "train", words=words, progress=False))  # fmt: skip


def _train(preset: str, words: list[str], run: Path, runner: StepRunner) -> dict[str, Any]:
    """Train ``preset`` with ``words`` into ``run`` (the route's steps ``run_config``, ``train_run``) unless ``run``
    has its final checkpoint; the seconds per iteration of the training."""
    if not (run / "checkpoints/last.pt").is_file() or not (run / "train_time.json").is_file():

        def trained() -> None:
            # train_run says what the masks teach and checks the data first, as `wsss train` does
            steps.train_run(steps.run_config(_preset(preset), words, run), progress=False)

        _, wall = _step(runner, f"wsss train {preset} {' '.join(words)} run.dir={run} --quiet", trained)
        (run / "train_time.json").write_text(json.dumps({"wall": wall}))
    wall = json.loads((run / "train_time.json").read_text())["wall"]
    # the trainer's log (metrics.jsonl; one per round of SC-CAM): the last step of each is its iterations, and
    # the median of its periods' timing is not moved by a period in which the job was paused or the machine busy
    logs = [[json.loads(line) for line in m.read_text().splitlines() if line.strip()]
            for m in sorted(run.glob("**/metrics.jsonl"))]  # fmt: skip
    iterations = sum(max((r.get("step", 0) for r in rows), default=0) for rows in logs)
    timed = sorted(r["sec_per_iter"] for rows in logs for r in rows if r.get("sec_per_iter") is not None)
    return {"wall": wall, "iterations": iterations, "s_per_iter": wall / max(1, iterations),
            "s_per_iter_median": timed[len(timed) // 2] if timed else None}  # fmt: skip


def route(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cls, root = out / "cls", str(Path(args.data_root).resolve())
    runner = StepRunner(out, command="experiments/real_route.py", transcript=out / "route.log")
    res: dict[str, Any] = {"preset": args.preset, "data_root": root, "settings": _settings(args)}
    runner.record(res["settings"])
    if args.fold:  # the data set's photos split anew: this fold's val held out, the other folds' photos train
        res["fold"] = _fold_view(root, args.fold, out)
        root = res["fold"]["view"]
    res["train"] = _train(args.preset, [f"data.root={root}", *args.overrides], cls, runner)
    scales, shown = _cam_scales(args)
    _cams(cls, scales, shown, runner)
    if args.masks:
        return _masks_experiment(args, res, out, cls, root, runner)
    sweep = cls / "bkg_sweep/train.json"
    _sweep(cls, None, sweep, runner)
    s = json.loads(sweep.read_text())
    level = float(s["best_thre"])
    by_level = dict(zip(s["thresholds"], s["miou"]))
    own = float(s["config_bkg_thre"])
    res["seeds"] = {"level": level, "miou": 100 * float(s["best_miou"]), "config_level": own,
                    "config_miou": 100 * by_level[own] if own in by_level else None}  # fmt: skip
    _cams(cls, [*scales, f"cam.bkg_thre={level:g}"], f"{shown} --bkg-thre {level:g}", runner)
    res["pseudo"] = {}

    pseudo_labels = partial(_pseudo_labels, cls, root, runner=runner)

    for refine in args.refine:
        affinity_run = None
        if refine == "affinity":  # PSA: seeds at the run's own pair, the affinity network, then the walk
            high, low = s["config_pair"]
            seeds = pseudo_labels("psa", (high, low), "pseudo_psa_seeds")
            aff = out / "aff"
            res["affinity"] = {"seed_levels": [high, low], "seeds": 100 * _miou(seeds.parent / "eval.json"),
                               "train": _train(args.affinity, [f"data.root={root}", f"data.pseudo_dir={seeds}",
                                                               *args.aff_set], aff, runner)}  # fmt: skip
            affinity_run = aff
        pseudo = pseudo_labels(refine, (level, level), f"pseudo_{refine}", affinity_run=affinity_run)
        res["pseudo"][refine] = 100 * _miou(pseudo.parent / "eval.json")
    labels = cls / f"pseudo_{args.refine[0]}" / "train"  # the DeepLab stage's
    if args.seg_band:  # the uncertain pixels between the run's two levels left to the stage's ignore index
        high, low = s["config_pair"]
        labels = pseudo_labels(args.refine[0], (high, low), f"pseudo_{args.refine[0]}_band")
        res["pseudo"][f"{args.refine[0]}_band"] = 100 * _miou(labels.parent / "eval.json")
    if args.seg:
        first, seg_set = _seg_stage(args, res, out, cls, root, labels, runner)
        if args.steps:  # each step's own contribution (issue 62), the gains in "steps"
            _step_gains(args, res, first, out, cls, root, seg_set, pseudo_labels, runner)
    return res


def _seg_stage(
    args: argparse.Namespace, res: dict[str, Any], out: Path, cls: Path, root: str, labels: Path, runner: StepRunner
) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    """Step 4-5: the DeepLab stage's rounds on ``labels``, each scored on val (plain, tagged, soft-tagged), and its
    ensemble; round 1's row and the stage's overrides."""
    seg_set = [f"model.pretrained={cls}", *args.seg_set] if args.seg_from_classifier else args.seg_set
    res["seg_rounds"] = []
    for r in range(1, args.seg_rounds + 1):
        seg = out / ("seg" if r == 1 else f"seg_r{r}")
        train = _train(args.seg, [f"data.root={root}", f"data.pseudo_dir={labels}", *seg_set], seg, runner)
        pred = _predict(seg, args.val_split, runner)
        row = {"round": r, "labels": str(labels), "train": train,
               "val": _score(pred, root, args.val_split, seg / "eval.json", runner)}  # fmt: skip
        for gate, suffix in (("hard", "tagged"), ("soft", "tagged_soft")):  # the classifier's tags, both gates
            pred = _predict(seg, args.val_split, runner, tags_from=cls, tag_gate=gate)
            row[f"val_{suffix}"] = _score(pred, root, args.val_split, seg / f"eval_{suffix}.json", runner)
        if r < args.seg_rounds:  # the next round's labels: this round's predictions of the train photos,
            # naming only each photo's labelled classes, with the CRF (on ccp-dev's train, RCA seed 2: 23.15
            # plain, 25.10 labelled only, 25.95 with the CRF, against 22.85 for the PAR labels; BENCHMARKS.md)
            labels = _predict(seg, "train", runner, crf=True, labelled_only=True)
            row["train_predictions"] = _score(labels, root, "train", seg / "eval_train.json", runner, pseudo=True)
        res["seg_rounds"].append(row)
    res["seg_train"] = res["seg_rounds"][0]["train"]
    first = res["seg_rounds"][0]
    res["seg_val"] = {"refine": args.refine[0], "miou": first["val"], "tagged": first["val_tagged"],
                      "tagged_soft": first["val_tagged_soft"]}  # fmt: skip
    if args.seg_ensemble > 1:
        res["seg_ensemble"] = _seg_ensemble(args, out, cls, root, Path(first["labels"]), seg_set, runner)
    return first, seg_set


def _step_gains(
    args: argparse.Namespace, res: dict[str, Any], first: dict[str, Any], out: Path, cls: Path, root: str,
    seg_set: list[str], pseudo_labels: Callable[..., Path], runner: StepRunner,
) -> None:  # fmt: skip
    """``--steps``: each step's own gain (the CRF, the tags, the swept level against the preset's own) in ``res``."""
    scored = partial(_scored_predictions, root=root, split=args.val_split, runner=runner)
    first["val_crf"] = scored(out / "seg", crf=True)
    first["val_crf_tagged"] = scored(out / "seg", crf=True, tags_from=cls)
    res["tags"] = _tag_scores(cls, root, args.val_split)
    res["floor"] = _background_only_floor(root, args.val_split)
    # the same stage on the labels at the preset's own level instead of the sweep's
    own = res["seeds"]["config_level"]
    own_labels = pseudo_labels(args.refine[0], (own, own), f"pseudo_{args.refine[0]}_own_level")
    own_seg = out / "seg_own_level"
    res["own_level"] = {
        "level": own, "pseudo": 100 * _miou(own_labels.parent / "eval.json"),
        "train": _train(args.seg, [f"data.root={root}", f"data.pseudo_dir={own_labels}", *seg_set], own_seg,
                        runner),
        "val": scored(own_seg), "val_crf": scored(own_seg, crf=True),
        "val_crf_tagged": scored(own_seg, crf=True, tags_from=cls),
    }  # fmt: skip
    res["steps"] = {
        "crf": first["val_crf"] - first["val"],
        "tags": first["val_tagged"] - first["val"],
        "tags_after_crf": first["val_crf_tagged"] - first["val_crf"],
        "level": first["val"] - res["own_level"]["val"],
        "level_crf_tagged": first["val_crf_tagged"] - res["own_level"]["val_crf_tagged"],
    }
    if "seg_ensemble" in res:
        res["steps"]["ensemble_crf_tagged"] = res["seg_ensemble"]["val"]["crf_tagged"] - first["val_crf_tagged"]


def _fold_view(root: str, fold_of: str, out: Path) -> dict[str, Any]:
    """``--fold F/N``: the view ``OUT/data`` of the data set ``root`` whose val is fold F of N of its photos (sorted,
    dealt round-robin) and whose train is the others; the fold's entry of the JSON (``view``: the view's root)."""
    fold, folds = (int(x) for x in fold_of.split("/"))
    train_ids, val_ids = fold_split(all_ids(root), fold, folds)
    source = VOCDataset(root, "train")  # has_mask reads the folder, whatever the split
    masked = [i for i in [*train_ids, *val_ids] if source.has_mask(i)]
    view = make_view(root, out / "data", {"train": train_ids, "val": val_ids}, masked)
    return {"fold": fold, "folds": folds, "view": str(view), "val_ids": val_ids}


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """What decides a route's figures besides its photos: the options its JSON records, so that ``--reuse`` can tell
    a finished fold of the same command from one of another."""
    keys = ("preset", "overrides", "refine", "seg", "seg_set", "val_split", "seg_rounds", "seg_band",
            "seg_from_classifier", "seg_ensemble", "steps", "cam_scales", "affinity", "aff_set")  # fmt: skip
    return {k: getattr(args, k) for k in keys}


def _what_is_computed(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` without the overrides of where and how fast the route ran (``pipelines.steps.computed_words``)."""
    return {k: computed_words(v) if k in ("overrides", "seg_set", "aff_set") else v for k, v in settings.items()}


def _pseudo_labels(
    cls: Path, root: str, refine: str, levels: tuple[float, float], name: str, *, affinity_run: Path | None = None,
    runner: StepRunner,
) -> Path:  # fmt: skip
    """The pseudo labels of the train split at ``levels`` (high, low) with ``refine`` (the route's step
    ``pseudo_labels``, ``wsss pseudo CLS --refine REFINE --levels HIGH/LOW``) into ``CLS/NAME/train`` (kept apart:
    the next call writes ``pseudo/train`` afresh), scored on the train masks into ``CLS/NAME/eval.json``."""
    pseudo = cls / name / "train"
    if not (pseudo / ".done").is_file():
        # no --overwrite: pseudo/train holds a stopped earlier try of the same step (a rerun continues it) or of
        # another level or refiner (its settings stamp refuses it: removed, as this step's own output)
        stamp = cls / "pseudo/train"
        if stamp.exists() and (cls / "pseudo/.step").is_file() and (cls / "pseudo/.step").read_text() != name:
            shutil.rmtree(stamp)
        (cls / "pseudo").mkdir(exist_ok=True)
        (cls / "pseudo/.step").write_text(name)
        high, low = levels
        given = {"affinity_run": str(affinity_run)} if affinity_run is not None else {}
        extra = f" --affinity-run {affinity_run}" if affinity_run is not None else ""
        _step(runner, f"wsss pseudo {cls} --split train --refine {refine} --levels {high:g}/{low:g}{extra} --quiet",
              lambda: steps.pseudo_labels(cls, "train", levels, refine=refine, progress=False, **given))  # fmt: skip
        if pseudo.exists():  # a try stopped between the rename and the mark: replaced by this complete one
            shutil.rmtree(pseudo)
        pseudo.parent.mkdir(parents=True, exist_ok=True)
        (cls / "pseudo/train").rename(pseudo)
        (pseudo / ".done").touch()
    scores = pseudo.parent / "eval.json"
    if not scores.is_file():
        _score(pseudo, root, "train", scores, runner, pseudo=True)
    return pseudo


def _scored_predictions(
    seg: Path, *, crf: bool = False, tags_from: Path | None = None, root: str, split: str, runner: StepRunner
) -> float:  # fmt: skip
    """The split's masks by ``seg`` (with the CRF, named by the tags of ``tags_from``) and their mIoU in % (reused
    when scored before)."""
    folder = predictions_folder(crf=crf, tag_gate="hard" if tags_from is not None else None)
    scores = seg / f"eval_{folder}.json"
    if not scores.is_file():
        pred = _predict(seg, split, runner, crf=crf, tags_from=tags_from)
        _score(pred, root, split, scores, runner)
    return 100 * _miou(scores)


def _cam_scales(args: argparse.Namespace) -> tuple[list[str], str]:
    """``--cam-scales`` as the CAM step's word (``infer.cam_scales=[...]``) and as ``wsss cam``'s flag."""
    if not args.cam_scales:
        return [], ""
    scales = [float(v) for v in args.cam_scales.replace(",", " ").split()]  # checked by main
    return [f"infer.cam_scales={json.dumps(scales)}"], f" --scales {args.cam_scales}"


def _sweep(cls: Path, view: str | None, sweep: Path, runner: StepRunner) -> None:
    """``wsss sweep-bkg CLS --split train [--data-root VIEW] --json SWEEP``: the seeds scored at each background
    level on the train masks (of ``view``: a few of them), the best level in ``SWEEP``."""
    from wsss.evaluation.bkg_sweep import sweep_run_bkg

    root = f" --data-root {view}" if view is not None else ""
    _step(runner, f"wsss sweep-bkg {cls} --split train{root} --json {sweep} --quiet",
          lambda: sweep_run_bkg(cls, "train", data_root=view, json_path=sweep))  # fmt: skip


def _tag_scores(cls: Path, root: str, split: str) -> dict[str, float | None]:
    """The classifier's tags of the split's photos (those of ``wsss predict --tags-from``) against their image
    labels: precision and recall over (photo, class) pairs, in %."""
    from wsss.runs.jobs import TAG_THRESHOLD
    from wsss.runs.run import load_run
    from wsss.runs.tag import TagSummary, tag_labels

    run, ds, summary = load_run(cls, device="cpu"), VOCDataset(root, split), TagSummary()
    for i in ds.ids:
        summary.add(tag_labels(run.class_probs(ds.load_image(i)), TAG_THRESHOLD, at_least_one=False), ds.labels(i))
    # a classifier that tags nothing (or photos without labels) has no precision (recall): None, not JSON's NaN
    defined = {"precision": summary.precision, "recall": summary.recall}
    return {**{k: None if math.isnan(v) else 100 * v for k, v in defined.items()}, "photos": summary.with_mask}


def _background_only_floor(root: str, split: str) -> float:
    """The mIoU that masks of background alone score on the split's masks, in % (``miou_background_only`` of
    ``wsss eval``: a route's masks below it say less than none)."""
    import numpy as np

    from wsss.evaluation.metrics import confusion_matrix, scores_from_hist

    ds = VOCDataset(root, split)
    hist = sum(confusion_matrix(m, np.zeros_like(m), ds.num_classes) for m in map(ds.load_mask, ds.ids))
    return 100 * scores_from_hist(hist)["miou_background_only"]


def _masks_experiment(
    args: argparse.Namespace, res: dict[str, Any], out: Path, cls: Path, root: str, runner: StepRunner
) -> dict[str, Any]:
    """``--masks K ...`` (issue 61, docs/own-photos.md#how-many-masks): for each K, a view of the data set in which
    only the first K masked train photos keep their mask (``OUT/masks_K``), and the DeepLab stage (a) on those K
    masks alone for as many iterations as the others (``OUT/seg_a_mK``), (b) on the pseudo labels at the level the
    sweep picks on the K masks (``OUT/seg_b_L<level>``, shared by the K that pick one level), (c) on those pseudo
    labels with the K masks in their place, at each ``--mask-weights`` value (``OUT/seg_c_mK_wW``); and once the
    ceiling, the stage on every train mask (``OUT/seg_ceiling``). Each scored on val plain, and at the inference
    its user would run: (a), with no classifier, with the CRF (``val_crf``); (b) and (c) with the CRF and named by
    the route's classifier (``--crf --tags-from OUT/cls``, the manual's, ``val_crf_tagged``); the ceiling both.
    The JSON is rewritten after each stage (a stopped run keeps what it finished). A stage whose training diverges
    (the trainer's non-finite loss) is an outcome: its entry says so (``diverged``) and the next stage goes on."""
    iters = stage_iterations(_preset(args.seg), root, args.seg_set)  # as the package's route counts them (wsss route)
    train_ids = read_split(root, "train")
    val_ids = read_split(root, "val")
    val_set = VOCDataset(root, "val")
    exp: dict[str, Any] = res.setdefault("masks", {"order": "the train split's order, masked photos only",
                                                    "stage_iterations": iters, "weights": args.mask_weights,
                                                    "arms": {}})  # fmt: skip
    arms = exp["arms"]

    def save() -> None:
        if args.json:
            _write_json(args.json, res)

    def stage(name: str, words: list[str], crf: bool, tagged: bool, tagger: Path = cls) -> dict[str, Any]:
        """Train the stage ``OUT/name`` with ``words``; its val mIoU plain, with ``crf`` the CRF's, with ``tagged``
        the manual's (``--crf --tags-from TAGGER``, the route's classifier unless another is named)."""
        seg = out / name
        try:
            row: dict[str, Any] = {"train": _train(args.seg, words, seg, runner)}
        except TrainingDiverged as e:  # a stage that diverged is a result (the arm's table says so); a bug still stops
            return {"diverged": str(e), "run_dir": str(seg)}
        for key, on, extra in (("val", True, {}), ("val_crf", crf, {"crf": True}),
                               ("val_crf_tagged", tagged, {"crf": True, "tags_from": tagger})):  # fmt: skip
            if on:
                row[key] = _scored_predictions(seg, root=root, split="val", runner=runner, **extra)
        return row

    seg_words = [f"data.root={root}", *args.seg_set]  # the stage's on the whole data set, before an arm's own
    arms["ceiling"] = stage("seg_ceiling", [*seg_words, "data.true_masks=auto"], crf=True, tagged=True)
    save()
    for k in args.masks:
        ids = first_masked(root, train_ids, k)
        masked_val = [i for i in val_ids if val_set.has_mask(i)]
        view = str(make_view(root, out / f"masks_{k}", {"train": train_ids, "val": val_ids, MASKED_SPLIT: ids},
                             [*ids, *masked_val]))  # fmt: skip
        level, pseudo = _labels_at_swept_level(cls, root, view, k, runner)
        row: dict[str, Any] = {"ids": ids, "level": level, "pseudo_all_masks": 100 * _miou(pseudo.parent / "eval.json")}
        arms[str(k)] = row
        row["b"] = stage(f"seg_b_L{level:g}", [*seg_words, f"data.pseudo_dir={pseudo}"], crf=False, tagged=True)
        save()
        for w in args.mask_weights:  # wsss route's mixed stage, weighted
            mixed = steps.stage_words([*seg_words, *mixed_stage_words(pseudo), f"data.true_mask_weight={w:g}"],
                                      "mixed", view=view)  # fmt: skip
            row[f"c_w{w:g}"] = stage(f"seg_c_m{k}_w{w:g}", mixed, crf=False, tagged=True)
            save()
        alone = steps.stage_words(seg_words, "masks", view=view, iterations=iters)  # wsss route's masks alone
        row["a"] = stage(f"seg_a_m{k}", alone, crf=True, tagged=False)
        save()
        if args.mask_classifier:  # (d): the classifier's CAMs learn the K masks' pixels too (Method.mask_term)
            cls_k = out / f"cls_m{k}"
            trained = _train(args.preset, [f"data.root={view}", *args.overrides, "data.true_masks=auto"], cls_k, runner)
            _cams(cls_k, [], "", runner)  # as the route's classifier's
            level_k, pseudo_k = _labels_at_swept_level(cls_k, root, view, k, runner)
            mixed = steps.stage_words([*seg_words, *mixed_stage_words(pseudo_k), "data.true_mask_weight=1"], "mixed",
                                      view=view)  # fmt: skip
            row["d"] = {"classifier": trained, "level": level_k, "pseudo_all_masks":
                        100 * _miou(pseudo_k.parent / "eval.json"),
                        **stage(f"seg_d_m{k}", mixed, crf=False, tagged=True, tagger=cls_k)}  # fmt: skip
            save()
    return res


def _labels_at_swept_level(cls: Path, root: str, view: str, k: int, runner: StepRunner) -> tuple[float, Path]:
    """The level ``wsss sweep-bkg`` picks on the K masks of ``view`` and the PAR labels of the train split at it
    (the seeds at the level first, as the route does), scored on every train mask of ``root``: a diagnostic the
    user could not run."""
    sweep = cls / "bkg_sweep" / f"train_masks_{k}.json"
    if not sweep.is_file():
        _sweep(cls, view, sweep, runner)
    level = float(json.loads(sweep.read_text())["best_thre"])
    name = f"pseudo_par_L{level:g}"
    if not (cls / name / "train/.done").is_file():
        _cams(cls, [f"cam.bkg_thre={level:g}"], f" --bkg-thre {level:g}", runner)
    return level, _pseudo_labels(cls, root, "par", (level, level), name, runner=runner)


def _write_json(path: str, res: dict[str, Any]) -> None:
    from wsss.core.files import atomic_write

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(Path(path), "w") as f:
        f.write(json.dumps(res, indent=1) + "\n")


def _seg_ensemble(
    args: argparse.Namespace, out: Path, cls: Path, root: str, labels: Path, seg_set: list[str], runner: StepRunner
) -> dict[str, Any]:
    """``--seg-ensemble N``: N - 1 more trainings of round 1's stage on its labels (seeds S + 3k), and round 1's
    stage ensembled with them, scored on val plain, tagged, and tagged with the CRF."""
    import yaml

    seed = int(yaml.safe_load((out / "seg/config.yaml").read_text())["run"]["seed"])
    members = [out / f"seg_m{k}" for k in range(1, args.seg_ensemble)]
    trains = [
        _train(
            args.seg,
            [f"data.root={root}", f"data.pseudo_dir={labels}", *seg_set, f"run.seed={seed + 3 * k}"],
            m,
            runner,
        )  # fmt: skip
        for k, m in enumerate(members, start=1)
    ]
    seg, n, val = out / "seg", args.seg_ensemble, {}
    for name, crf, tagged in (("miou", False, False), ("tagged", False, True), ("crf_tagged", True, True)):
        pred = _predict(seg, args.val_split, runner, crf=crf, tags_from=cls if tagged else None, ensemble=members)
        val[name] = _score(pred, root, args.val_split, seg / f"eval_ens{n}_{name}.json", runner)
    return {"members": [str(seg), *map(str, members)], "train": trains, "val": val}


def _parser() -> Any:
    p = script_parser(__doc__)
    p.add_argument("preset", help="the classifier's preset, e.g. configs/cam/real_cpu.yaml")
    p.add_overrides("run.seed=1", what="classifier's training (before --seg-set, --aff-set)")
    p.add_data_root(required=True)  # masks on train and val
    p.add_out(required=True)  # the runs (cls/, seg/) and route.log
    p.add_argument("--refine", nargs="+", default=["par", "crf"], help="refiners of the pseudo labels (first: seg)")
    p.add_argument("--seg", default="configs/deeplab/real_cpu.yaml", help="the DeepLab preset ('' = no seg stage)")
    p.add_argument("--val-split", default="val")
    p.add_argument("--seg-rounds", type=int, default=1, help="DeepLab rounds (2: on round 1's predictions)")
    # fmt: off
    p.add_argument("--seg-band", action="store_true",
                   help="the DeepLab stage on the first refiner's labels at the run's own pair (255 between)")
    p.add_argument("--seg-from-classifier", action="store_true",
                   help="the DeepLab stage starts from the route's classifier's backbone (model.pretrained=OUT/cls)")
    # fmt: on
    p.add_argument(
        "--seg-ensemble",
        type=int,
        default=1,
        metavar="N",
        help="N DeepLab stages on round 1's labels (seeds S + 3k), scored ensembled (wsss predict --ensemble)",
    )  # fmt: skip
    p.add_argument(
        "--steps", action="store_true",
        help="each step's contribution (issue 62): the stage's val with --crf and --crf --tags-from, the tags' "
             "precision / recall on val, the stage on the labels at the preset's own level; gains in 'steps'",
    )  # fmt: skip
    p.add_argument("--cam-scales", default="", help="wsss cam --scales, e.g. 1.0,1.5,2.0 (default: the preset's)")
    p.add_argument("--affinity", default="configs/affinitynet/real_cpu.yaml", help="the preset of --refine affinity")
    p.add_argument(
        "--seg-set", nargs="*", default=[], metavar=OVERRIDES_METAVAR, help="overrides of the DeepLab training"
    )
    p.add_argument("--aff-set", nargs="*", default=[], metavar=OVERRIDES_METAVAR,
                   help="overrides of the affinity network's training")  # fmt: skip
    p.add_argument(
        "--masks", type=int, nargs="+", default=[], metavar="K",
        help="the masks experiment (issue 61): K masked train photos, the DeepLab stage on them alone, on the pseudo "
             "labels, and on both",
    )  # fmt: skip
    p.add_argument("--mask-weights", type=float, nargs="+", default=[1.0], metavar="W",
                   help="data.true_mask_weight values of --masks's arm (c) (default 1)")  # fmt: skip
    p.add_argument(
        "--mask-classifier", action="store_true",
        help="--masks's arm (d): a classifier whose CAMs learn the K masks' pixels too (data.true_masks=auto), its "
             "own level and labels, the DeepLab stage on them with the K masks (weight 1)",
    )  # fmt: skip
    # fmt: off
    p.add_argument("--fold", default="", metavar="F/N",
                   help="hold out fold F of N of the data set's photos as val, train on the rest (a view in OUT/data)")
    p.add_argument("--folds", type=int, default=0, metavar="N",
                   help="the route on each of N folds (OUT/foldF), then each figure's mean and range over the folds")
    p.add_argument("--gain-over", default="", metavar="JSON",
                   help="with --folds: each figure's gain over another --folds run's JSON, fold by fold")
    # fmt: on
    p.add_argument(
        "--reuse",
        nargs="+",
        default=[],
        metavar="JSON",
        help="with --folds: take the finished folds these JSONs hold (of --folds or --fold F/N runs of this command) "
        "instead of running them again (when their folders are gone)",
    )  # fmt: skip
    p.add_argument(
        "--kept-only", action="store_true",
        help="with --reuse: run no fold; the JSON of the folds --reuse gives, from fold 0 to the first it lacks",
    )  # fmt: skip
    p.add_json()
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = _parser()
    args = p.parse_args(argv)
    if args.reuse and not args.folds:
        p.error("--reuse takes the finished folds of a --folds run: pass --folds N")
    if args.kept_only and not args.reuse:
        p.error("--kept-only gathers the folds of --reuse's JSONs: pass --reuse JSON ...")
    try:
        _cam_scales(args)
    except ValueError:
        p.error(f"--cam-scales {args.cam_scales!r}: numbers like 1.0,1.5,2.0")
    # one experiment per --out: two would run the same stages into the same folders (their steps refuse a run in
    # training, not a folder another step is about to use)
    with StepRunner(args.out, command="experiments/real_route.py").lock(), _threads():
        res = cross_validate(args) if args.folds else route(args)
    print(json.dumps(res, indent=1))
    if args.json:
        _write_json(args.json, res)
    return res


@contextlib.contextmanager
def _threads() -> Iterator[None]:
    """The steps' intra-op threads: ``OMP_NUM_THREADS``, one unless set (a training's ``run.threads`` sets its own),
    as this script's measurements ran them; the process's count given back after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS") or 1)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cross_validate(args: argparse.Namespace) -> dict[str, Any]:
    """``--folds N`` (issue 62): the route on every fold (``--fold F/N`` into ``OUT/foldF``), and of every figure
    of the folds' results its mean, range and standard deviation over the folds (``summary``)."""
    if args.fold:
        raise SystemExit("--folds runs every fold; --fold F/N runs one: pass one of them")
    other = _gain_over_folds(args) if args.gain_over else []  # checked before hours of training, not after
    kept = _reusable_folds(args)  # likewise
    runs = []
    for fold in range(args.folds):
        if args.kept_only and fold not in kept:  # the finished folds gathered, the first missing one ends them
            print(f"fold {fold}/{args.folds}: in none of --reuse's JSONs; --kept-only: not run, nor any after it",
                  file=sys.stderr)  # fmt: skip
            break
        one = argparse.Namespace(**{**vars(args), **_fold_overrides(args, fold)})
        runs.append(_kept_fold(one, *kept[fold]) if fold in kept else route(one))
        if args.json:  # what the finished folds measured, kept if a later fold is stopped
            _write_json(args.json, {"folds": runs, "summary": summarise(runs)})
    res: dict[str, Any] = {"folds": runs, "summary": summarise(runs)}
    if args.gain_over:  # a choice's gain fold by fold: this route's figures minus the other's, on the same folds
        other = _gain_over_folds(args)  # read again: the other run may have finished more folds meanwhile
        res["gain_over"] = {"other": str(args.gain_over), "summary": summarise(
            [_difference(a, b) for a, b in zip(runs, other)])}  # fmt: skip
        if len(other) < len(runs):  # the gains cover the folds both have run; the rule needs them all
            res["gain_over"]["folds"] = len(other)
            print(f"warning: {args.gain_over} has {len(other)} of {len(runs)} folds: the gains are over those; rerun "
                  "this command when it has all (its finished stages are reused)", file=sys.stderr)  # fmt: skip
    return res


def _reusable_folds(args: argparse.Namespace) -> dict[int, tuple[dict[str, Any], Path]]:
    """The finished folds of ``--reuse``'s JSONs (of ``--folds`` runs or of ``--fold F/N`` runs), by fold index, each
    checked to be this command's: the same photos in the fold's val, the same settings (the fold's ``run.seed``
    included), every figure this command measures. SystemExit naming the file otherwise."""
    kept: dict[int, tuple[dict[str, Any], Path]] = {}
    if not args.reuse:
        return kept
    mine = _val_ids_of_folds(args)
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
            ours = _settings(argparse.Namespace(**{**vars(args), **_fold_overrides(args, fold)}))
            theirs = entry.get("settings")
            if theirs is None:  # a JSON from before the settings were recorded: its figures must all be there
                missing = [k for k, on in (("steps", args.steps), ("seg_ensemble", args.seg_ensemble > 1)) if on]
                if entry.get("preset") != args.preset or any(k not in entry for k in missing):
                    raise SystemExit(f"{path}: fold {fold} is of another preset or lacks {missing}: not this run's")
                print(f"warning: {path}: fold {fold} records no settings (a JSON from before they were): taken as "
                      "this command's on your word (--reuse)", file=sys.stderr)  # fmt: skip
            elif other := changed_settings(_what_is_computed(theirs), _what_is_computed(ours)):
                raise SystemExit(f"{path}: fold {fold} was run with other settings ({', '.join(other)})")
            kept[fold] = entry, path
    return kept


def _read_json(path: Path) -> Any:
    """Another run's JSON (``--reuse``, ``--gain-over``); SystemExit naming the file when it cannot be read or is no
    JSON, each said as what it is (a path mistyped is not a JSON of another kind)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise SystemExit(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        return json.loads(text)
    except ValueError as e:
        raise SystemExit(f"{path}: not JSON ({e})") from None


def _val_ids_of_folds(args: argparse.Namespace) -> list[list[str]]:
    """The val photos of each of ``--folds``'s folds of ``--data-root``: what another run's folds must hold to be
    this run's (``--gain-over``, ``--reuse``)."""
    ids = all_ids(str(Path(args.data_root).resolve()))
    return [fold_split(ids, f, args.folds)[1] for f in range(args.folds)]


def _fold_overrides(args: argparse.Namespace, fold: int) -> dict[str, Any]:
    """The options of the ``--fold F/N`` route that ``--folds`` runs as fold ``fold`` (the fold's index is its seed,
    unless the command sets ``run.seed``: the folds' spread holds both noises)."""
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
    """A finished fold taken from ``--reuse``'s ``path`` instead of run again; ``floor`` added where the entry is
    from before it was measured (``--steps``: the view of the fold's val photos is all it needs)."""
    print(f"fold {one.fold}: taken from {path} (not run again)", file=sys.stderr)
    entry = {**entry, "reused_from": str(path)}
    if one.steps and "floor" not in entry:
        view = _fold_view(str(Path(one.data_root).resolve()), one.fold, Path(one.out).resolve())["view"]
        entry["floor"] = _background_only_floor(view, one.val_split)
    return entry


def _gain_over_folds(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The folds of ``--gain-over``'s JSON, checked to be this run's (the same photos in each fold's val) for those it
    has run: SystemExit naming the file otherwise."""
    path = Path(args.gain_over)
    try:
        other = _read_json(path)["folds"]
    except (KeyError, TypeError) as e:
        raise SystemExit(f"{path}: not the JSON of a --folds run ({e!r})") from None
    mine = _val_ids_of_folds(args)
    if len(other) > args.folds or [r["fold"]["val_ids"] for r in other] != mine[: len(other)]:
        raise SystemExit(f"{path}: its folds are not this run's (another data set or --folds)")
    return other


_NOT_COMPARED = object()  # a key path where the two runs do not both hold a number (a name, a flag, a list's length)


def _difference(a: Any, b: Any) -> Any:
    """``a - b`` at every number both hold at one key path (the rest left out); None where one of them is undefined
    (None: e.g. the precision of a classifier that tagged nothing)."""
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


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every number that all ``runs`` hold at one key path (``a.b.0.c``): its mean, min, max and standard deviation
    over the runs (n - 1 in the denominator; 0 for one run), and the values. A run whose value there is undefined
    (None, or NaN: e.g. the tags' precision of a classifier that tagged nothing) shows None among the values, and
    the figures are over the ``n`` runs that have one; a path undefined in every run is left out."""
    import statistics

    def leaves(obj: Any, prefix: str = "") -> dict[str, float | None]:
        if isinstance(obj, bool):
            return {}
        if obj is None or isinstance(obj, (int, float)):
            return {prefix: float(obj) if obj is not None and math.isfinite(obj) else None}
        items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
        return {k: v for key, val in items for k, v in leaves(val, f"{prefix}.{key}" if prefix else str(key)).items()}

    flat = [leaves(r) for r in runs]
    keys = [k for k in flat[0] if all(k in f for f in flat[1:])] if flat else []
    out = {}
    for k in keys:
        values = [f[k] for f in flat]
        defined = [v for v in values if v is not None]
        if not defined:
            continue
        out[k] = {"mean": statistics.fmean(defined), "min": min(defined), "max": max(defined),
                  "sd": statistics.stdev(defined) if len(defined) > 1 else 0.0, "values": values,
                  "n": len(defined)}  # fmt: skip
    return out


def _as_script() -> int:
    """The script's exit status: a user error (bad data, a bad option word) is one ``error:`` line, as a ``wsss``
    command says it; SIGTERM (``timeout``, a machine's end) stops the step as Ctrl-C does (a training saves its
    ``last.pt``: the same command continues it)."""
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
