"""The picture of each method's documentation page (``docs/img/<page>.png``): the image / CAM / pseudo-label
grid that ``wsss viz`` writes, from a short real run of the method's CPU preset.

    .venv/bin/python dev/method_pictures.py                       # every method, into docs/img/
    .venv/bin/python dev/method_pictures.py --only seco rca --work /tmp/pics

Each run goes through the CLI exactly as a user would (``wsss synth``, ``train``, ``cam``, ``pseudo``, ``viz``),
in one thread, on a small synthetic set (``--train`` / ``--val`` images of 128 px) or, for CLIP-ES and ExCEL, on
``tests/assets/voc-real-mini`` (the tests' six VOC photos) with the tiny random CLIP of their recordings. The
schedules are short (a few minutes each on one core): the pictures show what the pipeline writes, not what a full
training reaches, and each page's caption says which run drew it. A rerun keeps finished runs (``--work``) and
redraws the grids.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from wsss.cli_common import script_parser

REPO = Path(__file__).resolve().parents[1]
VOC_REAL_MINI = REPO / "tests" / "assets" / "voc-real-mini"
GOLDEN = REPO / "tests" / "golden"  # the recordings of the official codes (tests/golden/README.md)
ONE_THREAD = ["run.threads=1", "data.num_workers=0"]
# make demo's schedule for SeCo (Makefile DEMO_OVERRIDES): 300 iterations with the preset's staging proportions
SECO_DEMO = [
    "train.max_iters=300",
    "train.eval_iters=300",
    "train.ckpt_iters=300",
    "train.log_iters=50",
    "options.cam2mask=150",
    "options.update_prototype=10",
    "loss.start_iters={ptc: 30, lil: 45, lig: 45, seg: 60, reg: 60}",
]
SHORT = ["train.max_iters=300", "train.eval_iters=300", "train.ckpt_iters=300", "train.log_iters=50"]
# (page, preset, overrides): the classifier runs drawn from their CAMs and PAR pseudo labels
TRAINED = [
    ("cam", "configs/cam/synthetic_cpu.yaml", SHORT),
    ("seco", "configs/seco/synthetic_cpu.yaml", SECO_DEMO),
    ("rca", "configs/rca/synthetic_cpu.yaml", ["train.epochs=null", *SHORT]),
    (
        "sccam",
        "configs/sccam/synthetic_cpu.yaml",
        [
            "options.rounds=1",
            "options.snapshot_epochs=[3]",
            "options.schedule_epochs=3",
            "options.round0_epochs=3",
            "options.round_eval_images=40",
        ],
    ),
]


def wsss(*argv: str) -> None:
    """One CLI command in a child process (the console script's own entry point), stopping on failure."""
    cmd = [sys.executable, "-m", "wsss", *argv]
    print("+ wsss", " ".join(argv), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def first_val_ids(data: Path, split: str, n: int = 2) -> list[str]:
    return (data / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()[:n]


def draw(run: Path, data: Path, split: str, out: Path, ids: list[str]) -> None:
    """``wsss viz`` of ``ids``, then the first grid copied to ``out``."""
    viz = run / "viz_docs"
    wsss(
        "viz",
        str(run),
        "--ids",
        ",".join(ids),
        "--split",
        split,
        "--out",
        str(viz),
        "--quiet",
        "--data-root",
        str(data),
    )
    grid = viz / f"{ids[0]}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(grid, out)
    print(f"wrote {out}")


def trained(page: str, preset: str, overrides: list[str], data: Path, work: Path) -> Path:
    run = work / page
    if not (run / "checkpoints" / "last.pt").is_file():
        wsss("train", preset, f"data.root={data}", f"run.dir={run}", *overrides, *ONE_THREAD, "--quiet", "--skip-check")
    return run


def clip_es(work: Path) -> tuple[Path, Path]:
    """A CLIP-ES run imported from the tiny random CLIP of ``clip_es_state_dict.npz``, on voc-real-mini."""
    data, run = VOC_REAL_MINI, work / "clip_es"
    if not run.is_dir():
        weights = work / "tiny_clip.npz"
        with np.load(GOLDEN / "clip_es_state_dict.npz") as z:
            np.savez(weights, **{k: z[k] for k in z.files})
        wsss(
            "import",
            "clip_es",
            str(weights),
            "--config",
            "configs/clip_es/voc.yaml",
            "--out",
            str(run),
            f"data.root={data}",
            "options.text_heads=2",
            "run.device=cpu",
        )
    return run, data


def excel(work: Path) -> tuple[Path, Path]:
    """An ExCEL training-free run imported from the tiny random CLIP of ``excel_weights.npz`` (its token table
    rebuilt from the stored rows) with the recorded attribute bank, on voc-real-mini."""
    data, run = VOC_REAL_MINI, work / "excel"
    if not run.is_dir():
        with np.load(GOLDEN / "excel_weights.npz") as z:
            state = {k: z[k].astype(np.float32) for k in z.files if "__row" not in k}
            table = np.zeros((49408, z["token_embedding.weight__rows"].shape[1]), dtype=np.float32)
            table[z["token_embedding.weight__row_ids"]] = z["token_embedding.weight__rows"]
        np.savez(work / "excel_clip.npz", **state, **{"token_embedding.weight": table})
        with np.load(GOLDEN / "excel_text.npz") as z:
            np.save(work / "excel_bank.npy", z["attr_bank"])
        wsss(
            "import",
            "excel",
            str(work / "excel_clip.npz"),
            "--config",
            "configs/excel/voc.yaml",
            "--out",
            str(run),
            f"data.root={data}",
            "options.quick_gelu=true",
            f"options.bank={work / 'excel_bank.npy'}",
            "options.embedding_dim=32",
            "run.device=cpu",
        )
        wsss("cam", str(run), "--split", "val", "--quiet")
        wsss("pseudo", str(run), "--split", "val", "--refine", "excel", "--quiet")  # its own labels, not viz's PAR
    return run, data


def main(argv: list[str] | None = None) -> int:
    ap = script_parser(__doc__)
    ap.add_work(default=REPO / "runs" / "docs_pictures", type=Path)
    ap.add_out(default=REPO / "docs" / "img", type=Path)  # the page pictures
    pages_help = "pages to draw (cam seco rca sccam clip_es excel deeplab)"
    ap.add_argument("--only", nargs="*", default=None, help=pages_help)
    ap.add_argument("--train", type=int, default=400, help="synthetic training images")
    ap.add_argument("--val", type=int, default=40, help="synthetic val images")
    args = ap.parse_args(argv)
    pages = set(args.only or ["cam", "seco", "rca", "sccam", "clip_es", "excel", "deeplab"])
    data = args.work / "synth"
    if not (data / "classes.txt").is_file():
        wsss("synth", str(data), "--train", str(args.train), "--val", str(args.val), "--size", "128", "--seed", "0")
    ids = first_val_ids(data, "val")
    for page, preset, overrides in TRAINED:
        if page in pages or (page == "cam" and "deeplab" in pages):
            run = trained(page, preset, overrides, data, args.work)
            if page in pages:
                draw(run, data, "val", args.out / f"{page}.png", ids)
    if "clip_es" in pages:
        run, voc = clip_es(args.work)
        draw(run, voc, "val", args.out / "clip_es.png", first_val_ids(voc, "val"))
    if "excel" in pages:
        run, voc = excel(args.work)
        draw(run, voc, "val", args.out / "excel.png", first_val_ids(voc, "val"))
    if "deeplab" in pages:  # a DeepLab on the CAM baseline's PAR pseudo labels of the training images
        cam_run, seg = args.work / "cam", args.work / "deeplab"
        wsss("cam", str(cam_run), "--split", "train", "--quiet")
        wsss("pseudo", str(cam_run), "--split", "train", "--refine", "par", "--quiet")
        pseudo = cam_run / "pseudo" / "train"
        seg = trained(
            "deeplab", "configs/deeplab/synthetic_cpu.yaml", [f"data.pseudo_dir={pseudo}", *SHORT], data, args.work
        )
        draw(seg, data, "val", args.out / "deeplab.png", ids)
    return 0


if __name__ == "__main__":
    sys.exit(main())
