"""Per-image cost of `wsss cam` and `wsss predict [--crf]` at VOC and COCO size, and the CRF over the
classes present against the CRF over all classes.

Data (built under ``--work``): the six real photos of tests/assets/voc-real-mini resized to 500x375
with their VOC labels (21 classes), and ``--images`` real photos of ``--data-root`` (coco128-dev) resized
to 640x480, each with 3 labelled classes, once in an 81-class dataset (its 3 first COCO labels, padded
with the next class ids) and once in a 4-class dataset (classes 1, 2, 3): the same pixels, the same 3
labelled classes, a different class count. The network is the MobileNetV2 CAM preset
(``configs/cam/real_cpu.yaml``: scales 1.0 / 0.75 / 1.25 + flips, output stride 16) with random weights
(the cost does not depend on them) and, for `predict`, an ASPP segmentation head (``infer.scales``
1.0 / 1.25 / 1.5 + flips).

`wsss cam` is ``run_cam`` (what the command runs after loading the run): "labelled" computes the
labelled classes' maps only (the default), "all" every class's map first (``all_classes=True``, the
path before issue 23). The configurations are timed in one process, taking turns image by image (the
machine is shared: a changing load weighs on all alike), one warm-up image first; the peak RSS of
each is measured alone in its own process. `wsss predict` is ``run_predict`` without the CRF (its
logits are all-class by design). Its CRF is timed on probability maps made from the ground truth of
real photos and of synthetic images, so that the classes present are those of the image, as with a
trained model, rather than whatever a random network's near-uniform output makes them:
``softmax(8 * blur(onehot(gt)) + 2 * blur(noise))`` over every class (background about 0.99 away
from edges), noise N(0, 1) per pixel and class, blur a 15-pixel box (smooth, as logits are).
"present" = ``present_classes`` (background, every argmax winner, any class reaching 0.05), "all" =
every class. Agreement = the share of pixels with the same CRF label.

    .venv/bin/python bench/bench_inference.py --data-root data/coco128-dev --threads 1

``--data-root`` (required, except with ``--parallel --run``): the COCO photos, a dataset in the VOC layout with
81 classes and masks on split ``val``. BENCHMARKS.md's figures were measured on coco128-dev, the project's
development set of 70 COCO photos (the even ids of Ultralytics' coco128-seg, the first 128 images of COCO 2017
train, their polygons rasterised to class-index masks), which is not in the repository; ``wsss prepare coco``
makes such a set from COCO itself (any of its photos: other photos, other figures).

``--parallel`` (issue 29) times the commands themselves, as a user runs them, on coco128-dev photos (the
first ``--images`` of split ``val``, at their own size, 81 classes), with the same MobileNetV2 preset
with an ASPP head (random weights, saved as a run directory): `wsss cam`, `wsss pseudo --refine crf` and
`wsss predict --crf`, each with 1 process (torch's default threads), 2 processes under torchrun (gloo,
one thread each, torchrun's default) and ``--workers 2``. Wall time of the whole command (start-up
included), the images/s of its summary line (rank 0, the work alone), and the CPU utilisation: the
CPU seconds of the command's processes over wall time x cores. Every command runs with ``--overwrite``.

    .venv/bin/python bench/bench_inference.py --data-root data/coco128-dev --parallel --images 70

``--run RUN --split S`` times them on a trained run instead (a copy of its config and checkpoints, its
own data): with random weights most of the 81 classes stay in the CRF of `predict --crf`, which a
trained model's masks do not.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from peak_memory import peak_rss_gib
from wsss.cli_common import script_parser

REPO = Path(__file__).resolve().parents[1]
VOC_REAL_MINI = REPO / "tests" / "assets" / "voc-real-mini"  # the tests' six VOC photos (its SOURCE.md)
VOC_SIZE, COCO_SIZE = (500, 375), (640, 480)  # (width, height)


# -- data --------------------------------------------------------------------------------------------
Item = tuple[str, np.ndarray, np.ndarray, np.ndarray | None]  # id, image, labels, mask


def _write_set(root: Path, names: list[str], items: list[Item]) -> None:
    """A VOC-layout set: JPEGImages, classes.txt, cls_labels.npy, split ``val`` (+ ``warm``: the first id)."""
    from PIL import Image

    from wsss.data.classes import write_classes
    from wsss.data.voc import write_cls_labels
    from wsss.utils.io import save_label_png

    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets/Segmentation").mkdir(parents=True, exist_ok=True)
    for id, image, _, mask in items:
        Image.fromarray(image).save(root / "JPEGImages" / f"{id}.jpg", quality=95)
        if mask is not None:
            save_label_png(root / "SegmentationClass" / f"{id}.png", mask)
    write_classes(root, names)
    write_cls_labels(root, {id: labels for id, _, labels, _ in items})
    ids = [id for id, *_ in items]
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids[1:]) + "\n")
    (root / "ImageSets/Segmentation/warm.txt").write_text(ids[0] + "\n")
    for i, id in enumerate(ids[1:]):  # one split per timed image: the configurations take turns
        (root / f"ImageSets/Segmentation/img{i}.txt").write_text(id + "\n")


def _resized(image: np.ndarray, mask: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    img = np.array(Image.fromarray(image).resize(size, Image.BILINEAR))
    return img, np.asarray(Image.fromarray(mask.astype(np.uint8)).resize(size, Image.NEAREST)).astype(np.int64)


def build_sets(work: Path, n_coco: int, coco_root: Path) -> dict[str, Path]:
    from wsss.data import VOCDataset

    sets = {"voc": work / "voc21", "coco81": work / "coco81", "coco4": work / "coco4"}
    if all((p / "cls_labels.npy").is_file() for p in sets.values()):
        return sets
    voc = VOCDataset(VOC_REAL_MINI, "val")
    items = []
    for id in voc.ids:
        img, mask = _resized(voc.load_image(id), voc.load_mask(id), VOC_SIZE)
        items.append((id, img, voc.labels(id), mask))
    _write_set(sets["voc"], voc.class_names, items)

    coco = VOCDataset(coco_root, "val")
    items81, items4 = [], []
    for id in coco.ids[: n_coco + 1]:  # + the warm-up image
        img, mask = _resized(coco.load_image(id), coco.load_mask(id), COCO_SIZE)
        keys = [int(k) for k in np.flatnonzero(coco.labels(id))][:3]
        keys += [k for k in range(80) if k not in keys][: 3 - len(keys)]
        lab81 = np.zeros(80, dtype=np.float32)
        lab81[keys] = 1
        items81.append((id, img, lab81, None))
        items4.append((id, img, np.ones(3, dtype=np.float32), None))
    _write_set(sets["coco81"], coco.class_names, items81)
    _write_set(sets["coco4"], ["background", "a", "b", "c"], items4)
    return sets


# -- one configuration per process -------------------------------------------------------------------
def _run(num_classes: int, decoder: str):
    import torch

    from wsss.core.config import load_config
    from wsss.methods import build_method, placeholder_classes
    from wsss.runs.run import Run

    cfg = load_config(REPO / "configs/cam/real_cpu.yaml", ["model.pretrained=null", f"model.decoder={decoder}"])
    torch.manual_seed(0)
    method = build_method(cfg, placeholder_classes(num_classes)).eval()
    names = [f"c{i}" for i in range(num_classes)]
    return Run(dir=Path("."), cfg=cfg, method=method, class_names=names, device=torch.device("cpu"))


def _job(job: dict, run, split: str) -> None:
    from wsss.runs.jobs import run_cam, run_predict

    root = str(job["root"])
    if job["command"] == "cam":
        run_cam(run, split, root=root, overwrite=True, progress=False, all_classes=job["path"] == "all")
    else:
        run_predict(run, split, root=root, overwrite=True, progress=False)


def _job_run(job: dict):
    from wsss.data import VOCDataset

    run = _run(VOCDataset(job["root"], "val").num_classes, "aspp" if job["command"] == "predict" else "none")
    run.dir = Path(job["out"])
    return run


def time_interleaved(jobs: dict[str, dict], n_images: int) -> dict[str, float]:
    """Seconds per image of each job, in one process: image i of every job, then image i + 1, so that a
    load that changes during the run (the machine is shared) weighs on every job alike."""
    runs = {name: _job_run(job) for name, job in jobs.items()}
    for name, job in jobs.items():
        _job(job, runs[name], "warm")
    total = dict.fromkeys(jobs, 0.0)
    for i in range(n_images):
        for name, job in jobs.items():
            t = time.perf_counter()
            _job(job, runs[name], f"img{i}")
            total[name] += time.perf_counter() - t
    return {name: t / n_images for name, t in total.items()}


def peak_rss_child(job: dict) -> dict:
    """Peak RSS of one job alone in a process: the warm-up image and one more."""
    import torch

    torch.set_num_threads(job["threads"])
    run = _job_run(job)
    for split in ("warm", "img0"):
        _job(job, run, split)
    return {"peak_rss_gib": peak_rss_gib()}


# -- the CRF over the classes present against all classes --------------------------------------------
def gt_probs(mask: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """(C, H, W) float32: softmax(8 * blur(onehot(gt)) + 2 * blur(N(0, 1))); ignore (255) counts as background.

    The noise is smooth, as a network's logits are (independent noise per pixel makes every one of 81
    classes reach 0.05 somewhere, which no trained model's output does)."""
    import torch
    import torch.nn.functional as F

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 15, stride=1, padding=7, count_include_pad=False)

    m = torch.from_numpy(np.where(mask == 255, 0, mask)).long()
    onehot = F.one_hot(m, num_classes).permute(2, 0, 1)[None].float()
    noise = torch.from_numpy(rng.standard_normal(onehot.shape).astype(np.float32))
    return torch.softmax(8 * blur(onehot)[0] + 2 * blur(noise)[0], dim=0).numpy()


def crf_compare(sets: list[tuple[str, list[tuple[np.ndarray, np.ndarray]], int]], params) -> list[dict]:
    from wsss.cam import crf_label
    from wsss.runs.run import present_classes

    rows = []
    rng = np.random.default_rng(0)
    for name, items, num_classes in sets:
        t_present = t_all = 0.0
        agree = total = kept = 0
        for image, mask in items:
            prob = gt_probs(mask, num_classes, rng)
            present = present_classes(prob)
            t = time.perf_counter()
            a = crf_label(image, prob, present=present, params=params)
            t_present += time.perf_counter() - t
            t = time.perf_counter()
            b = crf_label(image, prob, present=None, params=params)
            t_all += time.perf_counter() - t
            agree += int((a == b).sum())
            total += a.size
            kept += len(present)
        n = len(items)
        rows.append(
            {
                "set": name,
                "images": n,
                "classes": num_classes,
                "kept_mean": kept / n,
                "present_s": t_present / n,
                "all_s": t_all / n,
                "agree": agree / total,
            }
        )
    return rows


def crf_sets(work: Path, n_coco: int, coco_root: Path) -> list[tuple[str, list[tuple[np.ndarray, np.ndarray]], int]]:
    from wsss.data import VOCDataset, generate_synthetic

    voc = VOCDataset(VOC_REAL_MINI, "val")
    real = [(voc.load_image(i), voc.load_mask(i)) for i in voc.ids]
    coco = VOCDataset(coco_root, "val")
    coco_items = [_resized(coco.load_image(i), coco.load_mask(i), COCO_SIZE) for i in coco.ids[:n_coco]]
    synth_root = work / "synth"
    if not (synth_root / "ImageSets").is_dir():
        generate_synthetic(synth_root, n_train=0, n_val=6, size=320, seed=0)
    syn = VOCDataset(synth_root, "val")
    synth = [(syn.load_image(i), syn.load_mask(i)) for i in syn.ids]
    return [
        (f"voc-real-mini (6 real photos, native size, {voc.num_classes} classes)", real, voc.num_classes),
        (f"coco128-dev ({n_coco} real photos, 640x480, {coco.num_classes} classes)", coco_items, coco.num_classes),
        (f"synthetic (6 images, 320x320, {syn.num_classes} classes)", synth, syn.num_classes),
    ]


# -- the commands over 1 and 2 processes (issue 29) ---------------------------------------------------
def parallel_data(work: Path, n: int, src: Path) -> Path:
    """``src`` (coco128-dev) with a split ``val`` of its first ``n`` val photos (links to its files)."""
    root = work / f"coco128_val{n}"
    src = src.resolve()  # the links must not depend on the working directory
    if not (root / "cls_labels.npy").exists():
        (root / "ImageSets/Segmentation").mkdir(parents=True, exist_ok=True)
        ids = (src / "ImageSets/Segmentation/val.txt").read_text().split()[:n]
        (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids) + "\n")
        for name in ("JPEGImages", "SegmentationClass", "classes.txt", "cls_labels.npy"):
            (root / name).symlink_to(src / name)
    return root


def parallel_run_dir(work: Path, root: Path) -> Path:
    """A run directory of the MobileNetV2 preset with an ASPP head and random weights, on ``root``."""
    import torch

    from wsss.core.checkpoint import save_checkpoint
    from wsss.core.config import load_config, save_config
    from wsss.data import VOCDataset
    from wsss.methods import build_method

    run = work / f"parallel_run_{root.name}"
    if (run / "checkpoints/last.pt").is_file():
        return run
    names = VOCDataset(root, "val").class_names
    cfg = load_config(
        REPO / "configs/cam/real_cpu.yaml",
        [
            "model.pretrained=null",
            "model.decoder=aspp",
            f"data.root={root}",
            f"run.dir={run}",
            "infer.crf_workers=0",
            "data.num_workers=0",
        ],
    )
    torch.manual_seed(0)
    method = build_method(cfg, names).eval()
    save_config(cfg, run / "config.yaml")
    save_checkpoint(
        {"model": method.state_dict(), "num_classes": len(names), "class_names": names, "step": 0},
        run / "checkpoints/last.pt",
    )
    return run


def timed_command(args: list[str], env: dict[str, str]) -> dict:
    """Wall time, the summary line's images/s and the CPU utilisation of one command."""
    import os
    import re
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env={**os.environ, **env})
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rate = re.findall(r"\(([0-9.]+) images/s", done.stderr)
    return {
        "wall": wall,
        "rate": float(rate[-1]) if rate else float("nan"),
        "cpu": cpu / (wall * (os.cpu_count() or 1)),
    }


def trained_run_copy(work: Path, trained: Path) -> Path:
    """A copy of a trained run's config and checkpoints (the bench's outputs stay out of the run)."""
    import shutil

    run = work / f"parallel_{trained.name}"
    if not (run / "checkpoints").is_dir():
        run.mkdir(parents=True, exist_ok=True)
        shutil.copy(trained / "config.yaml", run / "config.yaml")
        shutil.copytree(trained / "checkpoints", run / "checkpoints")
    return run


def parallel(
    work: Path,
    n: int,
    skip: Sequence[str] = (),
    trained: Path | None = None,
    split_name: str = "val",
    coco_root: Path | None = None,
) -> None:
    if trained is None:
        assert coco_root is not None  # main() asks for --data-root
        run = parallel_run_dir(work, parallel_data(work, n, coco_root))
        what = f"the first {n} coco128-dev val photos, random weights"
    else:
        run = trained_run_copy(work, trained)
        what = f"split {split_name} of {trained} (its own data and weights)"
    wsss = [sys.executable, "-m", "wsss"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "wsss"]
    split = ["--split", split_name, "--overwrite"]
    jobs = {"cam": ["cam"], "pseudo --refine crf": ["pseudo", "--refine", "crf"], "predict --crf": ["predict", "--crf"]}
    modes = {"1 process": (wsss, []), "torchrun 2": (torchrun, []), "--workers 2": (wsss, ["--workers", "2"])}
    if "pseudo" not in skip:
        timed_command([*wsss, "cam", str(run), *split, "--quiet"], {})  # the CAMs pseudo reads
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"commands on {what}, load average at start {load}")
    print("  command | processes | wall s | images/s (summary) | wall / 1 process | CPU utilisation")
    for name, job in jobs.items():
        if job[0] in skip:
            continue
        base = None
        for mode, (launcher, extra) in modes.items():
            r = timed_command([*launcher, job[0], str(run), *split, *job[1:], *extra], {})
            base = base or r["wall"]
            print(
                f"  {name} | {mode} | {r['wall']:.1f} | {r['rate']:.2f} | {r['wall'] / base:.2f}x | "
                f"{100 * r['cpu']:.0f} %",
                flush=True,
            )


def main() -> None:
    p = script_parser(__doc__)
    p.add_argument("--images", type=int, default=6, help="COCO-size photos timed (plus one warm-up)")
    p.add_threads(1)
    p.add_work(default="runs/bench_inference")
    p.add_argument("--skip", nargs="*", default=[], choices=["cam", "predict", "crf", "pseudo"])
    p.add_argument("--parallel", action="store_true", help="time the commands over 1 and 2 processes (issue 29)")
    p.add_argument("--run", default=None, help="--parallel on this trained run (copied) instead of random weights")
    p.add_split("val")  # of --parallel --run's data
    p.add_data_root()  # the COCO photos (coco128-dev); required unless --parallel --run
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.data_root is None and not a.child and not (a.parallel and a.run):
        p.error("--data-root is required: the COCO photos (a VOC-layout dataset of 81 classes, e.g. coco128-dev)")
    coco_root = Path(a.data_root) if a.data_root else None
    if a.parallel:
        run = Path(a.run).resolve() if a.run else None
        parallel(Path(a.work).resolve(), a.images, a.skip, run, a.split, coco_root)
        return
    if a.child:
        print(json.dumps(peak_rss_child(json.loads(a.child))))
        return
    import torch

    torch.set_num_threads(a.threads)
    work = Path(a.work).resolve()
    sets = build_sets(work, a.images, coco_root)
    print(f"{a.threads} thread(s); load average at start {Path('/proc/loadavg').read_text().split()[:3]}")

    def job(command: str, data: str, path: str) -> dict:
        return {
            "command": command,
            "root": str(sets[data]),
            "path": path,
            "threads": a.threads,
            "out": str(work / "out" / f"{command}_{data}_{path}"),
        }

    def peak(j: dict) -> float:
        out = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(j)], check=True, capture_output=True, text=True
        ).stdout
        return json.loads(out.strip().splitlines()[-1])["peak_rss_gib"]

    n_voc = len((sets["voc"] / "ImageSets/Segmentation/val.txt").read_text().split())
    if "cam" not in a.skip:
        jobs = {
            (data, path): job("cam", data, path) for data in ("voc", "coco81", "coco4") for path in ("all", "labelled")
        }
        voc = time_interleaved({k: j for k, j in jobs.items() if k[0] == "voc"}, n_voc)
        coco = time_interleaved({k: j for k, j in jobs.items() if k[0] != "voc"}, a.images)
        res = {**voc, **coco}
        print("`wsss cam` (run_cam), seconds per image (one process, the configurations taking turns), peak RSS alone:")
        for key, j in jobs.items():
            print(f"  {key[0]:7s} {key[1]:9s} {res[key]:6.3f} s  {peak(j):.2f} GiB", flush=True)
        for data in ("voc", "coco81", "coco4"):
            print(f"  {data}: all / labelled = {res[data, 'all'] / res[data, 'labelled']:.2f}x")
        for path in ("all", "labelled"):
            ratio = res["coco81", path] / res["coco4", path]
            print(f"  81 classes / 4 classes, same images and 3 labelled classes, {path}: {ratio:.2f}x")
    if "predict" not in a.skip:
        print("`wsss predict` without CRF (run_predict; all-class logits), seconds per image, peak RSS alone:")
        for data, n in (("voc", n_voc), ("coco81", a.images)):
            j = job("predict", data, "all")
            t = time_interleaved({data: j}, n)[data]
            print(f"  {data:7s} {t:6.3f} s  {peak(j):.2f} GiB", flush=True)
    if "crf" not in a.skip:
        from wsss.cam import CRFParams

        print("DenseCRF (10 iterations, the seg preset) on ground-truth-made probabilities, seconds per image:")
        print("  set | classes kept (mean) | present | all | all / present | pixels agreeing")
        for r in crf_compare(crf_sets(work, a.images, coco_root), CRFParams.SEG):
            print(
                f"  {r['set']} | {r['kept_mean']:.1f} of {r['classes']} | {r['present_s']:.3f} s | {r['all_s']:.3f} s"
                f" | {r['all_s'] / r['present_s']:.2f}x | {100 * r['agree']:.3f} %",
                flush=True,
            )


if __name__ == "__main__":
    main()
