"""Operators dispatched per iteration, wsss beside the official codes (issue 81, item 1).

A GPU runs one kernel (or more) per dispatched operator, and launching a kernel costs a few microseconds of the
host's time whatever its size: an iteration made of many small operators is bound by the host, not by the GPU.
This script counts the ATen operators one unit of work dispatches, with a ``TorchDispatchMode`` that sees every
operator below autograd (forward, backward and optimiser alike; composite operators arrive decomposed, as the
device's kernels run them). It prints two figures per unit: every operator, and the "kernels": the operators
that are not views (``OpOverload.is_view``: a view launches nothing).

Units (the same inputs as ``bench_excel_official.py`` and ``bench_clip_es_official.py``, whose set-up it reuses):
- ExCEL's training iteration (batch of 4 320-px crops, before LVC and with LVC): one iteration after one warm-up,
  both codes;
- ExCEL's training-free labels and CLIP-ES's CAMs, per photo: a whole command on 2 photos and on 6 (separate
  processes), (count of 6 - count of 2) / 4, so the model's build and the text features drop out. wsss: ``wsss cam``
  (and ``wsss pseudo --refine excel``) run in the worker's process with ``data.num_workers=0``; the official
  ``build_validation`` and ``generate_cams_voc12.py`` likewise (their loaders have no workers);
- SeCo's training iteration (configs/seco/voc.yaml: 448-px crops, batch 4, every loss active): wsss only. The
  official SeCo's iteration needs rloss's ``bilateralfilter`` extension built from fetched code, which this
  repository never builds (docs/speed.md): its count stays unmeasured here.

On the CPU, wsss's PAR takes the branch a GPU takes (``wsss.cam.par.gathered``) so that the count is the
GPU's; everything else has no device branch on these paths. ``--device cuda`` counts on the GPU itself, and with
``--time N`` also times N iterations of SeCo (wall, each ending on ``torch.cuda.synchronize``).

    .venv/bin/python bench/bench_op_count.py --work /tmp/b_ops --excel .official/ExCEL --clip-es .official/CLIP-ES \
        --deps /tmp/i81deps
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import subprocess
import sys
import time
import types
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SECO_NOTE = "not run (needs bilateralfilter)"  # the official SeCo: rloss's extension, built only in a device call


class OpCount(TorchDispatchMode):
    """Counts every ATen operator dispatched while it is active, by name (``aten.mm.default``)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.views = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.ops[str(func)] += 1
        self.views += bool(func.is_view)
        return func(*args, **(kwargs or {}))

    def summary(self) -> dict[str, Any]:
        total = sum(self.ops.values())
        return {"ops": total, "kernels": total - self.views, "top": self.ops.most_common(12)}


def counted(fn, device: str) -> dict[str, Any]:  # noqa: ANN001
    """``fn()`` once under :class:`OpCount` (after its warm-up by the caller)."""
    if device == "cuda":
        torch.cuda.synchronize()
    with OpCount() as c:
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
    return c.summary()


def gpu_branch() -> None:
    """On the CPU, PAR as a GPU runs it (the neighbours gathered: ``wsss.cam.par.gathered``), so that the count is
    the GPU's."""
    from wsss.cam import par

    par.gathered = lambda device: True


# -- workers, each in its own process ---------------------------------------------------------------------------


def _excel_ns(a: argparse.Namespace) -> argparse.Namespace:
    w = a.work / "excel"
    return argparse.Namespace(official=a.excel.resolve(), weights=w / "vitb16_random_jit.pt", data=w / "VOC",
                              batch=w / "batch.npz", iters=1, device=a.device, profile=0, split=a.split,
                              result=a.result.with_suffix(".npz"), work=w)  # fmt: skip


def worker_excel_train(a: argparse.Namespace, code: str) -> dict:
    import bench_excel_official as bx

    def measured(body, modes: dict[str, int], _a: argparse.Namespace) -> dict:  # noqa: ANN001
        out = {}
        for name, n_iter in modes.items():
            body(n_iter)  # warm-up: lazy builds (the official bank's first use, the optimiser's state)
            out[name] = counted(lambda n=n_iter: body(n), a.device)
        return out

    bx.measured = measured
    ns = _excel_ns(a)
    return bx.official_train(ns) if code == "official" else bx.wsss_train(ns)


def worker_excel_free(a: argparse.Namespace, code: str) -> dict:
    import bench_excel_official as bx

    ns = _excel_ns(a)
    if code == "official":
        return {"free": counted(lambda: bx.official_free(ns), a.device)}
    from wsss.cli import main

    run = str(a.work / "excel" / "run")

    def both() -> None:
        for cmd in (["cam", run], ["pseudo", run, "--refine", "excel"]):
            assert main([*cmd, "--split", a.split, "--overwrite", "--quiet"]) == 0, cmd

    return {"free": counted(both, a.device)}


def _pkg_resources() -> None:
    """The official ``clip/clip.py`` reads ``pkg_resources.packaging``; recent setuptools lack the module."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        import packaging.version

        sys.modules["pkg_resources"] = types.SimpleNamespace(packaging=packaging)  # type: ignore[assignment]


def worker_clip_es(a: argparse.Namespace, code: str) -> dict:
    data = a.work / "clip_es" / "VOC"
    if code == "official":
        script = a.clip_es / ("generate_cams_voc12.py" if a.device == "cuda" else "generate_cams_voc12_cpu.py")
        _pkg_resources()
        os.chdir(a.clip_es)
        sys.path[:0] = [str(a.clip_es), *a.deps.split(os.pathsep)]
        sys.argv = [script.name, "--img_root", str(data / "JPEGImages"), "--split_file",
                    str(data / "ImageSets/Segmentation" / f"{a.split}.txt"), "--cam_out_dir",
                    str(a.work / "clip_es" / f"official_{a.split}"), "--model",
                    str(a.work / "clip_es" / "vitb16_random.pt")]  # fmt: skip
        return {"cams": counted(lambda: runpy.run_path(str(script), run_name="__main__"), a.device)}
    from wsss.cli import main

    run = str(a.work / "clip_es" / "run")
    return {"cams": counted(lambda: main(["cam", run, "--split", a.split, "--overwrite", "--quiet"]), a.device)}


def worker_seco(a: argparse.Namespace) -> dict:
    """configs/seco/voc.yaml's iteration (bench_seco_iter.py's inputs), on ``--device``: count, and ``--time``."""
    from bench_seco_iter import _batch
    from wsss.core.config import load_config
    from wsss.engine.trainer import build_optimizer
    from wsss.methods import build_method, placeholder_classes

    torch.manual_seed(0)
    crop, batch = a.seco_crop, 4
    cfg = load_config(REPO / "configs/seco/voc.yaml", ["model.pretrained=null", f"data.crop_size={crop}",
                      f"train.batch_size={batch}", f"options.queue_size={batch * 12 * 96}"])  # fmt: skip
    data = {k: v.to(a.device) for k, v in _batch(batch, crop, 20).items()}
    method = build_method(cfg, placeholder_classes(21)).to(a.device)
    method.train()
    opt = build_optimizer(method, cfg)
    weights = dict(cfg.loss.weights)

    def step() -> None:
        terms = method.training_step(data, 2500, set(weights))
        loss = sum(weights[k] * v for k, v in terms.items())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        method.after_step(2500)

    step()
    res: dict[str, Any] = {"iteration": counted(step, a.device)}
    if a.time:
        sync = torch.cuda.synchronize if a.device == "cuda" else lambda: None
        times = []
        for _ in range(a.time):
            sync()
            t = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - t)
        res["seconds"] = sorted(times)[len(times) // 2]
        res["seconds_all"] = times
        if a.device == "cuda":
            res["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return res


def worker(a: argparse.Namespace) -> None:
    if a.device == "cpu":
        torch.set_num_threads(1)
        gpu_branch()
    unit, code = a.worker.split(":")
    if unit == "seco":
        res = worker_seco(a)
    else:
        res = {"excel_train": worker_excel_train, "excel_free": worker_excel_free, "clip_es": worker_clip_es}[unit](
            a, code
        )
    a.result.write_text(json.dumps(res))


# -- the driver -------------------------------------------------------------------------------------------------


class Driver:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.env = dict(os.environ) if a.device == "cuda" else {**os.environ, "OMP_NUM_THREADS": "1"}
        self.common = ["--work", str(a.work), "--device", a.device, "--deps", a.deps, "--seco-crop", str(a.seco_crop),
                       "--time", str(a.time)]  # fmt: skip
        if a.excel:
            self.common += ["--excel", str(a.excel.resolve())]
        if a.clip_es:
            self.common += ["--clip-es", str(a.clip_es.resolve())]

    def run(self, unit: str, code: str, split: str = "all") -> dict:
        result = self.a.work / f"ops_{unit}_{code}_{split}.json"
        env = self.env
        if code == "official":
            env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [self.a.deps, env.get("PYTHONPATH")]))}
        cwd = self.a.work / "excel" / "official_cwd" if unit.startswith("excel") else REPO
        cmd = [sys.executable, str(Path(__file__).resolve()), *self.common, "--worker", f"{unit}:{code}",
               "--split", split, "--result", str(result)]  # fmt: skip
        subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL if self.a.quiet else None)
        return json.loads(result.read_text())


def prepare_excel(a: argparse.Namespace) -> None:
    """bench_excel_official.py's weights, photos and batch, the official bank (a warm-up run of its own
    training-free labels on 2 photos) and the ``excel`` run of wsss."""
    import bench_excel_official as bx

    ns = argparse.Namespace(official=a.excel, deps=a.deps, work=a.work / "excel", copies=1, iters=1,
                            device=a.device, profile=0)  # fmt: skip
    d = bx.Driver(ns)
    if not any((d.cwd / "attributes_text").iterdir()):
        d.official_free("two")
    if not (d.run / "config.yaml").is_file():
        sets = [*bx.wsss_overrides(d.data, a.excel.resolve(), a.device), "data.num_workers=0"]
        bx.timed([*d.wsss, "import", "excel", str(d.weights), "--config", str(REPO / "configs/excel/voc.yaml"),
                  "--out", str(d.run), "--set", *sets], REPO, d.env)  # fmt: skip


def prepare_clip_es(a: argparse.Namespace) -> None:
    import bench_clip_es_official as bc

    w = a.work / "clip_es"
    w.mkdir(parents=True, exist_ok=True)
    weights, data, run = w / "vitb16_random.pt", w / "VOC", w / "run"
    if not weights.is_file():
        bc.write_weights(weights)
    bc.write_dataset(data, 1)
    if a.device == "cpu":
        script = a.clip_es / "generate_cams_voc12_cpu.py"
        script.write_text((a.clip_es / "generate_cams_voc12.py").read_text().replace(*bc.CPU_LINE))
    if not (run / "config.yaml").is_file():
        device = ["run.device=cuda"] if a.device == "cuda" else ["run.device=cpu", "run.threads=1"]
        subprocess.run([sys.executable, "-m", "wsss", "import", "clip_es", str(weights), "--config",
                        str(REPO / "configs/clip_es/voc.yaml"), "--out", str(run), "--set", f"data.root={data}",
                        "options.quick_gelu=true", "data.num_workers=0", *device], cwd=REPO, check=True)  # fmt: skip


def per_photo(two: dict, six: dict, n: int = 4) -> dict[str, Any]:
    key = next(iter(two))
    return {k: (six[key][k] - two[key][k]) / n for k in ("ops", "kernels")} | {"top": six[key]["top"]}


def show(rows: list[tuple[str, dict | None, dict | str | None]]) -> None:
    print(f"{'unit':44s} {'wsss ops / kernels':>22s} {'official ops / kernels':>24s} {'kernels wsss/official':>22s}")
    for name, ours, theirs in rows:
        o = f"{ours['ops']:,.0f} / {ours['kernels']:,.0f}" if ours else "-"
        if isinstance(theirs, dict):
            t = f"{theirs['ops']:,.0f} / {theirs['kernels']:,.0f}"
            r = f"{ours['kernels'] / theirs['kernels']:.2f}" if ours else "-"
        else:
            t, r = (theirs or "-"), "-"
        print(f"{name:44s} {o:>22s} {t:>24s} {r:>22s}", flush=True)


def main() -> None:
    from wsss.cli_common import script_parser

    ap = script_parser(__doc__)
    ap.add_work(required=True, type=Path)
    ap.add_argument("--excel", type=Path, help="git archive of github.com/zwyang6/ExCEL (omitted: no ExCEL rows)")
    ap.add_argument("--clip-es", type=Path, help="checkout of github.com/linyq2117/CLIP-ES (omitted: no CLIP-ES)")
    ap.add_argument("--deps", default="", help="pip --target folder(s) of the official codes' deps (os.pathsep)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--units", default="seco,excel_train,excel_free,clip_es", help="comma-separated, in order")
    ap.add_argument("--only", choices=("wsss", "both"), default="both", help="wsss: our counts alone")
    ap.add_argument("--seco-crop", type=int, default=448, help="SeCo's crop (the VOC preset's 448)")
    ap.add_argument("--time", type=int, default=0, metavar="N", help="also time N SeCo iterations (median)")
    ap.add_argument("--json", type=Path, help="write every count here")
    ap.add_argument("--quiet", action="store_true", help="the workers' own output hidden")
    for hidden in ("--worker", "--split", "--result"):
        ap.add_argument(hidden, help=argparse.SUPPRESS, type=Path if hidden == "--result" else str)
    a = ap.parse_args()
    if a.worker:
        worker(a)
        return
    a.work.mkdir(parents=True, exist_ok=True)
    d, codes = Driver(a), (["wsss", "official"] if a.only == "both" else ["wsss"])
    rows: list = []
    results: dict[str, Any] = {"device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu"}
    for unit in a.units.split(","):
        if unit == "seco":
            r = d.run("seco", "wsss")
            results["seco"] = {"wsss": r}
            rows.append((f"SeCo iteration ({a.seco_crop} px, batch 4)", r["iteration"], SECO_NOTE))
            if "seconds" in r:
                print(f"SeCo iteration, wsss: median {r['seconds']:.3f} s of {a.time} on {results['device']}"
                      + (f", peak {r['peak_gib']:.2f} GiB" if "peak_gib" in r else ""), flush=True)  # fmt: skip
        elif unit == "excel_train" and a.excel:
            prepare_excel(a)
            r = {c: d.run("excel_train", c) for c in codes}
            results["excel_train"] = r
            for mode in ("before_lvc", "lvc"):
                rows.append((f"ExCEL iteration ({mode})", r["wsss"][mode], r.get("official", {}).get(mode)))
        elif unit == "excel_free" and a.excel:
            prepare_excel(a)
            r = {c: per_photo(d.run("excel_free", c, "two"), d.run("excel_free", c, "all")) for c in codes}
            results["excel_free"] = r
            rows.append(("ExCEL training-free labels, per photo", r["wsss"], r.get("official")))
        elif unit == "clip_es" and a.clip_es:
            prepare_clip_es(a)
            r = {c: per_photo(d.run("clip_es", c, "two"), d.run("clip_es", c, "all")) for c in codes}
            results["clip_es"] = r
            rows.append(("CLIP-ES CAMs, per photo", r["wsss"], r.get("official")))
        show(rows[-2:] if unit == "excel_train" else rows[-1:])
    print(f"\nop counts on {results['device']}, torch {torch.__version__}")
    show(rows)
    for name, ours, _ in rows:  # per photo: the most dispatched of the whole 6-photo command
        whole = " (the whole command on 6 photos)" if "per photo" in name else ""
        print(f"{name}, wsss's most dispatched{whole}: " + ", ".join(f"{k} {v:g}" for k, v in ours["top"][:8]))
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
