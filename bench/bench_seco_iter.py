"""Time one SeCo training iteration of the VOC preset on the CPU against the bare ViT-B/16 step.

Both run on the same input (random weights, every SeCo loss active), each in its own process so the
peak RSS is its own. Prints the median of ``--iters`` iterations after ``--warmup`` warm-ups, the
ratio, and the peak RSS (performance.md: the official iteration is 8.4x the bare step at 448,
batch 1; our target is at most 4.2x).

    .venv/bin/python bench/bench_seco_iter.py --crop 448 --batch 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _batch(b: int, s: int, num_fg: int):
    import torch

    g = torch.Generator().manual_seed(0)
    labels = torch.zeros(b, num_fg)
    labels[:, 14] = 1  # person
    labels[0, 0] = 1
    return {
        "image": torch.randn(b, 3, s, s, generator=g),
        "w_image": torch.randn(b, 3, s, s, generator=g),
        "s_image": torch.randn(b, 3, s, s, generator=g),
        "labels": labels,
        "label_idx": torch.full((b,), -1),
        "img_box": torch.tensor([[0, s, 0, s]] * b),
    }


def run_child(kind: str, crop: int, batch: int, iters: int, warmup: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    from wsss.core.config import load_config
    from wsss.engine.trainer import build_optimizer
    from wsss.methods import build_method

    over = ["model.pretrained=null", f"data.crop_size={crop}", f"train.batch_size={batch}",
            f"options.queue_size={batch * 12 * 96}"]  # fmt: skip
    cfg = load_config(REPO / "configs/seco/voc.yaml", over)
    data = _batch(batch, crop, 20)
    times = []
    parts: dict[str, list[float]] = {}  # seconds of each phase, per timed iteration
    clock = _PhaseClock(parts)
    if kind == "seco":
        import wsss.methods.seco as seco_module

        method = build_method(cfg, 21)
        method.train()
        opt = build_optimizer(method, cfg)
        active = set(cfg.loss.weights)
        # the no-grad multi-scale CAM is timed on its own: it is the largest share of the iteration
        seco_module.multi_scale_cam = clock.wrap("cam (no grad)", seco_module.multi_scale_cam)

        def step() -> None:
            with clock("forward + losses"):
                terms = method.training_step(data, 2500, active)
                loss = sum(cfg.loss.weights[k] * v for k, v in terms.items())
            with clock("backward"):
                opt.zero_grad(set_to_none=True)
                loss.backward()
            with clock("optimiser"):
                opt.step()
                method.after_step(2500)
    else:
        import timm

        vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=20, img_size=crop)
        opt = torch.optim.AdamW(vit.parameters(), lr=6e-5, weight_decay=0.01)

        def step() -> None:
            with clock("forward + losses"):
                loss = torch.nn.functional.multilabel_soft_margin_loss(vit(data["image"]), data["labels"])
            with clock("backward"):
                opt.zero_grad(set_to_none=True)
                loss.backward()
            with clock("optimiser"):
                opt.step()

    for i in range(warmup + iters):
        clock.recording = i >= warmup
        t = time.perf_counter()
        step()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    phases = {k: statistics.median(v) for k, v in parts.items()}
    if "cam (no grad)" in phases:  # the CAM runs inside the forward: report the rest of it
        phases["forward + losses"] -= phases["cam (no grad)"]
    return {
        "kind": kind,
        "median_s": statistics.median(times),
        "times": times,
        "phases_s": phases,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


class _PhaseClock:
    """Adds the wall time of named phases to ``parts`` while ``recording``."""

    def __init__(self, parts: dict[str, list[float]]):
        self.parts, self.recording = parts, False

    @contextlib.contextmanager
    def __call__(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            if self.recording:
                self.parts.setdefault(name, []).append(time.perf_counter() - t)

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            with self(name):
                return fn(*args, **kwargs)

        return timed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--crop", type=int, default=448)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(run_child(a.child, a.crop, a.batch, a.iters, a.warmup, a.threads)))
        return
    results = {}
    for kind in ("bare", "seco"):
        cmd = [sys.executable, __file__, "--child", kind, "--crop", str(a.crop), "--batch", str(a.batch),
               "--iters", str(a.iters), "--warmup", str(a.warmup), "--threads", str(a.threads)]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[kind] = json.loads(out.strip().splitlines()[-1])
    seco, bare = results["seco"], results["bare"]
    print(f"crop {a.crop}, batch {a.batch}, {a.threads} threads, median of {a.iters} after {a.warmup} warm-ups")
    print(
        f"  SeCo iteration (VOC preset, every loss): {seco['median_s']:.2f} s, peak RSS {seco['peak_rss_gib']:.1f} GiB"
    )
    print(
        f"  bare ViT-B/16 fwd+bwd+AdamW:             {bare['median_s']:.2f} s, peak RSS {bare['peak_rss_gib']:.1f} GiB"
    )
    print(f"  ratio: {seco['median_s'] / bare['median_s']:.2f}x (official 8.4x at 448/1; target <= 4.2x)")
    print("  phases (median s; SeCo / bare):")
    for name in ("cam (no grad)", "forward + losses", "backward", "optimiser"):
        sv, bv = seco["phases_s"].get(name), bare["phases_s"].get(name)
        print(f"    {name:18s} {sv:6.2f} / " + (f"{bv:.2f}" if bv is not None else "-"))


if __name__ == "__main__":
    main()
