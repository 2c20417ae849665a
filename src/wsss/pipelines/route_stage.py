"""The route's DeepLab stage (:mod:`wsss.pipelines.route`): how it trains (:func:`stage_choice`: given, chosen by
folds over the masked train photos, or the weak labels with the masks in their place), the folds that choose
(:func:`choose_stage`, the step ``choice``) and its training (:func:`train_stage`). ``route``: the
``wsss.pipelines.route.Route`` whose stage it is (which imports this module)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wsss.core.config import Config
from wsss.core.errors import UsageError
from wsss.core.files import atomic_write
from wsss.pipelines import route_calls
from wsss.pipelines.route_calls import MASKED_SPLIT
from wsss.pipelines.route_values import FEW_MASKS, STAGE_FILE, Choice, DataFacts, RouteOptions


def stage_choice(opts: RouteOptions, facts: DataFacts, configs: Mapping[str, Config]) -> Choice:
    """How the DeepLab stage trains: given, or chosen by folds over the masked train photos where there are
    enough of them, else the weak labels with the masks in their place."""
    masked, folds = len(facts.masked_train), opts.folds
    if opts.stage != "auto":
        return Choice(opts.stage, "given")
    if not masked:
        return Choice("mixed", "no train photo has a mask: the stage on the pseudo labels")
    if masked == len(facts.train):
        return Choice("mixed", "every train photo has a mask: the stage trains on the masks alone either way")
    if folds == 0:
        return Choice("mixed", f"--folds 0: the weak labels with the {masked} masks in their place, {FEW_MASKS}")
    if folds > masked:  # a fold would hold no photo: refused before any training
        raise UsageError(
            f"--folds {folds}: more folds than the {masked} masked train photos (each fold holds some "
            f"of them out); give --folds {masked} or fewer, or --folds 0 (no choice: the mixed stage)"
        )
    batch = configs["seg"].train.batch_size
    if masked - -(-masked // folds) < batch:  # a fold's masks alone fill no batch of the stage's training
        return Choice(
            "mixed",
            f"{masked} masked train photos, too few to train the stage on the masks alone in "
            f"{folds} folds (batches of {batch}): the weak labels with the masks in their "
            f"place, {FEW_MASKS}",
        )
    return Choice(
        "folds",
        f"{masked} masked train photos: both stages (the weak labels with the masks in their "
        f"place; the masks alone) scored by {folds} folds of them, the better kept (on ccp-dev "
        "the first won with few masks, the second with many: "
        "docs/own-photos.md#how-many-masks)",
    )


def choose_stage(route: Any, root: Path, seg_words: list[str], where: Path) -> None:
    """Each of ``folds`` folds of the masked train photos held out in turn: both stages trained on the rest (the
    held photos out of train), their ``predict --crf`` scored on the held photos; the stage of the better mean
    kept (a tie: the mixed one)."""
    from wsss.data.views import fold_split, make_view

    facts, folds = route._facts(), route.opts.folds
    scores: dict[str, list[float]] = {"mixed": [], "masks": []}
    for f in range(folds):
        rest, held = fold_split(facts.masked_train, f, folds)
        view = make_view(
            root,
            where / f"fold{f}" / "data",
            {"train": [i for i in facts.train if i not in set(held)], MASKED_SPLIT: rest, "val": held},
            facts.masked_train,
        )
        for stage in scores:
            run_dir = where / f"fold{f}" / stage
            record = run_dir / "fold_score.json"
            if not record.is_file():
                route._train(route._stage_config(root, seg_words, run_dir, stage, view))
                pred = route._predict_split(run_dir, "val", view)
                miou = 100 * route_calls.miou(pred, view, "val")
                with atomic_write(record, "w") as fh:
                    fh.write(json.dumps({"miou": miou, "held": held}) + "\n")
            scores[stage].append(float(json.loads(record.read_text())["miou"]))
        route.say(
            f"  fold {f + 1}/{folds} ({len(held)} held photos): mixed {scores['mixed'][-1]:.2f}, masks alone "
            f"{scores['masks'][-1]:.2f}"
        )
    means = {k: statistics.fmean(v) for k, v in scores.items()}
    best = "masks" if means["masks"] > means["mixed"] else "mixed"
    route.scores["folds"] = {k: {"mean": means[k], "folds": v} for k, v in scores.items()}
    names = {"mixed": "the weak labels with the masks in their place", "masks": "the masks alone"}
    chosen = Choice(
        best,
        f"{names[best]}: val mIoU with --crf over {folds} folds of the masked train photos, "
        f"mixed {means['mixed']:.2f}, masks alone {means['masks']:.2f}",
    )
    with atomic_write(where / STAGE_FILE, "w") as fh:  # the step's output, which the stage's training reads
        fh.write(json.dumps({"stage": chosen.value, "reason": chosen.reason}) + "\n")
    route.measured["stage"] = chosen
    route.say(f"route: stage: {best} ({chosen.reason})")


def train_stage(route: Any, root: Path, seg_words: list[str], seg_dir: Path) -> None:
    from wsss.data.views import make_view

    stage = route._stage()
    view = None
    if stage == "masks":  # a view whose train_masked split lists the masked train photos
        facts = route._facts()
        splits = {
            "train": facts.train,
            MASKED_SPLIT: facts.masked_train,
            **({"val": facts.val} if facts.val else {}),
        }
        view = make_view(root, route.out.resolve() / "seg_data", splits, [*facts.masked_train, *facts.masked_val])
        route.say(
            f"  the stage on the {len(facts.masked_train)} masked train photos alone (split {MASKED_SPLIT} of "
            f"{view}), {route.seg_iters} iterations as the mixed stage's"
        )
    route.stage_root = view or root
    route._train(route._stage_config(root, seg_words, seg_dir, stage, view))
