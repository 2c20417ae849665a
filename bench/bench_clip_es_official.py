"""CLIP-ES CAM speed, side by side: ``wsss cam`` of a ``clip_es`` run against the official
``generate_cams_voc12.py`` (github.com/linyq2117/CLIP-ES), same random ViT-B/16 weights, same photos, same CPU.

The official script runs unmodified except the data paths (command-line arguments) and one line: its
``device_id = "cuda:{}".format(process_id % n_gpus)`` divides by the GPU count, zero on a CPU, so a copy of the
script beside the original gets ``device_id = "cpu"``. Its dependencies that wsss lacks (lxml, ftfy, regex,
ttach, setuptools' pkg_resources) come from ``--deps`` (``pip install --target DIR lxml ftfy regex ttach
"setuptools<70"``).

Weights: a ViT-B/16 of random weights (seed 0, built by open_clip: no download), every tensor rounded to
float16 (OpenAI's ``build_model`` stores the weights in float16 and ``clip.load`` on a CPU casts them back, so
both codes then hold the same float32 numbers), saved as a plain state dict in OpenAI's layout.
Photos: ``tests/assets/voc-real-mini`` (the tests' 6 VOC photos); the official script reads each photo's labels from
``Annotations/<id>.xml``, written here from the masks (classes in id order, as wsss's keys).

Time per image: each code runs once on 2 photos and once on all 6 (separate processes, 1 thread each:
``OMP_NUM_THREADS=1``, ``run.threads=1``); (time of 6 - time of 2) / 4 removes start-up, model load and
text features from both (not 1 photo: the official script cannot read a one-line list). CPU time (user +
system, ``os.wait4``) is the figure compared, the round with the least CPU time kept: on the shared 2-core
machine wall time swings with the other developers' jobs; wall time is printed too. The CAMs written
by both are compared (max |difference| of the saved float16 maps).

    .venv/bin/python bench/bench_clip_es_official.py --official /tmp/CLIP-ES --deps /tmp/clipes-deps \
        --work /tmp/b

On a GPU (``--device cuda``; ``dev/device_official.sh``): the official script runs as shipped (one GPU, so its
``process_id % n_gpus`` is 0), ``wsss cam`` with ``run.device=cuda``; both with the machine's default threads,
and wall time is the figure compared (the round with the least wall time kept), beside the peak GPU memory
of each command (``side_by_side.GpuMemoryPeak``). ``--copies 8`` puts the 6 photos 8 times in the split ``all``
(48 images), so that the difference of the two runs is not lost in the start of a process. On a GPU
``clip.load`` keeps OpenAI's float16 weights (it casts back to float32 only on a CPU: official
``clip/clip.py:146-149``), so the official CAMs are computed in float16 there, wsss's in float32.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

from side_by_side import Timing, fastest, timed, write_voc_copies
from wsss.cli_common import script_parser
from wsss.data.classes import VOC_CLASSES
from wsss.models.clip import ClipArch, build_clip

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "assets" / "voc-real-mini"  # the tests' six VOC photos (its SOURCE.md)
VIT_B16 = ClipArch(512, 224, 16, 768, 12, 77, 49408, 512, 8, 12)
CPU_LINE = ('device_id = "cuda:{}".format(process_id % n_gpus)', 'device_id = "cpu"')


def write_weights(path: Path) -> None:
    torch.manual_seed(0)
    state = build_clip(VIT_B16).state_dict()
    state = {k: v.half().float() if v.is_floating_point() else v for k, v in state.items() if k != "attn_mask"}
    torch.save(state, path)


def write_dataset(root: Path, copies: int = 1) -> list[str]:
    """The photos as a wsss dataset (``side_by_side.write_voc_copies``: splits ``two`` and ``all``), and the
    official layout's Annotations/<id>.xml (size + one object per class of the mask)."""
    made = write_voc_copies(DATA, root, copies)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    for c in made:
        objects = "".join(f"<object><name>{VOC_CLASSES[k + 1]}</name></object>" for k in np.flatnonzero(c.labels))
        h, w = c.mask.shape
        (root / "Annotations" / f"{c.id}.xml").write_text(
            f"<annotation><filename>{c.id}.jpg</filename><size><width>{w}</width><height>{h}</height>"
            f"<depth>3</depth></size>{objects}</annotation>"
        )
    return [c.id for c in made]


def main() -> None:
    ap = script_parser(__doc__)
    ap.add_argument("--official", type=Path, required=True, help="a checkout of github.com/linyq2117/CLIP-ES")
    ap.add_argument(
        "--deps",
        type=str,
        required=True,
        help="pip --target folder(s) of the official script's deps (os.pathsep-separated)",
    )
    ap.add_work(required=True, type=Path)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the fastest time of each is kept")
    ap.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: both codes on the GPU, wall time compared, the official script unmodified",
    )
    ap.add_argument("--copies", type=int, default=1, help="the 6 photos this many times in the split 'all'")
    a = ap.parse_args()
    gpu = a.device == "cuda"
    a.work.mkdir(parents=True, exist_ok=True)
    weights, data = a.work / "vitb16_random.pt", a.work / "VOC"
    if not weights.is_file():
        write_weights(weights)
    ids = write_dataset(data, a.copies)
    if gpu:  # n_gpus is 1 there: the script runs as shipped
        script = a.official / "generate_cams_voc12.py"
    else:
        script = a.official / "generate_cams_voc12_cpu.py"
        script.write_text((a.official / "generate_cams_voc12.py").read_text().replace(*CPU_LINE))
    # one thread on the CPU (its CPU time is compared); on a GPU machine both codes get its defaults
    env = dict(os.environ) if gpu else {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    off_env = {**env, "PYTHONPATH": f"{a.deps}{os.pathsep}{a.official}"}
    run = a.work / "run"
    wsss = [sys.executable, "-m", "wsss"]
    if not (run / "config.yaml").is_file():
        device = ["run.device=cuda"] if gpu else ["run.device=cpu", "run.threads=1"]
        timed(
            [
                *wsss,
                "import",
                "clip_es",
                str(weights),
                "--config",
                str(REPO / "configs/clip_es/voc.yaml"),
                "--out",
                str(run),
                f"data.root={data}",
                "options.quick_gelu=true",
                *device,
            ],
            REPO,
            env,
        )
    times: dict[str, dict[str, Timing]] = {"official": {}, "wsss": {}}
    for _ in range(a.rounds):  # alternating, so that a burst of the other developers' load hits both alike
        for split in ("two", "all"):
            out = a.work / f"official_{split}"
            t = timed(
                [
                    sys.executable,
                    script.name,
                    "--img_root",
                    str(data / "JPEGImages"),
                    "--split_file",
                    str(data / "ImageSets/Segmentation" / f"{split}.txt"),
                    "--cam_out_dir",
                    str(out),
                    "--model",
                    str(weights),
                ],
                a.official,
                off_env,
                gpu,
            )
            times["official"][split] = fastest(t, times["official"].get(split), gpu)
            t = timed([*wsss, "cam", str(run), "--split", split, "--overwrite", "--quiet"], REPO, env, gpu)
            times["wsss"][split] = fastest(t, times["wsss"].get(split), gpu)
    n = len(ids) - 2
    wall = {k: (v["all"].wall - v["two"].wall) / n for k, v in times.items()}
    cpu = {k: (v["all"].cpu - v["two"].cpu) / n for k, v in times.items()}
    worst = 0.0
    for id in ids:
        official = np.load(a.work / "official_all" / f"{id}.npy", allow_pickle=True).item()
        with np.load(run / "cams" / "all" / f"{id}.npz") as z:
            assert sorted(z["keys"].tolist()) == sorted((official["keys"] + 1).tolist()), id
            order = np.argsort(z["keys"])
            ours = z["cam"][order].astype(np.float32)
        theirs = official["attn_highres"][np.argsort(official["keys"])].astype(np.float32)
        worst = max(worst, float(np.abs(ours - theirs).max()))
    where = torch.cuda.get_device_name() if gpu else "1 thread"
    print(
        f"torch {torch.__version__}, {where}, {len(ids)} photos, fastest of {a.rounds} rounds, "
        f"load average {os.getloadavg()[0]:.2f} at the end"
    )
    for k, v in times.items():
        two, six = v["two"], v["all"]
        memory = f", peak GPU memory {six.gpu_gib:.2f} GiB" if gpu else ""
        print(
            f"{k}: 2 photos {two.wall:.1f} s wall / {two.cpu:.1f} s CPU, {len(ids)} photos {six.wall:.1f} / "
            f"{six.cpu:.1f} s -> per image {wall[k]:.3f} s wall, {cpu[k]:.3f} s CPU{memory}"
        )
    ratio_cpu, ratio_wall = cpu["wsss"] / cpu["official"], wall["wsss"] / wall["official"]
    print(
        f"wsss / official time per image: CPU {ratio_cpu:.2f}, wall {ratio_wall:.2f}"
        f"{' (the figure compared on a GPU: wall)' if gpu else ''}"
    )
    print(f"CAMs: max |wsss - official| over {len(ids)} photos = {worst:.2e} (float16 maps in [0, 1])")


if __name__ == "__main__":
    main()
