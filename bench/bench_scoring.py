"""Where the time of ``wsss sweep-bkg`` and ``wsss eval`` goes, per photo, and what the run's device and a
read-ahead of the files change (issue 81, item 2: "sweep-bkg and eval score on the run's device, or say why the CPU
is faster").

On a dataset with masks (``--data``, default ``data/ccp-dev``: the project's 250 Clothing Co-Parsing photos, not in
the repository; ``--split``; or ``--synthetic N`` photos of ``--size`` px), with a run folder of the CAM preset
(random weights: only its config is read) whose ``cams/<split>`` this script writes itself: per photo, the CAM of
its labelled classes as smooth random maps at the mask's size (float16, as ``wsss cam`` saves them), and the seed
at level 0.3 as the prediction PNG that ``eval`` scores. Then, per photo (mean over the photos, ``--rounds``
passes, the fastest pass; the parts in CPU seconds of the one thread that runs them, so that other work on the
machine does not count; the device's part in wall time):

- sweep-bkg: the mask's PNG decode; before issue 81, the CAM file's read into a map per class and the per-level
  scoring (a seed map and a confusion matrix per level and pair); now, the read of the file's classes' maps and the
  level histogram (``LevelHistogram.add``) on the CPU and on ``--device``;
- eval: the prediction's PNG decode, the mask's, and the confusion matrix with the co-occurrence counts (the
  count of the (gt, pred) value pairs; the general path, the only one before issue 81), and that count on
  ``--device`` (transfer and copy back included);
- each command's whole pass (``sweep_run_bkg``, ``evaluate``) in this process, without and with ``--ahead`` photos
  read ahead in threads, and the sweep on ``--device``: wall seconds, and CPU seconds of all the process's threads.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_scoring.py --work /tmp/b_scoring --data data/ccp-dev --split val
    python bench/bench_scoring.py --work /tmp/b_scoring --synthetic 100 --size 448 --device cuda   # a GPU machine
    .venv/bin/python bench/bench_scoring.py --work /tmp/b_scoring --passes-only --src OLD_CHECKOUT/src  # before
"""

from __future__ import annotations

import json
import os
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PER_PHOTO = (
    "sweep: mask PNG",
    "sweep: CAM file, every class (before)",
    "sweep: per-level scoring (before)",
    "sweep: CAM file, its classes",
    "sweep: level histogram cpu",
)


def smooth_cam(rng: np.random.Generator, k: int, h: int, w: int) -> np.ndarray:
    """(k, h, w) float32 in [0, 1]: random 8x8 grids, bilinear to the mask's size (a CAM's blobs, cheaply)."""
    import torch

    grid = torch.from_numpy(rng.random((1, k, 8, 8)).astype(np.float32))
    return torch.nn.functional.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)[0].numpy()


def make_inputs(work: Path, data: Path, split: str) -> tuple[Path, Path]:
    """(the run folder with cams/<split>, the folder of prediction PNGs); made once under ``work``."""
    sys.path.insert(0, str(REPO / "bench"))
    from bench_crf_overlap import make_run
    from wsss.data import VOCDataset
    from wsss.evaluation.bkg_sweep import seeds_at_thresholds
    from wsss.utils.io import save_cam, save_label_png

    run = make_run(work, data, REPO / "configs/cam/real_cpu.yaml", "cpu")
    cams, preds = run / "cams" / split, work / "pred" / split
    ds = VOCDataset(data, split)
    ids = [i for i in ds.ids if ds.has_mask(i)]
    if not (preds / f"{ids[-1]}.png").is_file():
        rng = np.random.default_rng(0)
        for i in ids:
            gt, labels = ds.load_mask(i), ds.labels(i)
            cam = smooth_cam(rng, len(labels), *gt.shape) * labels[:, None, None]
            cam = cam.astype(np.float16).astype(np.float32)
            save_cam(cams, i, cam, labels)
            save_label_png(preds / f"{i}.png", seeds_at_thresholds(cam, labels, [0.3])[0].astype(np.uint8))
    return run, preds


def per_level_scoring(cam, labels, gt, meters, pair_meters, thresholds, pairs) -> None:
    """One photo of the sweep as wsss scored it before issue 81: a seed map and a confusion matrix per level."""
    from wsss.evaluation.bkg_sweep import seeds_at_thresholds, two_level_labels

    for meter, seed in zip(meters, seeds_at_thresholds(cam, labels, thresholds)):
        meter.update(gt, seed)
    for meter, lab in zip(pair_meters, two_level_labels(cam, labels, pairs)):
        where = (lab != 255) & (gt != 255)
        meter.update(np.where(where, gt, 255), lab)


def general_add(acc, gt: np.ndarray, pred: np.ndarray, labels: np.ndarray) -> None:
    """``_Accumulator.add`` by its general path, the only one before issue 81: range checks, then the histogram in a
    dozen passes over the pixels."""
    from wsss.evaluation.metrics import _hist

    acc._check_range(gt, "ground-truth", "gt")
    acc._check_range(pred, "prediction", "pred")
    ext = _hist(gt, pred, acc.num_classes, acc.ignore_index, pred_ignore_column=True)
    acc.cooc.update_from_hist(ext, labels)
    acc.ext += ext


def pair_count_on(device: str, gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """The uint8 path's count of (gt, pred) value pairs on ``device``, moved back to the host."""
    import torch

    g, p = (torch.from_numpy(a).to(device) for a in (gt, pred))
    return torch.bincount((g.int() << 8 | p.int()).reshape(-1), minlength=65536).cpu().numpy()


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def split_per_photo(run: Path, preds: Path, data: Path, split: str, device: str) -> dict[str, float]:
    """Seconds per photo of each part, one pass (the parts timed one after the other, nothing overlapped)."""
    from wsss.core.config import load_run_config
    from wsss.data import VOCDataset
    from wsss.evaluation.bkg_sweep import DEFAULT_PAIRS, DEFAULT_THRESHOLDS, LevelHistogram
    from wsss.evaluation.evaluator import _Accumulator
    from wsss.evaluation.metrics import ConfusionMeter
    from wsss.utils.io import load_cam_of, load_labelled_cam_of, read_label_png

    ds = VOCDataset(data, split)
    ids = [i for i in ds.ids if ds.has_mask(i)]
    cfg = load_run_config(run)
    pairs = [*DEFAULT_PAIRS, (cfg.cam.high_thre, cfg.cam.low_thre)]
    levels = [*DEFAULT_THRESHOLDS, *(t for p in pairs for t in p)]
    C = ds.num_classes
    meters = [ConfusionMeter(C) for _ in DEFAULT_THRESHOLDS]
    pair_meters = [ConfusionMeter(C) for _ in pairs]
    hists = {"cpu": LevelHistogram(levels, C, "cpu")}
    if device != "cpu":
        hists[device] = LevelHistogram(levels, C, device)
    acc = _Accumulator(ds.class_names)
    general = _Accumulator(ds.class_names)
    on_device = [f"sweep: level histogram {device}"] if device != "cpu" else []
    pairs_on_device = [f"eval: the value pairs' count on {device}"] if device != "cpu" else []
    t = dict.fromkeys(
        [
            *PER_PHOTO,
            *on_device,
            "eval: prediction PNG",
            "eval: mask PNG",
            "eval: confusion + co-occurrence",
            "eval: the same, general path (before)",
            *pairs_on_device,
        ],
        0.0,
    )
    for i in ids:
        t0 = time.thread_time()
        gt = ds.load_mask(i)
        t1 = time.thread_time()
        cam = load_cam_of(run / "cams" / split, i, C - 1)
        t2 = time.thread_time()
        labels = ds.labels(i)
        per_level_scoring(cam, labels, gt, meters, pair_meters, DEFAULT_THRESHOLDS, pairs)
        t3 = time.thread_time()
        classes, maps = load_labelled_cam_of(run / "cams" / split, i, C - 1)
        t3b = time.thread_time()
        hists["cpu"].add(maps, labels, gt, classes)
        t4 = time.thread_time()
        w = time.perf_counter()
        if device != "cpu":  # its wall time: the thread waits for the device
            hists[device].add(maps, labels, gt, classes)
            sync(device)
        t5 = t4 + time.perf_counter() - w
        t5b = time.thread_time()
        pred = read_label_png(preds / f"{i}.png")
        t6 = time.thread_time()
        gt = ds.load_mask(i)
        t7 = time.thread_time()
        acc.add(gt, pred, ds.labels(i), i)
        t8 = time.thread_time()
        general_add(general, gt, pred, ds.labels(i))
        t9 = time.thread_time()
        w = time.perf_counter()
        if device != "cpu":  # what the device could take of eval: the count of the (gt, pred) pairs, moved back
            pair_count_on(device, gt, pred)
        t10 = time.perf_counter() - w
        times = [
            t1 - t0,
            t2 - t1,
            t3 - t2,
            t3b - t3,
            t4 - t3b,
            *([t5 - t4] if on_device else []),
            t6 - t5b,
            t7 - t6,
            t8 - t7,
            t9 - t8,
            *([t10] if on_device else []),
        ]
        for key, dt in zip(t, times, strict=True):
            t[key] += dt
    np.testing.assert_array_equal(acc.ext, general.ext)
    for meter, thre in zip(meters, DEFAULT_THRESHOLDS):  # the histogram counts what the per-level matrices count
        for h in hists.values():
            assert np.array_equal(h.threshold_hist(thre), meter.hist), thre
    for meter, (high, low) in zip(pair_meters, pairs):
        for h in hists.values():
            assert np.array_equal(h.pair_hist(high, low)[0], meter.hist), (high, low)
    return {k: v / len(ids) for k, v in t.items()}


def whole_passes(run: Path, preds: Path, data: Path, split: str, device: str, ahead: int) -> dict[str, float]:
    """Wall seconds and CPU seconds (every thread of this process) per photo of each command's whole pass in this
    process (start-up and config reading left out)."""
    from wsss.data import VOCDataset
    from wsss.evaluation import evaluate
    from wsss.evaluation.bkg_sweep import sweep_run_bkg

    ds = VOCDataset(data, split)
    n = sum(ds.has_mask(i) for i in ds.ids)
    out: dict[str, float] = {}
    results = []

    def timed(name: str, fn, dev: str = "cpu"):
        w, c = time.perf_counter(), time.process_time()
        got = fn()
        sync(dev)
        out[f"{name} wall"] = (time.perf_counter() - w) / n
        out[f"{name} cpu"] = (time.process_time() - c) / n
        return got

    for dev in dict.fromkeys(["cpu", device]):
        for a in (0, ahead):
            sweep = partial(
                sweep_run_bkg,
                run,
                split,
                data_root=str(data),
                json_path=run / "bkg_sweep.json",
                overrides=[f"run.device={dev}"],
                read_ahead=a,
            )
            res, _ = timed(f"sweep-bkg {dev}, read-ahead {a},", sweep, dev)
            results.append((res["miou"], res["pairs"]))
    for a in (0, ahead):
        timed(f"eval, read-ahead {a},", partial(evaluate, preds, data, split, read_ahead=a))
    assert all(r == results[0] for r in results), "the sweep's numbers differ between devices or read-aheads"
    return out


def plain_passes(run: Path, preds: Path, data: Path, split: str) -> dict[str, float]:
    """Wall and CPU seconds per photo of each command's pass with its defaults on the CPU, through the functions
    both the code before issue 81 and after have (``--src``); a digest of the scores shows they agree."""
    import hashlib

    from wsss.evaluation import evaluate
    from wsss.evaluation.bkg_sweep import sweep_run_bkg

    out: dict[str, float] = {}
    n = len(list((run / "cams" / split).glob("*.npz")))
    for name, fn in (
        (
            "sweep-bkg",
            partial(
                sweep_run_bkg,
                run,
                split,
                data_root=str(data),
                json_path=run / "bkg_sweep.json",
                overrides=["run.device=cpu"],
            ),
        ),
        ("eval", partial(evaluate, preds, data, split)),
    ):
        w, c = time.perf_counter(), time.process_time()
        got = fn()
        out[f"{name}, defaults, wall"] = (time.perf_counter() - w) / n
        out[f"{name}, defaults, cpu"] = (time.process_time() - c) / n
        scores = (got[0]["miou"], got[0]["pairs"]) if name == "sweep-bkg" else got.to_json()["scores"]
        print(f"{name} scores' digest: {hashlib.sha256(repr(scores).encode()).hexdigest()[:16]}")
    return out


def main() -> None:
    src = sys.argv[sys.argv.index("--src") + 1] if "--src" in sys.argv else str(REPO / "src")
    sys.path.insert(0, src)
    from wsss.cli_common import script_parser

    p = script_parser(__doc__)
    p.add_work(required=True, type=Path)
    p.add_argument("--data", type=Path, default=REPO / "data/ccp-dev", help="dataset root (default data/ccp-dev)")
    p.add_argument("--split", default="val")
    p.add_argument(
        "--synthetic",
        type=int,
        default=0,
        help="instead of --data: this many synthetic val photos of "
        "--size px, made under --work (a machine without the shared data)",
    )
    p.add_argument("--size", type=int, default=448)
    p.add_argument("--device", default="cpu")
    p.add_argument("--ahead", type=int, default=4, help="photos read ahead in threads (default 4)")
    p.add_argument("--rounds", type=int, default=2, help="passes; the fastest is kept (default 2)")
    p.add_argument("--json", type=Path)
    p.add_argument(
        "--src",
        default=str(REPO / "src"),
        help="the wsss sources to time (default this checkout's; "
        "with --passes-only, e.g. a checkout of the code before issue 81)",
    )
    p.add_argument("--passes-only", action="store_true", help="only each command's pass with its defaults")
    a = p.parse_args()
    import torch

    if a.synthetic:
        from wsss.data import generate_synthetic

        a.data, a.split = a.work / "data", "val"
        if not (a.data / "classes.txt").is_file():
            generate_synthetic(a.data, n_train=2, n_val=a.synthetic, size=a.size, seed=0, verbose=False)
    run, preds = make_inputs(a.work, a.data, a.split)
    if a.passes_only:
        split, whole = {}, {k: min(v) for k, v in _rounds(lambda: plain_passes(run, preds, a.data, a.split), a.rounds)}
    else:
        split = {
            k: min(v) for k, v in _rounds(lambda: split_per_photo(run, preds, a.data, a.split, a.device), a.rounds)
        }
        whole = {
            k: min(v)
            for k, v in _rounds(lambda: whole_passes(run, preds, a.data, a.split, a.device, a.ahead), a.rounds)
        }
    cores = len(os.sched_getaffinity(0))
    import wsss

    print(f"\nwsss from {Path(wsss.__file__).parents[1]}")
    print(
        f"{a.data.name} {a.split}, torch {torch.__version__}, {torch.get_num_threads()} torch threads, {cores} "
        f"cores; ms per photo, the fastest of {a.rounds} passes; "
        f"the load average {os.getloadavg()[0]:.1f} at the end"
    )
    for k, v in {**split, **whole}.items():
        print(f"  {k:<44} {1000 * v:8.2f}")
    if a.json:
        a.json.write_text(json.dumps({"split": split, "whole": whole, "cores": cores}, indent=1))


def _rounds(fn, rounds: int) -> list[tuple[str, list[float]]]:
    """Each figure of ``fn()``'s dict over ``rounds`` calls."""
    got: dict[str, list[float]] = {}
    for _ in range(rounds):
        for k, v in fn().items():
            got.setdefault(k, []).append(v)
    return list(got.items())


if __name__ == "__main__":
    main()
