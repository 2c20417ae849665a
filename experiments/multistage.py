"""The multi-stage half of the pipeline on the synthetic co-occurrence set.

From one trained CAM-baseline run, compares three ways to a segmentation of the val split, with the same
DeepLab budget for both trained rows:

1. raw CAM seeds: ``wsss cam`` seeds (argmax with a background level), no segmentation network; the
   level is the best on train (``wsss sweep-bkg``, as PSA / IRN / SC-CAM pick it; ``--seed-thre
   config`` keeps the run's ``cam.bkg_thre``), and both are reported;
2. CAM -> DeepLab: ``configs/deeplab/synthetic_cpu.yaml`` trained on those seeds;
3. CAM -> AffinityNet -> DeepLab: AffinityNet (``configs/affinitynet/synthetic_cpu.yaml``) trained on the
   la/ha CRF seeds (``wsss pseudo --refine psa``, 255 between, PSA's construction), the random
   walk of the CAMs (``wsss pseudo --refine affinity``), then the same DeepLab on the walked labels.

Prints the mIoU of the seeds / pseudo labels on train (255 counted as background) and of the DeepLab
predictions on val (multi-scale + flip, with and without DenseCRF), and writes
``experiments/results/multistage.json`` with the commands and the timings.

The raw CAM is also scored on val (``wsss cam --split val``: it knows the image labels, the DeepLabs do not).
The default schedule: CAM baseline 600 iterations instead of the preset's 1,500 (unless ``--cam-run``),
AffinityNet and DeepLab 800 each (their presets), 400 + 100 images; about half an hour on 2 cores:

    nice -n 10 .venv/bin/python experiments/multistage.py
    nice -n 10 .venv/bin/python experiments/multistage.py --data data/synth_bench --cam-run runs/bench/cam
                                               # reuse a trained CAM run (copied, with its train CAMs)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from wsss.cli_common import script_parser

if __package__ in (None, ""):  # run as a script (`python experiments/multistage.py`): its package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.commands import run_wsss  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def wsss(*args: str) -> float:
    """Run one ``wsss`` command in this process, quietly but for ``eval`` and ``synth``; its wall seconds
    (``CommandFailed`` if it fails)."""
    return run_wsss(*args, *(["--quiet"] if args[0] not in ("eval", "synth") else []))


def score(pred_dir: Path, root: Path, split: str, pseudo: bool = False) -> dict[str, Any]:
    from wsss.evaluation import evaluate

    res = evaluate(pred_dir, root, split, pseudo=pseudo).to_json()
    out = {"miou": 100 * res["miou"]}
    if pseudo and "pseudo_miou" in res:
        out["miou_covered"] = 100 * res["pseudo_miou"]
    return out


def move(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dst))
    return dst


def main() -> None:
    p = script_parser(__doc__, full=True)
    p.add_argument("--data", default="data/synth_multistage", help="synthetic dataset (generated if absent)")
    p.add_argument("--train-images", type=int, default=400)
    p.add_argument("--val-images", type=int, default=100)
    p.add_work(default="runs/multistage")
    p.add_argument("--cam-run", default=None, help="a trained CAM-baseline run to reuse (default: train one)")
    p.add_argument("--cam-iters", type=int, default=600, help="CAM baseline iterations (preset: 1500)")
    p.add_argument("--seg-iters", type=int, default=800, help="DeepLab iterations, the same for both seg rows")
    p.add_argument("--aff-iters", type=int, default=800, help="AffinityNet iterations (8 epochs of 800 images)")
    p.add_argument(
        "--seg-preset",
        default="configs/deeplab/synthetic_cpu.yaml",
        help="the DeepLab of both seg rows (configs/deeplab/synthetic_mnv2.yaml: ImageNet MobileNetV2)",
    )
    p.add_argument(
        "--seed-thre",
        choices=("sweep", "config"),
        default="sweep",
        help="background level of the CAM seeds: the best on train (`wsss sweep-bkg`) or the CAM run's cam.bkg_thre",
    )
    p.add_argument(
        "--skip-affinity",
        action="store_true",
        help="reuse the walked labels of a previous run of this bench in --work (pseudo_rw/train)",
    )
    p.add_json(default=str(REPO / "experiments/results/multistage.json"))
    a = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")

    root, work = Path(a.data), Path(a.work)
    times: dict[str, float] = {}
    commands: list[str] = []

    def run(key: str, *args: str) -> None:
        commands.append("wsss " + " ".join(args))
        times[key] = times.get(key, 0.0) + wsss(*args)

    if not (root / "ImageSets").is_dir():
        run("synth", "synth", str(root), "--train", str(a.train_images), "--val", str(a.val_images), "--size", "128")
    common = [f"data.root={root}", "run.threads=2"]

    cam = work / "cam"
    if a.cam_run:  # a copy: the bench writes pseudo/ into the CAM run, never into the given one
        src = Path(a.cam_run)
        if not (src / "config.yaml").is_file():
            sys.exit(f"{src}: not a run directory (no config.yaml)")
        shutil.rmtree(cam, ignore_errors=True)
        cam.mkdir(parents=True)
        shutil.copy(src / "config.yaml", cam / "config.yaml")
        shutil.copytree(src / "checkpoints", cam / "checkpoints")
        for sub in ("cams/train", "cam_labels/train"):  # CAMs already computed are reused
            if (src / sub).is_dir():
                shutil.copytree(src / sub, cam / sub)
    else:
        start = min(600, a.cam_iters // 2)
        run(
            "cam_train",
            "train",
            "configs/cam/synthetic_cpu.yaml",
            *common,
            f"run.dir={cam}",
            f"train.max_iters={a.cam_iters}",
            f"loss.start_iters={{seg: {start}}}",
            f"train.eval_iters={a.cam_iters}",
        )
    run("cam_infer", "cam", str(cam), "--split", "train", "--data-root", str(root))
    run("cam_infer", "cam", str(cam), "--split", "val", "--data-root", str(root))  # raw CAM on val (GT labels)
    seeds = cam / "cam_labels/train"
    from wsss.core.config import load_config

    cfg_thre = float(load_config(cam / "config.yaml").cam.bkg_thre)
    fixed = {"train": score(seeds, root, "train"), "val": score(cam / "cam_labels/val", root, "val")}
    thre = cfg_thre
    if a.seed_thre == "sweep":  # the level with the best train seeds (PSA / IRN / SC-CAM practice)
        run("sweep", "sweep-bkg", str(cam), "--split", "train", "--data-root", str(root))
        thre = json.loads((cam / "bkg_sweep/train.json").read_text())["best_thre"]
        for split in ("train", "val"):
            run("cam_infer", "cam", str(cam), "--split", split, "--data-root", str(root), "--bkg-thre", str(thre))

    # AffinityNet seeds: PSA's la/ha CRF label (255 between), kept apart from the walked labels
    crf_seeds = work / "seeds_psa/train"
    n_train = len((root / "ImageSets/Segmentation/train.txt").read_text().split())
    if not crf_seeds.is_dir() or len(list(crf_seeds.glob("*.png"))) != n_train:  # else kept from a previous run
        run(
            "crf_seeds",
            "pseudo",
            str(cam),
            "--split",
            "train",
            "--refine",
            "psa",
            "--data-root",
            str(root),
            "--overwrite",
        )
        move(cam / "pseudo/train", crf_seeds)
    walked = work / "pseudo_rw/train"
    if a.skip_affinity:
        if not walked.is_dir() or len(list(walked.glob("*.png"))) != n_train:
            sys.exit(f"--skip-affinity: {walked} does not hold the {n_train} walked labels of a previous run")
    else:
        aff = work / "affinity"
        shutil.rmtree(aff, ignore_errors=True)  # a fresh run on these seeds (an existing run dir would resume)
        run(
            "aff_train",
            "train",
            "configs/affinitynet/synthetic_cpu.yaml",
            *common,
            f"run.dir={aff}",
            f"data.pseudo_dir={crf_seeds}",
            f"train.max_iters={a.aff_iters}",
        )
        run(
            "random_walk",
            "pseudo",
            str(cam),
            "--split",
            "train",
            "--refine",
            "affinity",
            "--affinity-run",
            str(aff),
            "--data-root",
            str(root),
            "--overwrite",
        )
        move(cam / "pseudo/train", walked)

    rows: dict[str, dict[str, Any]] = {
        f"CAM seeds (bkg {cfg_thre:g}, the config)": fixed,
        "CAM seeds": {"train": score(seeds, root, "train"), "val": score(cam / "cam_labels/val", root, "val")},
        "CRF seeds (AffinityNet input)": {"train": score(crf_seeds, root, "train", pseudo=True)},
        "CAM -> AffinityNet (random walk)": {"train": score(walked, root, "train")},
    }
    for name, labels, key in (
        ("CAM -> DeepLab", seeds, "seg_cam"),
        ("CAM -> AffinityNet -> DeepLab", walked, "seg_rw"),
    ):
        seg = work / key
        shutil.rmtree(seg, ignore_errors=True)
        run(
            f"{key}_train",
            "train",
            a.seg_preset,
            *common,
            f"run.dir={seg}",
            f"data.pseudo_dir={labels}",
            f"train.max_iters={a.seg_iters}",
            f"train.eval_iters={a.seg_iters}",
        )
        run(f"{key}_predict", "predict", str(seg), "--split", "val", "--data-root", str(root))
        run(f"{key}_predict", "predict", str(seg), "--split", "val", "--crf", "--data-root", str(root))
        rows[name] = {
            "train_labels": rows["CAM seeds" if key == "seg_cam" else "CAM -> AffinityNet (random walk)"]["train"],
            "val": score(seg / "predictions/val", root, "val"),
            "val_crf": score(seg / "predictions_crf/val", root, "val"),
        }

    print(f"\n{'pipeline':36s} {'labels mIoU (train)':>20s} {'seg mIoU (val)':>15s} {'+CRF':>7s}")
    for name, r in rows.items():
        lab = r.get("train", r.get("train_labels", {})).get("miou")
        val, crf = r.get("val", {}).get("miou"), r.get("val_crf", {}).get("miou")
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        print(f"{name:36s} {fmt(lab):>20s} {fmt(val):>15s} {fmt(crf):>7s}")
    import torch

    result = {
        "data": {"root": str(root), "train": a.train_images, "val": a.val_images, "size": 128},
        "budget": {"cam_iters": None if a.cam_run else a.cam_iters, "seg_iters": a.seg_iters, "aff_iters": a.aff_iters},
        "seg_preset": a.seg_preset,
        "seed_bkg_thre": {"config": cfg_thre, "used": thre, "rule": a.seed_thre},
        "rows": rows,
        "seconds": {k: round(v, 1) for k, v in times.items()},
        "commands": commands,
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
    }
    path = Path(a.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    from wsss.core.files import atomic_write

    with atomic_write(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
