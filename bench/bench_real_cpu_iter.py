"""Time one training iteration of a real-photo CPU preset against its floor, the bare backbone step.

The iteration is the trainer's own (issue 31): ``BatchStream`` draws the batch from the preset's data
(JPEG decode, scale, flip, crop, normalise on the main thread with ``num_workers: 0``), the method's
``training_step``, the backward and the optimiser step; every phase is timed by name. The floor is the
same backbone (ImageNet MobileNetV2, train mode) on a batch of the same shape already in memory:
forward, ``final.mean()``, backward, no data, head or optimiser. The two take turns iteration by
iteration in one process, so a changing load on the shared machine weighs on both alike; the medians
of ``--iters`` iterations after ``--warmup`` are printed with their ratio.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_real_cpu_iter.py --data-root data/ccp-dev --threads 1
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_real_cpu_iter.py --data-root data/ccp-dev \\
        --config configs/rca/real_cpu.yaml --threads 1

``--data-root`` (required): the photos the batches are drawn from, a dataset in the VOC layout with the preset's
train split. BENCHMARKS.md's figures were measured on ccp-dev (the project's 250 Clothing Co-Parsing photos,
about 550 x 825: the JPEG decode and the scaling are part of the iteration), which is not in the repository.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from wsss.cli_common import script_parser

REPO = Path(__file__).resolve().parents[1]


class PhaseClock:
    """Adds the wall time of named phases of the current iteration to ``parts``."""

    def __init__(self) -> None:
        self.parts: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.parts.setdefault(name, []).append(time.perf_counter() - t)


def make_steps(config: str, data_root: str, overrides: list[str]) -> tuple[Callable, Callable, dict]:
    """(iteration(clock), floor(clock), facts) for the preset ``config`` on ``data_root``."""
    import torch

    from wsss.core.config import load_config, resolve_epochs
    from wsss.data import ClsTrainDataset, VOCDataset
    from wsss.data.transforms import TrainAugment
    from wsss.engine.trainer import BatchStream, active_terms, build_optimizer
    from wsss.methods import build_method
    from wsss.methods.base import backbone_from_config

    torch.manual_seed(0)
    cfg = load_config(REPO / config, [f"data.root={data_root}", *overrides])
    train_set = VOCDataset(cfg.data.root, cfg.data.train_split)
    cfg = resolve_epochs(cfg, len(train_set))
    d, t = cfg.data, cfg.train
    method = build_method(cfg, train_set.class_names)
    method.train()
    augment = TrainAugment(d.crop_size, scale_range=d.scale_range, hflip=d.hflip, color_jitter=d.color_jitter)
    dataset = ClsTrainDataset(train_set, augment, extra_views=method.train_transform_views(), seed=cfg.run.seed)
    stream = BatchStream(dataset, t.batch_size, t.micro_batch or t.batch_size, cfg.run.seed, d.num_workers)
    opt = build_optimizer(method, cfg)
    step_no = t.max_iters - 1  # every loss term of the preset active
    active = active_terms(cfg, step_no)

    def iteration(clock: PhaseClock) -> None:
        with clock("data (main thread)"):
            (batch,) = next(stream)
        with clock("forward + losses"):
            terms = method.training_step(batch, step_no, active)
            loss = sum(cfg.loss.weights[k] * v for k, v in terms.items() if k in active)
        with clock("backward"):
            opt.zero_grad(set_to_none=True)
            loss.backward()
        with clock("optimiser"):
            opt.step()
            method.after_step(step_no)

    bare = backbone_from_config(cfg.model)
    bare.train()
    images = torch.randn(t.batch_size, 3, d.crop_size, d.crop_size, generator=torch.Generator().manual_seed(0))

    def floor(clock: PhaseClock) -> None:
        with clock("floor: backbone forward + backward"):
            for p in bare.parameters():
                p.grad = None
            bare(images).final.mean().backward()

    facts = {
        "config": config,
        "data": str(cfg.data.root),
        "batch": t.batch_size,
        "crop": d.crop_size,
        "backbone": cfg.model.backbone,
        "terms": sorted(active),
    }
    return iteration, floor, facts


def main() -> None:
    ap = script_parser(__doc__)
    ap.add_argument("--config", default="configs/cam/real_cpu.yaml", help="the preset timed (default %(default)s)")
    ap.add_data_root(required=True)  # the batches are drawn from it
    ap.add_iters(6, warmup=1)
    ap.add_threads(1)
    ap.add_json(type=Path)
    ap.add_overrides("model.channels_last=false")
    args = ap.parse_args()

    import torch

    old_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        iteration, floor, facts = make_steps(args.config, args.data_root, args.overrides)
        for _ in range(args.warmup):
            iteration(PhaseClock())
            floor(PhaseClock())
        clock = PhaseClock()
        for _ in range(args.iters):
            with clock("iteration"):
                iteration(clock)
            floor(clock)
    finally:
        torch.set_num_threads(old_threads)
    med = {k: statistics.median(v) for k, v in clock.parts.items()}
    floor_s = med["floor: backbone forward + backward"]
    print(
        f"{facts['config']} on {facts['data']}: batch {facts['batch']}, crop {facts['crop']}, "
        f"{facts['backbone']}, {args.threads} thread(s), median of {args.iters} after {args.warmup} warm-up; "
        f"terms {facts['terms']}"
    )
    for k, v in med.items():
        print(f"  {k:38s} {v:7.3f} s  ({v / floor_s:.2f}x the floor)")
    print(f"iteration / floor: {med['iteration'] / floor_s:.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**facts, "threads": args.threads, "median_s": med}, indent=1) + "\n")


if __name__ == "__main__":
    main()
