"""One method's whole route on a real-photo dataset, scored at every step (issue 31): the figures of a row of
BENCHMARKS.md's ccp-dev table.

The route is the manual's (docs/own-photos.md), run through the ``wsss`` CLI as a user runs it:

1. ``wsss train PRESET data.root=ROOT run.dir=OUT/cls`` (seconds per iteration: the training's wall time
   over its iterations, start-up and checkpoints included, and the median of the trainer's log periods);
2. ``wsss cam`` and ``wsss sweep-bkg`` on the train split: the seeds at the level the sweep picks (the
   calibration a user with a few masks does; on train, never on val), re-written at that level;
3. pseudo labels of the train split at that level (``--levels L/L``: one level, no pixel left undecided, as
   the CAM baseline's preset) with each refiner of ``--refine`` (PAR, the dense CRF, a method's own),
   scored with ``wsss eval --pseudo``;
4. the DeepLab stage ``configs/deeplab/real_cpu.yaml`` on the first refiner's pseudo labels, ``wsss predict``
   on the val split and its mIoU against the val masks; again with ``--tags-from OUT/cls`` (each val photo's
   prediction names only the classes the route's own classifier finds in it: ``val_tagged``), and with its
   soft gate (``--tag-gate soft``: each class weighted by the classifier's probability, ``val_tagged_soft``);
5. with ``--seg-rounds N``, N - 1 more rounds of the same stage, each trained afresh on the previous round's
   ``wsss predict --split train --labelled-only --crf`` (a second round of the segmentation network on its own
   predictions, each naming only the photo's image labels; scored on train too, so whether they beat the pseudo
   labels is seen on train).

``--seg-band`` trains the DeepLab stage on the first refiner's labels at the run's own pair of levels instead
(the sweep's ``config_pair``: ``cam.high_thre`` / ``cam.low_thre``; class above the high one, background at or
below the low one, 255 between, which the stage's loss ignores), in ``cls/pseudo_REFINE_band``, scored on train
like the others.

``--seg-from-classifier`` starts the DeepLab stage (every round) from the route's classifier (``model.pretrained=
OUT/cls``: its backbone, fine-tuned on the train photos' image labels, instead of the preset's ImageNet one; the
classifier and the stage must share a backbone, as the real-photo presets do).

``--seg-ensemble N`` trains N - 1 more DeepLab stages on round 1's labels, seeds ``S + 3k`` for k = 1 .. N - 1 (S:
round 1's ``run.seed``; the offset 3 keeps the members of the routes of seeds 0, 1, 2 apart), in ``OUT/seg_mK``, and
scores round 1's stage ensembled with them (``wsss predict OUT/seg --ensemble OUT/seg_m1 ...``): plain, with
``--tags-from OUT/cls``, and with ``--crf --tags-from OUT/cls`` (``seg_ensemble.val``).

``--cam-scales`` gives ``wsss cam`` its ``--scales`` (multi-scale CAMs from a classifier trained without them).

The refiner ``affinity`` is PSA's walk (docs/methods/affinitynet.md#random-walk): PSA's la / ha seeds of the
train split first (``wsss pseudo --refine psa --levels H/L``, H / L the run's own ``cam.high_thre`` /
``cam.low_thre``, the ``config_pair`` of the sweep: class above H, background below L, 255 between; scored with
``--pseudo``), the affinity network ``--affinity`` (``configs/affinitynet/real_cpu.yaml``) trained on them in
``OUT/aff``, then the walk of the CAMs at the sweep's level (``--refine affinity --affinity-run OUT/aff
--levels L/L``).

    OMP_NUM_THREADS=1 .venv/bin/python experiments/real_route.py configs/rca/real_cpu.yaml \\
        --data-root data/ccp-dev --out runs/ccp/rca --json runs/ccp/rca.json

``--data-root`` (required): a dataset in the VOC layout with masks for its train and val photos. BENCHMARKS.md's
table was measured on ccp-dev, the project's development set of 250 photos of the Clothing Co-Parsing data set
(every photo whose id is a multiple of 4, 10 garment groups; Yang, Luo and Lin, CVPR 2014), which is not in the
repository: build it from CCP (its SOURCE.md and MAPPING.txt give the draw and the class mapping) or use your own
photos (``wsss prepare folder --masks``).

A step whose outputs exist is not redone (rerun after a stop to finish); ``--set`` / ``--seg-set`` add
overrides to the two trainings (tests shrink them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from wsss.cli_common import script_parser

REPO = Path(__file__).resolve().parents[1]


IN_PROCESS = False  # run the commands by `wsss.cli.main` in this process (tests: no start-up per command)


def _wsss(*args: str, log: Path) -> float:
    """Run ``wsss ARGS`` (its output appended to ``log``); the wall seconds. Fails loudly."""
    t = time.perf_counter()
    with log.open("a") as f:
        f.write(f"$ wsss {' '.join(args)}\n")
        f.flush()
        if IN_PROCESS:
            from wsss.cli import main

            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                code = main(list(args))
        else:
            code = subprocess.run([sys.executable, "-m", "wsss", *args], cwd=REPO, stdout=f, stderr=f).returncode
    if code != 0:
        raise SystemExit(f"wsss {' '.join(args)} failed (exit {code}): see {log}")
    return time.perf_counter() - t


def _miou(path: Path) -> float:
    return float(json.loads(path.read_text())["miou"])


def _train(preset: str, root: str, run: Path, overrides: list[str], log: Path) -> dict[str, Any]:
    """Train (unless ``run`` has its final checkpoint); the seconds per iteration of the training."""
    if not (run / "checkpoints/last.pt").is_file() or not (run / "train_time.json").is_file():
        wall = _wsss("train", preset, f"data.root={root}", f"run.dir={run}", *overrides, "--quiet", log=log)
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
    log, cls, root = out / "route.log", out / "cls", str(Path(args.data_root).resolve())
    res: dict[str, Any] = {"preset": args.preset, "data_root": root,
                           "train": _train(args.preset, root, cls, args.overrides, log)}  # fmt: skip
    scales = ["--scales", args.cam_scales] if args.cam_scales else []
    _wsss("cam", str(cls), "--split", "train", *scales, "--quiet", log=log)
    sweep = cls / "bkg_sweep/train.json"
    _wsss("sweep-bkg", str(cls), "--split", "train", "--json", str(sweep), "--quiet", log=log)
    s = json.loads(sweep.read_text())
    level = float(s["best_thre"])
    by_level = dict(zip(s["thresholds"], s["miou"]))
    own = float(s["config_bkg_thre"])
    res["seeds"] = {"level": level, "miou": 100 * float(s["best_miou"]), "config_level": own,
                    "config_miou": 100 * by_level[own] if own in by_level else None}  # fmt: skip
    _wsss("cam", str(cls), "--split", "train", *scales, "--bkg-thre", f"{level:g}", "--quiet", log=log)
    res["pseudo"] = {}

    def pseudo_labels(refine: str, levels: str, name: str, *extra: str) -> Path:
        """``wsss pseudo --refine REFINE --levels LEVELS`` of the train split into ``cls/NAME/train``, scored."""
        pseudo = cls / name / "train"
        if not (pseudo / ".done").is_file():
            # no --overwrite: pseudo/train holds only this refiner's labels at this level (a stopped earlier
            # try of the same step), so a rerun continues it
            _wsss("pseudo", str(cls), "--split", "train", "--refine", refine, "--levels", levels, *extra,
                  "--quiet", log=log)  # fmt: skip
            if pseudo.exists():  # a try stopped between the rename and the mark: replaced by this complete one
                shutil.rmtree(pseudo)
            pseudo.parent.mkdir(parents=True, exist_ok=True)
            (cls / "pseudo/train").rename(pseudo)  # the next refiner writes pseudo/train afresh
            (pseudo / ".done").touch()
        _wsss("eval", str(pseudo), "--data-root", root, "--split", "train", "--pseudo",
              "--json", str(pseudo.parent / "eval.json"), log=log)  # fmt: skip
        return pseudo

    for refine in args.refine:
        extra: list[str] = []
        if refine == "affinity":  # PSA: seeds at the run's own pair, the affinity network, then the walk
            high, low = s["config_pair"]
            seeds = pseudo_labels("psa", f"{high:g}/{low:g}", "pseudo_psa_seeds")
            aff = out / "aff"
            res["affinity"] = {"seed_levels": [high, low], "seeds": 100 * _miou(seeds.parent / "eval.json"),
                               "train": _train(args.affinity, root, aff, [f"data.pseudo_dir={seeds}", *args.aff_set],
                                               log)}  # fmt: skip
            extra = ["--affinity-run", str(aff)]
        pseudo = pseudo_labels(refine, f"{level:g}/{level:g}", f"pseudo_{refine}", *extra)
        res["pseudo"][refine] = 100 * _miou(pseudo.parent / "eval.json")
    labels = cls / f"pseudo_{args.refine[0]}" / "train"  # the DeepLab stage's
    if args.seg_band:  # the uncertain pixels between the run's two levels left to the stage's ignore index
        high, low = s["config_pair"]
        labels = pseudo_labels(args.refine[0], f"{high:g}/{low:g}", f"pseudo_{args.refine[0]}_band")
        res["pseudo"][f"{args.refine[0]}_band"] = 100 * _miou(labels.parent / "eval.json")
    if args.seg:
        seg_set = [f"model.pretrained={cls}", *args.seg_set] if args.seg_from_classifier else args.seg_set
        res["seg_rounds"] = []
        for r in range(1, args.seg_rounds + 1):
            seg = out / ("seg" if r == 1 else f"seg_r{r}")
            train = _train(args.seg, root, seg, [f"data.pseudo_dir={labels}", *seg_set], log)
            _wsss("predict", str(seg), "--split", args.val_split, "--quiet", log=log)
            _wsss("eval", str(seg / "predictions" / args.val_split), "--data-root", root, "--split", args.val_split,
                  "--json", str(seg / "eval.json"), log=log)  # fmt: skip
            row = {"round": r, "labels": str(labels), "train": train, "val": 100 * _miou(seg / "eval.json")}
            for gate, suffix in (("hard", "tagged"), ("soft", "tagged_soft")):  # the classifier's tags, both gates
                _wsss("predict", str(seg), "--split", args.val_split, "--tags-from", str(cls), "--tag-gate", gate,
                      "--quiet", log=log)  # fmt: skip
                _wsss("eval", str(seg / f"predictions_{suffix}" / args.val_split), "--data-root", root, "--split",
                      args.val_split, "--json", str(seg / f"eval_{suffix}.json"), log=log)  # fmt: skip
                row[f"val_{suffix}"] = 100 * _miou(seg / f"eval_{suffix}.json")
            if r < args.seg_rounds:  # the next round's labels: this round's predictions of the train photos,
                # naming only each photo's labelled classes, with the CRF (on ccp-dev's train, RCA seed 2: 23.15
                # plain, 25.10 labelled only, 25.95 with the CRF, against 22.85 for the PAR labels; BENCHMARKS.md)
                labels = seg / "predictions_crf_labelled" / "train"
                _wsss("predict", str(seg), "--split", "train", "--labelled-only", "--crf", "--quiet", log=log)
                _wsss("eval", str(labels), "--data-root", root, "--split", "train", "--pseudo",
                      "--json", str(seg / "eval_train.json"), log=log)  # fmt: skip
                row["train_predictions"] = 100 * _miou(seg / "eval_train.json")
            res["seg_rounds"].append(row)
        res["seg_train"] = res["seg_rounds"][0]["train"]
        first = res["seg_rounds"][0]
        res["seg_val"] = {"refine": args.refine[0], "miou": first["val"], "tagged": first["val_tagged"],
                          "tagged_soft": first["val_tagged_soft"]}  # fmt: skip
        if args.seg_ensemble > 1:
            res["seg_ensemble"] = _seg_ensemble(args, out, cls, root, Path(first["labels"]), seg_set, log)
    return res


def _seg_ensemble(
    args: argparse.Namespace, out: Path, cls: Path, root: str, labels: Path, seg_set: list[str], log: Path
) -> dict[str, Any]:
    """``--seg-ensemble N``: N - 1 more trainings of round 1's stage on its labels (seeds S + 3k), and round 1's
    stage ensembled with them, scored on val plain, tagged, and tagged with the CRF."""
    import yaml

    from wsss.runs.jobs import predictions_folder

    seed = int(yaml.safe_load((out / "seg/config.yaml").read_text())["run"]["seed"])
    members = [out / f"seg_m{k}" for k in range(1, args.seg_ensemble)]
    trains = [
        _train(args.seg, root, m, [f"data.pseudo_dir={labels}", *seg_set, f"run.seed={seed + 3 * k}"], log)
        for k, m in enumerate(members, start=1)
    ]
    seg, n, val = out / "seg", args.seg_ensemble, {}
    for name, crf, tagged in (("miou", False, False), ("tagged", False, True), ("crf_tagged", True, True)):
        extra = [*(["--crf"] if crf else []), *(["--tags-from", str(cls)] if tagged else [])]
        _wsss("predict", str(seg), "--split", args.val_split, "--ensemble", *map(str, members), *extra, "--quiet",
              log=log)  # fmt: skip
        folder = predictions_folder(crf=crf, tag_gate="hard" if tagged else None, networks=n)
        scores = seg / f"eval_ens{n}_{name}.json"
        _wsss("eval", str(seg / folder / args.val_split), "--data-root", root, "--split", args.val_split,
              "--json", str(scores), log=log)  # fmt: skip
        val[name] = 100 * _miou(scores)
    return {"members": [str(seg), *map(str, members)], "train": trains, "val": val}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = script_parser(__doc__)
    p.add_argument("preset", help="the classifier's preset, e.g. configs/cam/real_cpu.yaml")
    p.add_overrides("run.seed=1", what="classifier's training (before --seg-set, --aff-set)")
    p.add_data_root(required=True)  # masks on train and val
    p.add_out(required=True)  # the runs (cls/, seg/) and route.log
    p.add_argument("--refine", nargs="+", default=["par", "crf"], help="refiners of the pseudo labels (first: seg)")
    p.add_argument("--seg", default="configs/deeplab/real_cpu.yaml", help="the DeepLab preset ('' = no seg stage)")
    p.add_argument("--val-split", default="val")
    p.add_argument("--seg-rounds", type=int, default=1, help="DeepLab rounds (2: on round 1's predictions)")
    p.add_argument(
        "--seg-band",
        action="store_true",
        help="the DeepLab stage on the first refiner's labels at the run's own pair (255 between)",
    )
    p.add_argument(
        "--seg-from-classifier",
        action="store_true",
        help="the DeepLab stage starts from the route's classifier's backbone (model.pretrained=OUT/cls)",
    )
    p.add_argument(
        "--seg-ensemble", type=int, default=1, metavar="N",
        help="N DeepLab stages on round 1's labels (seeds S + 3k), scored ensembled (wsss predict --ensemble)",
    )  # fmt: skip
    p.add_argument("--cam-scales", default="", help="wsss cam --scales, e.g. 1.0,1.5,2.0 (default: the preset's)")
    p.add_argument("--affinity", default="configs/affinitynet/real_cpu.yaml", help="the preset of --refine affinity")
    p.add_argument("--seg-set", nargs="*", default=[], help="overrides of the DeepLab training")
    p.add_argument("--aff-set", nargs="*", default=[], help="overrides of the affinity network's training")
    p.add_json()
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    res = route(args)
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
