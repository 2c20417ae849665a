"""SeCo's VOC training iteration and the inference commands on a GPU (docs/speed.md#official-gpu).

Prints, as one JSON object:
- seconds per iteration of configs/seco/voc.yaml as it is (448 crops, batch 4, ViT-B/16, every loss active from
  the start, random weights: no ViT weights exist here) in float32 and under bf16 autocast (``run.amp``): the
  median of the logged ``sec_per_iter`` after the warm-up steps (each step ends on the loss's readback, so a step's
  time is the GPU's). The official log: 1.76 s per iteration on one RTX 3090 (docs/speed.md#official-gpu);
- images per second of ``wsss cam`` (the preset's CAM scales, each with its flip) and ``wsss predict --crf``
  (the preset's segmentation scales, DenseCRF in ``infer.crf_workers`` processes) over ``--images`` synthetic
  448-px photos, the whole command timed (the run's loading included);
- the peak GPU memory of the training process (``torch.cuda.max_memory_allocated``).

    python bench/bench_gpu.py --out /tmp/bench_gpu --images 200
    python bench/bench_gpu.py --out /tmp/dry --images 4 --iters 3 --warmup 1 --device cpu data.crop_size=64 \
        "model.backbone_kwargs={patch_size: 8, depth: 2, embed_dim: 32, num_heads: 2, img_size: 64}" \
        options.num_patches=2 options.patch_size=16 options.queue_size=64 options.proj_hidden_dim=16 \
        infer.square_size=64 infer.cam_input_size=64 "infer.scales=[1.0]"   # a dry run of the script on a CPU
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def train_seco(root: Path, run: Path, amp: str, iters: int, warmup: int, device: str, extra: list[str]) -> dict:
    import torch

    from wsss.core.config import load_config
    from wsss.engine.defaults import build_trainer

    over = {
        "data.root": root,
        "data.train_split": "train",
        "data.val_split": "''",
        "run.dir": run,
        "run.amp": amp,
        "run.device": device,
        "model.pretrained": "null",
        "data.num_workers": 8,
        "train.max_iters": iters,
        "train.log_iters": 1,
        "train.eval_iters": 10**6,
        "train.ckpt_iters": 10**6,
        # every loss from the first steps (the preset stages them over 2000 iterations); LIG once the
        # prototypes exist (SeCo refuses it before their first update)
        "options.update_prototype": 1,
        "options.cam2mask": 1,
        "loss.start_iters": "{lil: 0, lig: 1, seg: 0, reg: 0}",
    }
    cfg = load_config(REPO / "configs/seco/voc.yaml", [*(f"{k}={v}" for k, v in over.items()), *extra])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    build_trainer(cfg, progress=False).train()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    times = [r["sec_per_iter"] for r in records if "sec_per_iter" in r and r["step"] > warmup]
    terms = sorted(k for k in records[-1] if k.startswith("loss/"))
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return {
        "sec_per_iter_median": statistics.median(times),
        "steps_timed": len(times),
        "terms": terms,
        "peak_gpu_gib": peak,
    }


def timed(args: list[str]) -> float:
    from wsss.cli import main

    t0 = time.perf_counter()
    assert main(args) == 0, args
    return time.perf_counter() - t0


def main() -> None:
    sys.path.insert(0, str(REPO / "src"))
    from wsss.cli_common import script_parser

    p = script_parser(__doc__)
    p.add_out(required=True, type=Path)  # the dataset and the runs
    p.add_argument("--images", type=int, default=200, help="val photos for the inference commands")
    p.add_iters(20, warmup=5)
    p.add_argument("--device", default="cuda", help="cuda (default); cpu with overrides for a dry run of the script")
    p.add_overrides("data.crop_size=64", what="training (a dry run's tiny ViT)")
    a = p.parse_args()
    from wsss.data import generate_synthetic

    root = a.out / "data"
    if not (root / "classes.txt").is_file():
        generate_synthetic(root, n_train=64, n_val=a.images, size=448, seed=0, verbose=False)
    res: dict = {}
    for amp in ("none", "bf16"):
        res[f"seco_voc_train_{amp}"] = train_seco(
            root, a.out / f"seco_{amp}", amp, a.iters, a.warmup, a.device, a.overrides
        )
        print(json.dumps({amp: res[f"seco_voc_train_{amp}"]}), flush=True)
    run, dev = str(a.out / "seco_bf16"), ["--device", a.device]
    cam = timed(["cam", run, "--split", "val", "--quiet", "--overwrite", *dev])
    pred = timed(["predict", run, "--split", "val", "--crf", "--quiet", "--overwrite", *dev])
    res["cam_images_per_s"] = a.images / cam
    res["predict_crf_images_per_s"] = a.images / pred
    import torch

    res["device"] = torch.cuda.get_device_name() if a.device.startswith("cuda") else a.device
    res["torch"] = torch.__version__
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
