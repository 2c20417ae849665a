"""``wsss route`` in each of its modes on synthetic photos, timed (docs/own-photos.md#with-clip-files).

The photos: ``--photos`` synthetic train photos and a quarter as many val photos of ``--size`` px (``wsss synth``),
given to the route as a folder of photos with a class list, and a labels file where the mode has one. The modes:

- ``weclip``: ``--clip CLIP --dinov2 DINOV2`` (WeCLIP+ trained on the photos);
- ``clip``: ``--clip CLIP`` (CLIP-ES's CAMs, then the DeepLab stage);
- ``names``: ``--clip CLIP`` without ``--labels`` (the photos tagged first);
- ``none``: no weight file (the classifier on ImageNet weights).

The weights are random (no CLIP or DINOv2 weights exist on this project's machines): ``--weights full`` a ViT-B/16
CLIP and a ViT-S/14 DINOv2 of the real sizes (what a step costs), ``tiny`` the recordings' tiny ones (a dry run).
Prints one JSON line per mode (its wall seconds and each step's, from ``summary.json``), then all of them.

    python bench/bench_route_modes.py --out /tmp/route_modes --photos 200 --size 320
    python bench/bench_route_modes.py --out /tmp/dry --photos 8 --size 64 --weights tiny --folds 0 \
        run.device=cpu train.epochs=1 data.crop_size=64 clip.options.test_resize_long=64 \
        clip.infer.resize_long=64   # a dry run of the script on a CPU
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODES = ("weclip", "clip", "names", "none")


def photos(out: Path, n: int, size: int) -> tuple[Path, Path, Path]:
    """(photos folder, labels.csv, classes.txt) of a synthetic set of ``n`` train photos (its val split kept out)."""
    from wsss.data import generate_synthetic
    from wsss.data.classes import read_classes
    from wsss.data.voc import load_cls_labels

    root = out / "synth"
    if not (root / "classes.txt").is_file():
        generate_synthetic(root, n_train=n, n_val=max(1, n // 4), size=size, seed=0, verbose=False)
    names = read_classes(root)
    labels = load_cls_labels(root, len(names)) or {}
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["image", "labels"])
        for i, v in sorted(labels.items()):
            w.writerow([f"{i}.jpg", ";".join(names[1 + c] for c in np.flatnonzero(v))])
    (out / "classes.txt").write_text("\n".join(names) + "\n")
    return root / "JPEGImages", out / "labels.csv", out / "classes.txt"


def weights(out: Path, kind: str) -> tuple[Path, Path]:
    sys.path.insert(0, str(REPO / "bench"))
    from bench_weclip_plus_official import write_weights

    out.mkdir(parents=True, exist_ok=True)
    clip, dino, _, _ = write_weights(out, "tiny" if kind == "tiny" else "full")
    return clip, dino


def route_args(mode: str, folder: Path, labels: Path, classes: Path, clip: Path, dino: Path, out: Path) -> list[str]:
    args = ["route", str(folder), "--classes", str(classes), "--out", str(out)]
    if mode != "names":
        args += ["--labels", str(labels)]
    if mode in ("weclip", "clip", "names"):
        args += ["--clip", str(clip)]
    if mode == "weclip":
        args += ["--dinov2", str(dino)]
    return args


def mode_words(mode: str, words: list[str]) -> list[str]:
    """The words of one mode: ``clip.options.*`` words of WeCLIP+ kept from the CLIP-ES modes' run."""
    from wsss.pipelines.clip_steps import CLIP_ES_PRESET, words_of

    if mode == "weclip":
        return words
    clip = [w[5:] for w in words if w.startswith("clip.")]
    kept = {f"clip.{w}" for w in words_of(CLIP_ES_PRESET, clip)}
    return [w for w in words if not w.startswith("clip.") or w in kept]


def main() -> None:
    sys.path.insert(0, str(REPO / "src"))
    from wsss.cli import main as wsss
    from wsss.cli_common import script_parser

    p = script_parser(__doc__)
    p.add_out(required=True, type=Path)
    p.add_argument("--photos", type=int, default=200, help="synthetic train photos")
    p.add_argument("--size", type=int, default=320, help="their side in px")
    p.add_argument("--weights", choices=("full", "tiny"), default="full")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    p.add_argument("--folds", default="3", help="the route's --folds")
    p.add_overrides("run.device=cpu train.epochs=1", what="every route (cls./seg./clip. prefixes as the route's)")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    folder, labels, classes = photos(a.out, a.photos, a.size)
    clip, dino = weights(a.out / "weights", a.weights)
    # the files are state dicts that do not say CLIP's activation (QuickGELU, as OpenAI's); the tiny DINOv2 has 2 heads
    files = ["clip.options.quick_gelu=true", *(["clip.options.dino_heads=2"] if a.weights == "tiny" else [])]
    results = {}
    for mode in a.modes.split(","):
        out = a.out / f"route_{mode}"
        t0 = time.perf_counter()
        code = wsss(
            [
                *route_args(mode, folder, labels, classes, clip, dino, out),
                "--folds",
                a.folds,
                "--quiet",
                *mode_words(mode, [*files, *a.overrides]),
            ]
        )
        wall = time.perf_counter() - t0
        summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
        results[mode] = {
            "status": code,
            "wall_s": round(wall, 1),
            "steps_s": summary.get("seconds", {}),
            "choices": {k: v["value"] for k, v in summary.get("choices", {}).items()},
        }
        print(json.dumps({mode: results[mode]}), flush=True)
    import torch

    results["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    results["photos"], results["size"], results["weights"] = a.photos, a.size, a.weights
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
