"""Bytes written and seconds per photo of ``wsss cam``, ``wsss pseudo --refine crf`` and ``wsss predict --crf``, and
whether anything but their outputs grows with the number of photos (issue 81, item 3: COCO's 122,218 photos).

On the synthetic set (``--size`` px photos; a random-weights run of the MobileNetV2 CAM preset with an ASPP head,
as ``bench_crf_overlap.py``), each command runs on a split of ``--small`` photos and on one of ``--large`` photos
(separate run folders, so that each starts empty). For each: the bytes of its output folders (``cams`` and
``cam_labels``; ``pseudo``; ``predictions_crf``), the bytes of every other file the command left in the run folder
(locks, logs; a folder's settings stamp is in the folder) and its wall time. Each file is written whole to a
temporary file beside it and renamed (``core/files.py``), so what a command writes to disk is its outputs. Per
photo = (large - small) / (large - small photos): the start-up, the model's load and the pool's start drop out. A
command streams when the other files do not grow with the photos.

    .venv/bin/python bench/bench_streaming.py --work /tmp/b_stream --small 4 --large 12 --size 320
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {  # command -> (its arguments after RUN, its output folders under the run)
    "cam": (["cam"], ["cams", "cam_labels"]),
    "pseudo": (["pseudo", "--refine", "crf"], ["pseudo"]),
    "predict": (["predict", "--crf"], ["predictions_crf"]),
}


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def split_of(root: Path, name: str, n: int) -> None:
    """Split ``name``: the first ``n`` val photos of the synthetic set."""
    ids = (root / "ImageSets/Segmentation/val.txt").read_text().split()[:n]
    (root / "ImageSets/Segmentation" / f"{name}.txt").write_text("\n".join(ids) + "\n")


def run_command(cmd: str, run: Path, split: str, workers: str | None) -> dict:
    args, outs = COMMANDS[cmd]
    extra = ["--crf-workers", workers] if workers is not None else []
    other_before = {f for f in run.rglob("*") if f.is_file()}
    t = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "wsss", args[0], str(run), *args[1:], "--split", split, "--quiet", *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"wsss {cmd} failed:\n{done.stderr[-3000:]}")
    out_dirs = [run / o / split for o in outs]
    new_other = [
        f for f in run.rglob("*") if f.is_file() and f not in other_before and not any(d in f.parents for d in out_dirs)
    ]
    return {
        "wall_s": wall,
        "output_bytes": sum(folder_bytes(d) for d in out_dirs),
        "other_bytes": sum(f.stat().st_size for f in new_other),
        "other_files": sorted(str(f.relative_to(run)) for f in new_other),
    }


def main() -> None:
    sys.path.insert(0, str(REPO / "src"))
    sys.path.insert(0, str(REPO / "bench"))
    from bench_crf_overlap import make_run
    from wsss.cli_common import script_parser

    p = script_parser(__doc__)
    p.add_work(required=True, type=Path)
    p.add_argument("--small", type=int, default=4)
    p.add_argument("--large", type=int, default=12)
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--device", default="cpu")
    p.add_argument("--crf-workers", default=None, help="infer.crf_workers (default: the config's)")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    from wsss.data import generate_synthetic

    root = a.work / "data"
    if not (root / "classes.txt").is_file():
        generate_synthetic(root, n_train=2, n_val=a.large, size=a.size, seed=0, verbose=False)
    split_of(root, "small", a.small)
    split_of(root, "large", a.large)
    res: dict = {"size": a.size, "small": a.small, "large": a.large, "device": a.device}
    for name in ("small", "large"):
        run = make_run(a.work / name, root, REPO / "configs/cam/real_cpu.yaml", a.device)
        res[name] = {cmd: run_command(cmd, run, name, a.crf_workers) for cmd in COMMANDS}
        print(json.dumps({name: res[name]}, indent=1), flush=True)
    n = a.large - a.small
    print(
        f"\n{a.size}-px synthetic photos, {a.device}, {len(os.sched_getaffinity(0))} cores; per photo = "
        f"({a.large} photos - {a.small}) / {n}"
    )
    for cmd in COMMANDS:
        s, lg = res["small"][cmd], res["large"][cmd]
        per = {k: (lg[k] - s[k]) / n for k in ("wall_s", "output_bytes", "other_bytes")}
        res[cmd] = per
        print(
            f"wsss {cmd}: {per['wall_s']:.3f} s, outputs {per['output_bytes'] / 1024:.1f} KiB, other files "
            f"{per['other_bytes']:+.0f} B per photo; other files left: {lg['other_bytes']} B "
            f"({', '.join(lg['other_files']) or 'none'})"
        )
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
