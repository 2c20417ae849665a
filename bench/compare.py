"""One protocol for every method on the synthetic co-occurrence set.

Generates one synthetic dataset, trains each method's ``configs/<method>/synthetic_cpu.yaml`` under
the same budget, then measures the three numbers a WSSS paper reports, with our commands:

- CAM: ``wsss cam`` seeds on the train split (argmax with ``cam.bkg_thre``);
- mask: ``wsss pseudo --refine par`` pseudo labels on the train split (255 counted as background;
  the covered-pixels convention is printed too);
- seg: ``wsss predict`` on the val split (multi-scale + flip, no CRF);

plus the false-activation rate (FAR: ground-truth background predicted as the image's class) and the
context FAR (water pixels predicted as boat, rails pixels predicted as train: the co-occurrence
failure), and the training / inference times. Writes ``bench/results/compare.json`` and prints a
markdown table. Methods without a preset are listed as missing.

    .venv/bin/python bench/compare.py                     # every method, the presets' budgets
    .venv/bin/python bench/compare.py --methods cam seco  # a subset
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
METHODS = ("cam", "seco", "rca", "sccam")


def wsss(*args: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "wsss.cli", *args], check=True, cwd=REPO)
    return time.perf_counter() - t


def context_far(pred_dir: Path, root: Path, split: str) -> dict[str, float]:
    """Share of context pixels (background in the GT) predicted as the class they accompany."""
    from wsss.data import VOCDataset
    from wsss.utils.io import read_label_png

    ds = VOCDataset(root, split)
    names = ds.class_names
    pairs = {"water": (1, names.index("boat")), "rails": (2, names.index("train"))}
    hits = dict.fromkeys(pairs, 0)
    total = dict.fromkeys(pairs, 0)
    for i in ds.ids:
        labels = ds.labels(i)
        ctx = read_label_png(root / "SegmentationContext" / f"{i}.png")
        pred = read_label_png(pred_dir / f"{i}.png")
        for name, (ctx_id, cls) in pairs.items():
            if labels[cls - 1] > 0.5:
                sel = ctx == ctx_id
                total[name] += int(sel.sum())
                hits[name] += int((pred[sel] == cls).sum())
    return {k: hits[k] / total[k] if total[k] else float("nan") for k in pairs}


def evaluate(pred_dir: Path, root: Path, split: str, pseudo: bool = False) -> dict:
    from wsss.evaluation import evaluate as ev

    r = ev(pred_dir, root, split, pseudo=pseudo)
    out = {"miou": 100 * r.miou, "mean_far": 100 * float(r.cooccurrence["mean_far"])}
    if pseudo:
        out["miou_covered"] = 100 * float(r.scores["pseudo_miou"])
        out["ignored_share"] = 100 * float(r.scores["ignored_share"])
    ctx = context_far(pred_dir, root, split)
    out.update({f"far_{k}": 100 * v for k, v in ctx.items()})
    return out


def run_method(method: str, root: Path, runs: Path, overrides: list[str]) -> dict:
    preset = REPO / "configs" / method / "synthetic_cpu.yaml"
    if not preset.is_file():
        return {"method": method, "status": "missing (no synthetic_cpu preset yet)"}
    run = runs / method
    res: dict = {"method": method, "status": "ok", "run": str(run)}
    res["train_s"] = wsss("train", str(preset), f"run.dir={run}", f"data.root={root}", "--quiet", *overrides)
    res["cam_s"] = wsss("cam", str(run), "--split", "train", "--quiet", "--checkpoint", "last")
    wsss("pseudo", str(run), "--split", "train", "--refine", "par", "--quiet", "--checkpoint", "last")
    res["predict_s"] = wsss("predict", str(run), "--split", "val", "--quiet", "--checkpoint", "last")
    res["cam"] = evaluate(run / "cam_labels/train", root, "train")
    res["mask"] = evaluate(run / "pseudo/train", root, "train", pseudo=True)
    res["seg"] = evaluate(run / "predictions/val", root, "val")
    return res


def table(results: list[dict]) -> str:
    head = (
        "| method | CAM mIoU (train) | mask mIoU (train) | seg mIoU (val) | seg mean FAR | seg FAR water->boat "
        "| seg FAR rails->train | train time | predict time (val) |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for r in results:
        if r["status"] != "ok":
            rows.append(f"| {r['method']} | {r['status']} | | | | | | | |")
            continue
        rows.append(
            f"| {r['method']} | {r['cam']['miou']:.1f} | {r['mask']['miou']:.1f} | {r['seg']['miou']:.1f} "
            f"| {r['seg']['mean_far']:.1f} | {r['seg']['far_water']:.1f} | {r['seg']['far_rails']:.1f} "
            f"| {r['train_s'] / 60:.1f} min | {r['predict_s']:.0f} s |"
        )
    return head + "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--data", default="data/synth_bench")
    p.add_argument("--runs", default="runs/bench")
    p.add_argument("--train", type=int, default=800)
    p.add_argument("--val", type=int, default=200)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="config overrides applied to every method (key=value)")
    a = p.parse_args()
    root, runs = REPO / a.data, REPO / a.runs
    if not (root / "classes.txt").is_file():
        wsss("synth", str(root), "--train", str(a.train), "--val", str(a.val), "--size", str(a.size),
             "--seed", str(a.seed))  # fmt: skip
    results = [run_method(m, root, runs, a.overrides) for m in a.methods]
    meta = {
        "date": str(date.today()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "data": f"synth {a.train}+{a.val} @ {a.size}px seed {a.seed}",
    }
    out = REPO / "bench/results/compare.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=float))
    print(json.dumps(meta))
    print(table(results))


if __name__ == "__main__":
    main()
