"""Time one SeCo training iteration of the VOC preset on the CPU against the bare ViT-B/16 step.

All run on the same input (random weights, every SeCo loss active), timed in one process, one
iteration of each in turn (the machine is shared: a changing load then weighs on all alike); the
peak RSS of each is measured alone in its own process (two iterations). Prints the median of
``--iters`` iterations after ``--warmup`` warm-ups, the ratio, and the peak RSS (docs/speed.md#official-cpu:
the official iteration is 8.4x the bare step at 448, batch 1; our target is at most 4.4x), and the
floor beside it: the same network passes on a bare ViT-B/16 with no glue around them
(``_floor_step``).

    .venv/bin/python bench/bench_seco_iter.py --crop 448 --batch 1
    .venv/bin/python bench/bench_seco_iter.py --crop 448 --batch 1 --pieces --threads 1   # the glue, by name
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from wsss.cli_common import script_parser

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


def _timed_update(clock: _PhaseClock, opt, loss, after=None) -> None:
    """The backward and the optimiser step, each under its phase name (the same for every kind)."""
    with clock("backward"):
        opt.zero_grad(set_to_none=True)
        loss.backward()
    with clock("optimiser"):
        opt.step()
        if after is not None:
            after()


def make_step(kind: str, crop: int, batch: int, clock: _PhaseClock):
    """One iteration of ``kind`` (bare / floor / seco) as a function, its phases timed by ``clock``."""
    import torch

    torch.manual_seed(0)
    from wsss.core.config import load_config
    from wsss.engine.trainer import build_optimizer
    from wsss.methods import build_method, placeholder_classes

    over = [
        "model.pretrained=null",
        f"data.crop_size={crop}",
        f"train.batch_size={batch}",
        f"options.queue_size={batch * 12 * 96}",
    ]
    cfg = load_config(REPO / "configs/seco/voc.yaml", over)
    data = _batch(batch, crop, 20)
    if kind == "floor":
        return _floor_step(cfg, data, clock)
    if kind == "seco":
        import wsss.methods.seco as seco_module

        method = build_method(cfg, placeholder_classes(21))
        method.train()
        opt = build_optimizer(method, cfg)
        active = set(cfg.loss.weights)
        # the no-grad multi-scale CAM is timed on its own: it is the largest share of the iteration
        real_passes = seco_module.CamPasses

        class TimedPasses(real_passes):
            def __call__(self, *args, **kwargs):
                return clock.wrap("cam (no grad)", super().__call__)(*args, **kwargs)

        def step() -> None:
            seco_module.CamPasses = TimedPasses
            with clock("forward + losses"):
                terms = method.training_step(data, 2500, active)
                loss = sum(cfg.loss.weights[k] * v for k, v in terms.items())
            seco_module.CamPasses = real_passes
            _timed_update(clock, opt, loss, after=lambda: method.after_step(2500))

        return step
    import timm

    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=20, img_size=crop)
    opt = torch.optim.AdamW(vit.parameters(), lr=6e-5, weight_decay=0.01)

    def step() -> None:
        with clock("forward + losses"):
            loss = torch.nn.functional.multilabel_soft_margin_loss(vit(data["image"]), data["labels"])
        _timed_update(clock, opt, loss)

    return step


KINDS = ("bare", "floor", "seco")


def run_interleaved(crop: int, batch: int, iters: int, warmup: int, threads: int) -> dict[str, dict]:
    """Time the three kinds in one process, one iteration of each in turn: a load that changes during
    the run (the machine is shared) then weighs on all three alike, and the ratios hold."""
    import torch

    torch.set_num_threads(threads)
    clocks = {k: _PhaseClock({}) for k in KINDS}
    steps = {k: make_step(k, crop, batch, clocks[k]) for k in KINDS}
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    for i in range(warmup + iters):
        for k in KINDS:
            clocks[k].recording = i >= warmup
            t = time.perf_counter()
            steps[k]()
            if i >= warmup:
                times[k].append(time.perf_counter() - t)
    out = {}
    for k in KINDS:
        phases = {name: statistics.median(v) for name, v in clocks[k].parts.items()}
        if k == "seco" and "cam (no grad)" in phases:  # the CAM runs inside the forward: report the rest
            phases["forward + losses"] -= phases["cam (no grad)"]
        out[k] = {"median_s": statistics.median(times[k]), "times": times[k], "phases_s": phases}
    return out


#: the glue of the SeCo step, timed by name with ``--pieces``: functions of wsss.methods.seco and SeCo methods
GLUE_FUNCTIONS = (
    "online_pseudo_label",
    "energy_loss_from_logits",
    "balanced_seg_loss",
    "lil_loss",
    "lig_loss",
    "ema_update",
    "cam_to_roi_mask",
    "sample_patch_positions",
    "assign_tags",
    "crop_patches",
)
GLUE_METHODS = ("_ptc", "_teacher_keys", "_enqueue", "_update_prototypes")


def time_pieces(crop: int, batch: int, iters: int, warmup: int, threads: int) -> dict[str, float]:
    """Mean seconds per SeCo iteration spent in each named piece of glue (``GLUE_*``, wrapped by name
    for the measurement and restored after), and the whole iteration under ``"iteration"``."""
    import torch

    import wsss.methods.seco as seco_module

    torch.set_num_threads(threads)
    parts: dict[str, list[float]] = {}
    clock = _PhaseClock(parts)
    step = make_step("seco", crop, batch, _PhaseClock({}))
    owners = [(seco_module, n) for n in GLUE_FUNCTIONS] + [(seco_module.SeCo, n) for n in GLUE_METHODS]
    originals = [(owner, n, getattr(owner, n)) for owner, n in owners]
    try:
        for owner, n, fn in originals:
            setattr(owner, n, clock.wrap(n, fn))
        for i in range(warmup + iters):
            clock.recording = i >= warmup
            with clock("iteration"):
                step()
    finally:
        for owner, n, fn in originals:
            setattr(owner, n, fn)
    return {n: sum(v) / iters for n, v in parts.items()}


def peak_rss_child(kind: str, crop: int, batch: int, threads: int) -> dict:
    """Peak RSS of two iterations of ``kind`` alone in a process (this script, run as a child)."""
    import torch

    from peak_memory import peak_rss_gib  # beside this script, on sys.path when it runs as one

    torch.set_num_threads(threads)
    step = make_step(kind, crop, batch, _PhaseClock({}))
    for _ in range(2):
        step()
    return {"peak_rss_gib": peak_rss_gib()}


def _floor_step(cfg, data: dict, clock: _PhaseClock):
    """The network passes of one SeCo iteration and nothing else, on a bare timm ViT-B/16: the floor
    of the same math measured rather than estimated (attention is quadratic in the tokens, so the
    672-px scale costs more per token than the 448 crop, and the local patches are network passes too).

    No grad: scale 1.0 flipped (B x 448), each other CAM scale with its flip (2B x s), the teacher on
    the P key patches (P*B x 64). With grad: the main crop + global view (2B x 448) and the P query
    patches (P*B x 64), one backward of both, one AdamW step over the ViT. Not included (the glue):
    resizing, upsampling, fusion, PAR, the patch sampling, the losses' own arithmetic, the EMA update.
    """
    import timm
    import torch

    from wsss.core.config import from_dict
    from wsss.methods.seco import SeCoOptions

    o = from_dict(SeCoOptions, cfg.options, "options")
    p, size = o.num_patches, o.patch_size
    b, _, crop, _ = data["image"].shape
    vit = timm.create_model(
        "vit_base_patch16_224", pretrained=False, num_classes=20, img_size=crop, dynamic_img_size=True
    )
    teacher = timm.create_model(
        "vit_base_patch16_224", pretrained=False, num_classes=20, img_size=crop, dynamic_img_size=True
    ).requires_grad_(False)
    opt = torch.optim.AdamW(vit.parameters(), lr=6e-5, weight_decay=0.01)
    g = torch.Generator().manual_seed(1)
    cam_inputs = [
        torch.randn(b if float(s) == 1.0 else 2 * b, 3, int(s * crop), int(s * crop), generator=g)
        for s in cfg.cam.scales
    ]
    main = torch.cat([data["image"], data["w_image"]])
    patches = torch.randn(p * b, 3, size, size, generator=g)

    def step() -> None:
        with clock("cam (no grad)"), torch.no_grad():
            for x in cam_inputs:
                vit.forward_features(x)
        with clock("forward + losses"):
            with torch.no_grad():
                teacher.forward_features(patches)
            logits = vit(main)
            local = vit.forward_features(patches)[:, 0]
            loss = torch.nn.functional.multilabel_soft_margin_loss(logits[:b], data["labels"]) + local.square().mean()
        _timed_update(clock, opt, loss)

    return step


def main() -> None:
    p = script_parser(__doc__)
    p.add_argument("--crop", type=int, default=448)
    p.add_argument("--batch", type=int, default=1)
    p.add_iters(5, warmup=2)
    p.add_threads(2)
    p.add_argument(
        "--pieces",
        action="store_true",
        help="instead: the SeCo iteration alone, the time of each named piece of its glue (wrapped by name)",
    )
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.pieces:
        pieces = time_pieces(a.crop, a.batch, a.iters, a.warmup, a.threads)
        total = pieces.pop("iteration")
        print(
            f"crop {a.crop}, batch {a.batch}, {a.threads} threads, mean of {a.iters} after {a.warmup} warm-ups;"
            f" SeCo iteration {total:.2f} s; its glue, s per iteration (share):"
        )
        for name, sec in sorted(pieces.items(), key=lambda kv: -kv[1]):
            print(f"  {name:24s} {sec:7.3f} s  {100 * sec / total:5.1f} %")
        print("  (_teacher_keys includes the teacher's network pass over the key patches)")
        return
    if a.child:
        print(json.dumps(peak_rss_child(a.child, a.crop, a.batch, a.threads)))
        return
    load = Path("/proc/loadavg").read_text().split()[:3]
    results = run_interleaved(a.crop, a.batch, a.iters, a.warmup, a.threads)
    for kind in KINDS:  # memory: each kind alone in its own process
        cmd = [
            sys.executable,
            __file__,
            "--child",
            kind,
            "--crop",
            str(a.crop),
            "--batch",
            str(a.batch),
            "--threads",
            str(a.threads),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[kind].update(json.loads(out.strip().splitlines()[-1]))
    seco, bare, floor = results["seco"], results["bare"], results["floor"]
    print(
        f"crop {a.crop}, batch {a.batch}, {a.threads} threads, median of {a.iters} after {a.warmup} warm-ups;"
        f" load average {load} at the start"
    )
    rows = (
        ("SeCo iteration (VOC preset, every loss)", seco),
        ("floor: its network passes only", floor),
        ("bare ViT-B/16 fwd+bwd+AdamW", bare),
    )
    for name, r in rows:
        print(f"  {name:40s} {r['median_s']:6.2f} s, peak RSS {r['peak_rss_gib']:.1f} GiB")
    ratio, floor_ratio = seco["median_s"] / bare["median_s"], floor["median_s"] / bare["median_s"]
    print(
        f"  ratio {ratio:.2f}x | floor {floor_ratio:.2f}x | SeCo / floor {seco['median_s'] / floor['median_s']:.2f}x"
        " (official 8.4x at 448/1; target <= 4.4x)"
    )
    print("  phases (median s; SeCo / floor / bare):")
    for name in ("cam (no grad)", "forward + losses", "backward", "optimiser"):
        cells = [r["phases_s"].get(name) for r in (seco, floor, bare)]
        print(f"    {name:18s} " + " / ".join("-" if v is None else f"{v:.2f}" for v in cells))


if __name__ == "__main__":
    main()
