"""``wsss predict --crf`` beside the plain prediction and beside the CRF alone (issue 81, item 2).

On the synthetic set (``--images`` val photos of ``--size`` px, made under ``--work``) with a random-weights run of
``--config`` (default the MobileNetV2 CAM preset with an ASPP head, ``configs/cam/real_cpu.yaml``; the cost of the
CRF does not depend on the weights), three figures, each a whole command's wall time, start-up included:

- **plain**: ``wsss predict RUN --split val`` (the network's forward passes and the PNGs);
- **crf**: ``wsss predict RUN --split val --crf`` with ``infer.crf_workers`` = ``--workers`` (default: the
  config's default); the network forwards photo i+1 while the pool runs the CRF of photo i;
- **CRF alone**: the same dense CRFs (``crf_label`` on the probabilities the plain command saved with
  ``--save-probs``, float16 read back to float32) in a ``CRFPool`` of the same workers, started inside the timing;
  and the CPU seconds per photo of the CRF in this process alone (the first ``--serial`` photos): its own cost.

Goals (issue 81): crf at most 1.1x the CRF alone on the CPU (the forward passes hidden behind the CRF), at most 2x
the plain prediction on a 16-core GPU machine. The masks of crf and of the CRF alone are compared (share of equal
pixels: the CRF alone reads float16 probabilities, so a few pixels may differ).

    .venv/bin/python bench/bench_crf_overlap.py --work /tmp/b_crf --images 24 --size 320
    python bench/bench_crf_overlap.py --work /tmp/b_crf --images 200 --size 448 --device cuda   # a GPU machine
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def make_run(work: Path, root: Path, config: Path, device: str) -> Path:
    """A run directory of ``config`` with random weights on ``root`` (bench_inference.py's ``parallel_run_dir``)."""
    import torch

    from wsss.core.checkpoint import save_checkpoint
    from wsss.core.config import load_config, save_config
    from wsss.data import VOCDataset
    from wsss.methods import build_method

    run = work / "run"
    if (run / "checkpoints/last.pt").is_file():
        return run
    names = VOCDataset(root, "val").class_names
    over = ["model.pretrained=null", f"data.root={root}", f"run.dir={run}", f"run.device={device}"]
    if "cam/" in str(config):
        over.append("model.decoder=aspp")
    cfg = load_config(config, over)
    torch.manual_seed(0)
    method = build_method(cfg, names).eval()
    save_config(cfg, run / "config.yaml")
    save_checkpoint(
        {"model": method.state_dict(), "num_classes": len(names), "class_names": names, "step": 0},
        run / "checkpoints/last.pt",
    )
    return run


def timed(args: list[str]) -> float:
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "wsss", *args], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"wsss {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - t


def crf_alone(root: Path, run: Path, workers: int, serial: int) -> tuple[float, float, dict[str, np.ndarray]]:
    """(wall of the CRFs in a pool of ``workers``, its start included; CPU seconds per photo of the CRFs of the first
    ``serial`` photos in this process, one after the other; the labels) over the probabilities of ``predict
    --save-probs``."""
    from wsss.cam import CRFPool, crf_label
    from wsss.core.config import load_config
    from wsss.data import VOCDataset
    from wsss.runs.run import present_classes

    ds = VOCDataset(root, "val")
    params = load_config(run / "config.yaml").infer.crf

    def items(ids=ds.ids):  # noqa: ANN001, ANN202
        for id in ids:
            prob = np.load(run / "probs" / "val" / f"{id}.npy").astype(np.float32)
            yield id, ds.load_image(id), prob, present_classes(prob)

    t = time.perf_counter()
    with CRFPool(workers, params) as pool:
        labels = dict(pool.imap(items()))
    wall = time.perf_counter() - t
    some = list(ds.ids[:serial])
    cpu0 = time.process_time()
    for _, image, prob, present in items(some):
        crf_label(image, prob, present, params=params)
    return wall, (time.process_time() - cpu0) / len(some), labels


def main() -> None:
    sys.path.insert(0, str(REPO / "src"))
    from wsss.cli_common import script_parser

    p = script_parser(__doc__)
    p.add_work(required=True, type=Path)
    p.add_argument("--images", type=int, default=24, help="val photos of the synthetic set")
    p.add_argument("--size", type=int, default=320, help="their side, px")
    p.add_argument("--config", type=Path, default=REPO / "configs/cam/real_cpu.yaml")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=None, help="infer.crf_workers (default: the config's default)")
    p.add_argument("--serial", type=int, default=16, help="photos of the CRF's own CPU time, in this process")
    p.add_argument("--json", type=Path, help="write the figures here too")
    a = p.parse_args()
    from wsss.data import generate_synthetic

    root = a.work / "data"
    if not (root / "classes.txt").is_file():
        cores = len(os.sched_getaffinity(0))
        generate_synthetic(root, n_train=2, n_val=a.images, size=a.size, seed=0, n_workers=cores, verbose=False)
    run = make_run(a.work, root, a.config, a.device)
    from wsss.cam.crf import crf_workers
    from wsss.core.config import load_config

    workers = crf_workers(a.workers if a.workers is not None else load_config(run / "config.yaml").infer.crf_workers)
    common = ["--split", "val", "--overwrite", "--quiet", "--device", a.device]
    res: dict = {"images": a.images, "size": a.size, "device": a.device, "cores": len(os.sched_getaffinity(0))}
    timed(["predict", str(run), *common, "--save-probs"])  # the probabilities for the CRF alone; warms the caches
    res["plain_s"] = timed(["predict", str(run), *common])
    print(json.dumps({"plain_s": res["plain_s"]}), flush=True)
    wset = [] if a.workers is None else ["--crf-workers", str(a.workers)]
    res["crf_s"] = timed(["predict", str(run), *common, "--crf", *wset])
    print(json.dumps({"crf_s": res["crf_s"]}), flush=True)
    res["crf_workers"] = workers
    res["crf_alone_s"], res["crf_cpu_s_per_photo"], labels = crf_alone(root, run, workers, a.serial)
    same = total = 0
    from PIL import Image

    for id, label in labels.items():
        ours = np.asarray(Image.open(run / "predictions_crf" / "val" / f"{id}.png"))
        same, total = same + int((ours == label).sum()), total + ours.size
    res["agree"] = same / total
    res["crf_over_plain"] = res["crf_s"] / res["plain_s"]
    res["crf_over_crf_alone"] = res["crf_s"] / res["crf_alone_s"]
    print(json.dumps(res, indent=1), flush=True)
    print(
        f"predict --crf {res['crf_s']:.1f} s = {res['crf_over_plain']:.2f}x the plain prediction "
        f"({res['plain_s']:.1f} s), {res['crf_over_crf_alone']:.2f}x the CRF alone ({res['crf_alone_s']:.1f} s in "
        f"{workers} workers; its own cost {res['crf_cpu_s_per_photo']:.3f} s CPU a photo), {a.images} photos of "
        f"{a.size} px, {res['cores']} cores, {a.device}; masks agree on {res['agree']:.4%} of pixels"
    )
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
