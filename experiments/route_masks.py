"""experiments/real_route.py's masks experiment, ``--masks K ...`` (docs/own-photos.md#how-many-masks): how much a
few masks are worth beside the weak route. Its arms: docs/benchmarks/history/real-photos.md#research-runner."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from experiments.data_views import first_masked, make_view
from experiments.route_steps import cams, miou, preset_path, pseudo_labels, scored_predictions, sweep, train, write_json
from wsss.core.errors import TrainingDiverged
from wsss.data.voc import VOCDataset, read_split
from wsss.pipelines import route_calls as steps
from wsss.pipelines.route_calls import MASKED_SPLIT, mixed_stage_words, stage_iterations
from wsss.pipelines.steps import StepRunner


def masks_experiment(
    args: argparse.Namespace, res: dict[str, Any], out: Path, cls: Path, root: str, runner: StepRunner
) -> dict[str, Any]:
    """For each K, a view in which only the first K masked train photos keep their mask, and the DeepLab stage (a) on
    them alone, (b) on the pseudo labels at the level swept on them, (c) on both at each ``--mask-weights``, (d) with
    ``--mask-classifier`` on a classifier that learnt them too; once the ceiling (every train mask). The JSON is
    rewritten after each stage; a stage that diverges is an outcome (``diverged``), the next goes on."""
    iters = stage_iterations(preset_path(args.seg), root, args.seg_set)  # as wsss route counts them
    train_ids, val_ids = read_split(root, "train"), read_split(root, "val")
    masked_val = [i for i in val_ids if VOCDataset(root, "val").has_mask(i)]
    exp: dict[str, Any] = res.setdefault(
        "masks",
        {
            "order": "the train split's order, masked photos only",
            "stage_iterations": iters,
            "weights": args.mask_weights,
            "arms": {},
        },
    )
    arms = exp["arms"]

    def stage(name: str, words: list[str], crf: bool, tagged: bool, tagger: Path = cls) -> dict[str, Any]:
        """The stage ``OUT/name``, its val mIoU plain, with ``crf`` the CRF's, with ``tagged`` the manual's
        (``--crf --tags-from TAGGER``)."""
        seg = out / name
        try:
            row: dict[str, Any] = {"train": train(args.seg, words, seg, runner)}
        except TrainingDiverged as e:  # a stage that diverged is a result (the arm's table says so); a bug still stops
            row = {"diverged": str(e), "run_dir": str(seg)}
        else:
            for key, on, extra in (
                ("val", True, {}),
                ("val_crf", crf, {"crf": True}),
                ("val_crf_tagged", tagged, {"crf": True, "tags_from": tagger}),
            ):
                if on:
                    row[key] = scored_predictions(seg, root=root, split="val", runner=runner, **extra)
        return row

    def save() -> None:
        if args.json:
            write_json(args.json, res)

    seg_words = [f"data.root={root}", *args.seg_set]  # the stage's on the whole data set, before an arm's own
    arms["ceiling"] = stage("seg_ceiling", [*seg_words, "data.true_masks=auto"], crf=True, tagged=True)
    save()
    for k in args.masks:
        ids = first_masked(root, train_ids, k)
        splits = {"train": train_ids, "val": val_ids, MASKED_SPLIT: ids}
        view = str(make_view(root, out / f"masks_{k}", splits, [*ids, *masked_val]))
        level, pseudo = _labels_at_swept_level(cls, root, view, k, runner)
        row: dict[str, Any] = {"ids": ids, "level": level, "pseudo_all_masks": 100 * miou(pseudo.parent / "eval.json")}
        arms[str(k)] = row
        row["b"] = stage(f"seg_b_L{level:g}", [*seg_words, f"data.pseudo_dir={pseudo}"], crf=False, tagged=True)
        save()
        for w in args.mask_weights:  # wsss route's mixed stage, weighted
            mixed = steps.stage_words(
                [*seg_words, *mixed_stage_words(pseudo), f"data.true_mask_weight={w:g}"], "mixed", view=view
            )
            row[f"c_w{w:g}"] = stage(f"seg_c_m{k}_w{w:g}", mixed, crf=False, tagged=True)
            save()
        alone = steps.stage_words(seg_words, "masks", view=view, iterations=iters)  # wsss route's masks alone
        row["a"] = stage(f"seg_a_m{k}", alone, crf=True, tagged=False)
        save()
        if args.mask_classifier:  # (d): the classifier's CAMs learn the K masks' pixels too (Method.mask_term)
            cls_k = out / f"cls_m{k}"
            trained = train(args.preset, [f"data.root={view}", *args.overrides, "data.true_masks=auto"], cls_k, runner)
            cams(cls_k, [], "", runner)  # as the route's classifier's
            level_k, pseudo_k = _labels_at_swept_level(cls_k, root, view, k, runner)
            mixed = steps.stage_words(
                [*seg_words, *mixed_stage_words(pseudo_k), "data.true_mask_weight=1"], "mixed", view=view
            )
            row["d"] = {
                "classifier": trained,
                "level": level_k,
                "pseudo_all_masks": 100 * miou(pseudo_k.parent / "eval.json"),
                **stage(f"seg_d_m{k}", mixed, crf=False, tagged=True, tagger=cls_k),
            }
            save()
    return res


def _labels_at_swept_level(cls: Path, root: str, view: str, k: int, runner: StepRunner) -> tuple[float, Path]:
    """The level ``wsss sweep-bkg`` picks on the K masks of ``view`` and the PAR labels of the train split at it,
    scored on every train mask of ``root`` (a diagnostic the user could not run)."""
    swept = cls / "bkg_sweep" / f"train_masks_{k}.json"
    if not swept.is_file():
        sweep(cls, view, swept, runner)
    level = float(json.loads(swept.read_text())["best_thre"])
    name = f"pseudo_par_L{level:g}"
    if not (cls / name / "train/.done").is_file():
        cams(cls, [f"cam.bkg_thre={level:g}"], f" --bkg-thre {level:g}", runner)
    return level, pseudo_labels(cls, root, "par", (level, level), name, runner=runner)
