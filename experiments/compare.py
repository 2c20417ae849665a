"""One protocol for every method on the synthetic co-occurrence set.

Generates one synthetic dataset, trains each method's ``configs/<method>/synthetic_cpu.yaml`` (the
presets share one budget: the same small ViT from scratch, crops, batch and iterations; the table
prints each one's iterations and batch so a difference shows), then measures the three numbers a WSSS
paper reports, with our commands:

- CAM: ``wsss cam`` seeds on the train split (argmax with ``cam.bkg_thre``);
- mask: ``wsss pseudo`` pseudo labels on the train split (255 counted as background; the covered-pixels
  convention is in the JSON);
- seg: segmentation of the val split (``wsss predict``: multi-scale + flip, no CRF). A method whose
  model has a segmentation head is predicted directly; one without (RCA, SC-CAM: classifier + refined
  pseudo labels) gets the separate segmentation stage ``configs/deeplab/synthetic_cpu.yaml`` trained on its
  train pseudo labels (``data.pseudo_dir``) when that preset exists, and "n/a" otherwise.

One calibration protocol for every method (``CALIBRATION``, on by default, ``--no-calibrate`` for the
presets' own levels): after training, on the method's **own train CAMs**, ``wsss sweep-bkg`` scores
the CAM seeds against the train ground truth at the background levels 0.05, 0.10, ..., 0.70 and the
two-level (high, low) labels at its default pairs; the seeds take the level of the best seed mIoU
(``wsss cam --bkg-thre``), the pseudo labels the pair with the best mIoU where the label decides among
the pairs that decide at least ``MIN_DECIDED`` of the pixels (``cam.high_thre`` / ``cam.low_thre`` /
``cam.bkg_thre`` of the run, for every refinement that reads them: PAR, none, the label CRF). RCA's CRF
proxy labels and SC-CAM's PSA seeds + random walk have levels of their own (the proxy constants, the
PSA alphas, ``rw_alpha``) that the rule does not choose: their mask columns keep those. Caveat: the
rule reads the train split's ground truth, as the papers tune their
levels (ToCo, SeCo, PSA, SC-CAM choose theirs on labelled VOC images), so the CAM and mask columns are
scored on the images their levels were chosen on; the seg column is scored on val. The levels of the
training itself (the online pseudo labels of the CAM baseline and SeCo) stay the presets': choosing
them too would take a second training of every method. The chosen levels are printed in the table.

plus the false-activation rate (FAR: ground-truth background predicted as the image's class), the
context FAR (water pixels predicted as boat, rails pixels predicted as train: the co-occurrence
failure), and the training and inference times. How a method gets from its preset to the numbers is a
small :class:`Pipeline` in ``PIPELINES`` (the pseudo-label refinement, where its segmentation comes
from); nothing here knows a method's internals. Methods without a preset are listed as missing.

Writes ``experiments/results/compare.json``, ``experiments/results/compare.png`` (chart) and the table between
``<!-- compare:begin -->`` and ``<!-- compare:end -->`` in BENCHMARKS.md (appended at the end the first
time), with the date and the machine (CPU model, cores, torch version).

    .venv/bin/python experiments/compare.py                      # every method (about an hour of CPU)
    .venv/bin/python experiments/compare.py --methods cam seco   # a subset
    .venv/bin/python experiments/compare.py --render-only        # table + chart again from compare.json
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

import torch

from wsss.cli_common import script_parser
from wsss.core.config import read_preset

if __package__ in (None, ""):  # run as a script (`python experiments/compare.py`): its package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.commands import run_wsss  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

METHODS = ("cam", "seco", "rca", "sccam")
MIN_DECIDED = 0.85  # the calibration rule: a pseudo-label pair must decide at least this share of the pixels
CALIBRATION = (
    "levels chosen on each method's own train CAMs against the train ground truth (as the papers do): "
    "seeds at the background level of the best seed mIoU over 0.05..0.70; pseudo labels at the (high, low) "
    f"pair of the best mIoU where decided among the pairs deciding >= {100 * MIN_DECIDED:.0f} % of the pixels"
)
BEGIN, END = "<!-- compare:begin -->", "<!-- compare:end -->"


@dataclass(frozen=True)
class Pipeline:
    """How one method goes from its preset to the three numbers (paths relative to the repository).

    ``overrides``: for this method's training only. ``refine``: the ``wsss pseudo --refine`` of its
    train pseudo labels; ``"affinity"`` trains ``aff_preset`` (with ``aff_overrides``) on PSA's seeds
    (``--refine psa``) first, then walks. ``seg``: "auto" (the model's own
    segmentation head if it has one, else the separate stage if ``seg_preset`` exists, else n/a),
    "head", "stage" or "none". ``seg_overrides``: what points the stage at the pseudo labels
    (``{pseudo}`` = the train pseudo-label folder of the method's run).
    """

    method: str
    name: str = ""  # the table row and run directory; defaults to the method (a variant needs its own)
    preset: str = "configs/{method}/synthetic_cpu.yaml"
    overrides: tuple[str, ...] = ()
    refine: str = "par"
    seg: str = "auto"
    seg_preset: str = "configs/deeplab/synthetic_cpu.yaml"
    seg_overrides: tuple[str, ...] = ("data.pseudo_dir={pseudo}",)
    aff_preset: str = "configs/affinitynet/synthetic_cpu.yaml"  # refine "affinity": the AffinityNet run
    aff_overrides: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.name or self.method

    def preset_path(self, repo: Path = REPO) -> Path:
        return repo / self.preset.format(method=self.method)


PIPELINES: dict[str, Pipeline] = {m: Pipeline(m) for m in METHODS}
# RCA's pseudo labels are its own CRF proxy labels (docs/methods/rca.md#proxy-labels), not PAR; its seg is a
# DeepLab stage.
PIPELINES["rca"] = Pipeline("rca", refine="rca")
# SC-CAM's: PSA's AffinityNet random walk of the final round's CAMs (docs/methods/sccam.md#rounds,
# docs/methods/affinitynet.md#random-walk), then DeepLab.
PIPELINES["sccam"] = Pipeline("sccam", refine="affinity")
# SeCo's preset with every official quirk switched back on (docs/methods/seco.md#quirk-switches): the quirks'
# cost.
SECO_QUIRKS = (
    "no_class_global_tag",
    "area_weighted_by_class_id",
    "lil_normaliser",
    "local_view_flip",
    "patch_seed",
    "ptc_box_pixel_scale",
    "queue_init_dim0",
)
PIPELINES["seco_quirks"] = Pipeline(
    "seco", name="seco_quirks", overrides=tuple(f"options.quirk_{q}=true" for q in SECO_QUIRKS)
)


def wsss(*args: str) -> float:
    """Run one ``wsss`` command in this process; returns its wall time in seconds (``CommandFailed`` if it fails)."""
    return run_wsss(*args)


def context_far(pred_dir: Path, root: Path, split: str) -> dict[str, float]:
    """Share of context pixels (background in the GT) predicted as the class they accompany."""
    from wsss.data import VOCDataset
    from wsss.utils.io import read_label_png

    ds = VOCDataset(root, split)
    names = ds.class_names
    pairs = {"water": (1, names.index("boat")), "rails": (2, names.index("train"))}
    hits = dict.fromkeys(pairs, 0)
    total = dict.fromkeys(pairs, 0)
    for i in ds.ids:
        labels = ds.labels(i)
        ctx = read_label_png(root / "SegmentationContext" / f"{i}.png")
        pred = read_label_png(pred_dir / f"{i}.png")
        for name, (ctx_id, cls) in pairs.items():
            if labels[cls - 1] > 0.5:
                sel = ctx == ctx_id
                total[name] += int(sel.sum())
                hits[name] += int((pred[sel] == cls).sum())
    return {k: hits[k] / total[k] if total[k] else float("nan") for k in pairs}


def evaluate(pred_dir: Path, root: Path, split: str, pseudo: bool = False) -> dict:
    from wsss.evaluation import evaluate as ev

    r = ev(pred_dir, root, split, pseudo=pseudo)
    out = {"miou": 100 * r.miou, "mean_far": 100 * float(r.cooccurrence["mean_far"])}
    if pseudo:
        out["miou_covered"] = 100 * float(r.scores["pseudo_miou"])
        out["ignored_share"] = 100 * float(r.scores["ignored_share"])
    ctx = context_far(pred_dir, root, split)
    out.update({f"far_{k}": 100 * v for k, v in ctx.items()})
    return out


def choose_levels(sweep: dict[str, Any], min_decided: float = MIN_DECIDED) -> dict[str, float]:
    """The calibration rule on a ``wsss sweep-bkg`` result: the seed level of the best seed mIoU (the
    first of the highest), and the (high, low) pair of the best mIoU where decided among the pairs that
    decide at least ``min_decided`` of the pixels (the most deciding pair when none does)."""
    out = {"bkg_thre": float(sweep["best_thre"]), "seed_miou": 100 * float(sweep["best_miou"])}
    pairs = sweep.get("pairs") or []
    if pairs:
        enough = [p for p in pairs if p["decided"] >= min_decided]
        best = max(enough, key=lambda p: p["miou_decided"]) if enough else max(pairs, key=lambda p: p["decided"])
        out.update(high_thre=float(best["high"]), low_thre=float(best["low"]))
        out.update(pair_miou_decided=100 * float(best["miou_decided"]), pair_decided=100 * float(best["decided"]))
    return out


def calibrate(run: Path, root: Path, split: str = "train") -> dict[str, float]:
    """Apply the protocol to a run with CAMs on ``split``: sweep, choose, write the levels into the run's
    config (every later ``wsss`` command on the run reads them) and rewrite the seeds at the chosen level."""
    from wsss.core.config import load_config, save_config

    out = run / "bkg_sweep" / f"{split}.json"
    wsss("sweep-bkg", str(run), "--split", split, "--data-root", str(root), "--json", str(out), "--quiet")
    levels = choose_levels(json.loads(out.read_text()))
    cfg_path = run / "config.yaml"
    cfg = load_config(cfg_path)
    cfg.cam.bkg_thre = levels["bkg_thre"]
    if "high_thre" in levels:
        cfg.cam.high_thre, cfg.cam.low_thre = levels["high_thre"], levels["low_thre"]
    save_config(cfg, cfg_path)
    wsss(
        "cam",
        str(run),
        "--split",
        split,
        "--data-root",
        str(root),
        "--bkg-thre",
        str(levels["bkg_thre"]),
        "--quiet",
        "--checkpoint",
        "last",
    )
    return levels


def _has_seg_head(run: Path) -> bool:
    from wsss.runs.run import load_run

    return bool(load_run(run, checkpoint="last", device="cpu").method.has_seg_head)


def seg_plan(p: Pipeline, run: Path, repo: Path = REPO) -> str:
    """Where the method's segmentation comes from: "head", "stage" or "none"."""
    if p.seg != "auto":
        return p.seg
    if _has_seg_head(run):
        return "head"
    return "stage" if (repo / p.seg_preset).is_file() else "none"


def run_method(
    p: Pipeline, root: Path, runs: Path, overrides: list[str], repo: Path = REPO, *, calibrated: bool = True
) -> dict[str, Any]:
    """Train, infer and evaluate one method (``calibrated``: under the calibration protocol); a failing
    step is recorded, not raised."""
    preset = p.preset_path(repo)
    if not preset.is_file():
        return {"method": p.label, "status": "missing (no synthetic_cpu preset yet)"}
    run = runs / p.label
    q = ("--quiet", "--checkpoint", "last")
    res: dict[str, Any] = {"method": p.label, "status": "ok", "run": str(run), "pipeline": asdict(p)}
    try:
        from wsss.core.config import load_config

        own = [f"run.dir={run}", f"data.root={root}", *overrides, *p.overrides]
        cfg = load_config(preset, own)
        res["iters"], res["batch"] = cfg.train.max_iters, cfg.train.batch_size
        res["train_s"] = wsss("train", str(preset), *own, "--quiet")
        rounds = run / "rounds.json"  # a multi-run method (SC-CAM): the iterations of all its rounds
        if rounds.is_file():
            res["iters"] = sum(int(r["step"]) for r in json.loads(rounds.read_text()).values())
        res["cam_s"] = wsss("cam", str(run), "--split", "train", *q)
        if calibrated:
            res["levels"] = calibrate(run, root)
        else:
            res["levels"] = {"bkg_thre": cfg.cam.bkg_thre, "high_thre": cfg.cam.high_thre, "low_thre": cfg.cam.low_thre}
        res["calibrated"] = calibrated
        if p.refine == "affinity":  # PSA (affinitynet.md#random-walk): AffinityNet on the la/ha seeds, then the walk
            seeds = runs / f"{p.label}_aff_seeds"
            res["pseudo_s"] = wsss("pseudo", str(run), "--split", "train", "--refine", "psa", "--overwrite", *q)
            shutil.rmtree(seeds, ignore_errors=True)
            (run / "pseudo/train").rename(seeds)
            aff = runs / f"{p.label}_aff"
            shutil.rmtree(aff, ignore_errors=True)  # trained on these seeds (an existing run would resume)
            res["aff_train_s"] = wsss(
                "train",
                str(repo / p.aff_preset),
                f"run.dir={aff}",
                f"data.root={root}",
                *overrides,
                f"data.pseudo_dir={seeds}",
                *p.aff_overrides,
                "--quiet",
            )
            res["train_s"] += res["aff_train_s"]
            res["pseudo_s"] += wsss(
                "pseudo",
                str(run),
                "--split",
                "train",
                "--refine",
                "affinity",
                "--affinity-run",
                str(aff),
                "--overwrite",
                *q,
            )
        else:
            res["pseudo_s"] = wsss("pseudo", str(run), "--split", "train", "--refine", p.refine, *q)
        res["cam"] = evaluate(run / "cam_labels/train", root, "train")
        res["mask"] = evaluate(run / "pseudo/train", root, "train", pseudo=True)
        plan = seg_plan(p, run, repo)
        seg_run = run
        if plan == "stage":
            seg_run = runs / f"{p.label}_seg"
            stage = [o.format(pseudo=run / "pseudo" / "train") for o in p.seg_overrides]
            res["seg_train_s"] = wsss(
                "train",
                str(repo / p.seg_preset),
                f"run.dir={seg_run}",
                f"data.root={root}",
                *overrides,
                *stage,
                "--quiet",
            )
            res["train_s"] += res["seg_train_s"]
        res["seg_source"] = {"head": "seg head", "stage": f"stage {p.seg_preset}", "none": "n/a"}[plan]
        if plan != "none":
            res["predict_s"] = wsss("predict", str(seg_run), "--split", "val", *q)
            res["seg"] = evaluate(seg_run / "predictions/val", root, "val")
    except Exception as e:  # noqa: BLE001  (one method's failure must not lose the others' numbers)
        res["status"] = f"failed: {e}"
    return res


# ---------------------------------------------------------------------------------------------
# Table, chart, BENCHMARKS.md


def _num(d: dict | None, key: str, fmt: str = "{:.1f}") -> str:
    v = (d or {}).get(key)
    return "n/a" if v is None or v != v else fmt.format(v)


def _minutes(s: float | None) -> str:
    return "n/a" if s is None else f"{s / 60:.1f} min"


def _budget(r: dict[str, Any]) -> str:
    return f"{r['iters']} x {r['batch']}" if r.get("iters") and r.get("batch") else "n/a"


def _levels(r: dict[str, Any]) -> str:
    lv = r.get("levels")
    if not lv:
        return "n/a"
    cells = "/".join(f"{lv[k]:g}" for k in ("bkg_thre", "high_thre", "low_thre") if k in lv)
    return cells + (" (calibrated)" if r.get("calibrated") else " (preset)")


def table(results: list[dict[str, Any]]) -> str:
    """The markdown table (numbers in %)."""
    head = (
        "| method | CAM mIoU (train) | mask mIoU (train) | seg mIoU (val) | seg from | seg mean FAR "
        "| seg FAR water->boat | seg FAR rails->train | CAM mean FAR | max_iters x batch | train time "
        "| CAM time (train) | predict time (val) | levels: seed bkg / high / low |\n" + "|---" * 14 + "|\n"
    )
    rows = []
    for r in results:
        if r["status"] != "ok":
            rows.append(f"| {r['method']} | {r['status']} |" + " |" * 12)
            continue
        seg = r.get("seg")
        rows.append(
            f"| {r['method']} | {_num(r['cam'], 'miou')} | {_num(r['mask'], 'miou')} | {_num(seg, 'miou')} "
            f"| {r.get('seg_source', 'seg head')} | {_num(seg, 'mean_far')} | {_num(seg, 'far_water')} "
            f"| {_num(seg, 'far_rails')} | {_num(r['cam'], 'mean_far')} "
            f"| {_budget(r)} | {_minutes(r.get('train_s'))} "
            f"| {_num(r, 'cam_s', '{:.0f} s')} | {_num(r, 'predict_s', '{:.0f} s')} | {_levels(r)} |"
        )
    return head + "\n".join(rows)


def chart(results: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    from wsss.report.figures import comparison_chart

    def get(r: dict, part: str, key: str) -> float | None:
        v = (r.get(part) or {}).get(key)
        return None if v is None or v != v else float(v)

    rows = [
        {
            "method": r["method"],
            "cam": get(r, "cam", "miou"),
            "mask": get(r, "mask", "miou"),
            "seg": get(r, "seg", "miou"),
            "far": get(r, "seg", "mean_far"),
        }
        for r in results
        if r["status"] == "ok"
    ]
    return comparison_chart(rows, path, title=title)


def describe_data(root: Path) -> str:
    """The dataset as the table's header names it: from ``synth_meta.json`` (what was generated, including
    the context strength), else the folder's name."""
    meta_path = root / "synth_meta.json"
    if not meta_path.is_file():
        return root.name
    d = json.loads(meta_path.read_text())
    n = {s: sum(i.startswith(s + "_") for i in d["images"]) for s in ("train", "val")}
    return (
        f"synth {n['train']}+{n['val']} @ {d['size']}px seed {d['seed']}, context given its class "
        f"{d['p_context_with_class']:g} / without {d['p_context_without_class']:g} ({root.name})"
    )


def machine(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The CPU, cores, torch version, and the threads of each run (a ``run.threads=N`` override, else
    torch's default in this process)."""
    threads = torch.get_num_threads()
    for o in overrides:
        if o.startswith("run.threads="):
            threads = int(o.split("=", 1)[1])
    cpu = platform.processor() or platform.machine()
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), flags=re.M)
        cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": threads}


#: The methods' names in the short table of the docs pages (:func:`summary_table`).
LABELS = {
    "cam": "CAM baseline",
    "seco": "SeCo",
    "rca": "RCA (+ DeepLab stage)",
    "sccam": "SC-CAM (+ AffinityNet, DeepLab stage)",
}


def summary_table(results: list[dict[str, Any]], methods: Sequence[str] = ()) -> str:
    """The short table that the docs pages show (``<!-- results: synthetic [METHOD ...] -->``, rendered by
    dev/mkdocs_hooks.py): the rows of ``methods`` (every method when empty), in the results' order."""
    lines = [
        "| method | CAM mIoU (train) | mask mIoU (train) | seg mIoU (val) "
        "| seg false activation (mean / rails -> train) | levels (seed bkg / high / low) |",
        "|---" * 6 + "|",
    ]
    for r in results:
        if r["status"] != "ok" or (methods and r["method"] not in methods):
            continue
        seg, lv = r.get("seg"), r.get("levels") or {}
        levels = " / ".join(f"{lv[k]:g}" for k in ("bkg_thre", "high_thre", "low_thre") if k in lv) or "n/a"
        lines.append(
            f"| {LABELS.get(r['method'], r['method'])} | {_num(r['cam'], 'miou')} | {_num(r['mask'], 'miou')} "
            f"| {_num(seg, 'miou')} | {_num(seg, 'mean_far')} % / {_num(seg, 'far_rails')} % | {levels} |"
        )
    return "\n".join(lines)


def load_results(out_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The meta and the rows of ``out_dir/compare.json``: the one source of the synthetic set's results."""
    data = json.loads((out_dir / "compare.json").read_text())
    meta = data["meta"]
    if isinstance(meta.get("machine"), str):  # written by an older compare.py
        meta["machine"] = {"cpu": meta["machine"]}
    meta.setdefault("command", ".venv/bin/python experiments/compare.py")
    return meta, data["results"]


def markdown_block(meta: dict[str, Any], results: list[dict[str, Any]], chart_rel: str) -> str:
    m = meta["machine"]
    where = ", ".join(
        t
        for t in (
            str(m.get("cpu", "")),
            f"{m['cores']} cores" if m.get("cores") else "",
            f"torch {m['torch']} ({m['threads']} threads)" if m.get("torch") else "",
        )
        if t
    )
    missing = [r["method"] for r in results if r["status"].startswith("missing")]
    calibrated = any(r.get("calibrated") for r in results)
    lines = [
        BEGIN,
        f"Measured {meta['date']} on {where}; data: {meta['data']}. Command: `{meta['command']}`.",
        "",
        table(results),
        "",
        "mIoU and FAR in %. mask = pseudo labels with 255 counted as background; FAR = share of ground-truth "
        "background pixels predicted as the image's class; the context columns restrict it to the water / rails "
        "pixels of images labelled boat / train. seg from: the model's own head, or a separate segmentation "
        "stage trained on the method's train pseudo labels (its time is in the train time). max_iters x batch as "
        "configured (a multi-run method such as SC-CAM trains several runs). Levels: "
        + (
            CALIBRATION + "; RCA's and SC-CAM's masks use levels of their own"
            if calibrated
            else "the presets' (no calibration)"
        )
        + "."
        + (f" Not implemented yet: {', '.join(missing)}." if missing else ""),
        "",
        f"![compare]({chart_rel})",
        END,
    ]
    return "\n".join(lines)


def write_benchmarks(path: Path, block: str) -> None:
    """Replace the text between the compare markers of ``path`` with ``block`` (append it the first time)."""
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    if (BEGIN in text) != (END in text) or text.count(BEGIN) > 1:
        raise ValueError(f"{path}: expected one {BEGIN} ... {END} pair")
    if BEGIN in text:
        start, end = text.index(BEGIN), text.index(END) + len(END)
        if end < start:
            raise ValueError(f"{path}: {END} comes before {BEGIN}")
        text = text[:start] + block + text[end:]
    else:
        text = text.rstrip("\n") + "\n\n## Method comparison (experiments/compare.py)\n\n" + block + "\n"
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def publish(meta: dict[str, Any], results: list[dict[str, Any]], out_dir: Path, benchmarks: Path | None) -> None:
    """compare.json + compare.png in ``out_dir``; the markdown block in ``benchmarks``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "compare.json.tmp"
    tmp.write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=float))
    tmp.replace(out_dir / "compare.json")
    png = chart(results, out_dir / "compare.png", title=f"{meta['data']}; {meta['date']}")
    if benchmarks is not None:
        try:
            rel = png.resolve().relative_to(benchmarks.resolve().parent).as_posix()
        except ValueError:
            rel = str(png)
        write_benchmarks(benchmarks, markdown_block(meta, results, rel))


def main(argv: list[str] | None = None) -> None:
    p = script_parser(__doc__)
    p.add_argument("--methods", nargs="+", default=list(METHODS), help=f"of {', '.join(PIPELINES)}")
    p.add_argument("--data", default="data/synth_bench")
    p.add_argument("--runs", default="runs/bench")
    p.add_argument("--train", type=int, default=800)
    p.add_argument("--val", type=int, default=200)
    p.add_argument("--size", type=int, default=128)
    p.add_seed()
    p.add_argument("--context-with", default=None, help="wsss synth --context-with (a new --data; default: synth's)")
    p.add_argument("--context-without", default=None, help="wsss synth --context-without (a new --data)")
    p.add_argument("--results", default=str(REPO / "experiments/results"))
    p.add_argument("--benchmarks", default=str(REPO / "BENCHMARKS.md"), help="markdown file to update ('' = none)")
    p.add_argument("--render-only", action="store_true", help="rewrite table and chart from compare.json")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the other methods' results from the existing compare.json (rerun only --methods)",
    )
    p.add_argument(
        "--no-calibrate", action="store_true", help="keep each preset's CAM levels (no calibration protocol)"
    )
    p.add_overrides("run.threads=1", what="config of every method")
    a = p.parse_args(argv)
    out_dir = Path(a.results)
    benchmarks = Path(a.benchmarks) if a.benchmarks else None
    if a.render_only:
        meta, results = load_results(out_dir)
        publish(meta, results, out_dir, benchmarks)
        print(table(results))
        return
    root, runs = (REPO / a.data).resolve(), (REPO / a.runs).resolve()
    if not (root / "classes.txt").is_file():
        context = [f"--context-{k}={v}" for k, v in (("with", a.context_with), ("without", a.context_without)) if v]
        wsss(
            "synth",
            str(root),
            "--train",
            str(a.train),
            "--val",
            str(a.val),
            "--size",
            str(a.size),
            "--seed",
            str(a.seed),
            *context,
        )
    meta = {
        "date": str(date.today()),
        "machine": machine(a.overrides),
        "data": describe_data(root),
        "command": " ".join([".venv/bin/python experiments/compare.py", *(argv if argv is not None else sys.argv[1:])]),
        "presets": {
            m: read_preset(PIPELINES.get(m, Pipeline(m)).preset_path())  # its _base_ merged in
            for m in a.methods
            if PIPELINES.get(m, Pipeline(m)).preset_path().is_file()
        },
        "overrides": {m: list(PIPELINES[m].overrides) for m in a.methods if m in PIPELINES and PIPELINES[m].overrides},
    }
    kept: list[dict[str, Any]] = []
    if a.keep and (out_dir / "compare.json").is_file():
        old = json.loads((out_dir / "compare.json").read_text())
        rerun = {PIPELINES.get(m, Pipeline(m)).label for m in a.methods}
        kept = [r for r in old["results"] if r["method"] not in rerun]
        for key in ("presets", "overrides"):  # the kept rows' presets stay described
            meta[key] = {**{m: v for m, v in old["meta"].get(key, {}).items() if m not in rerun}, **meta[key]}
    results: list[dict[str, Any]] = []
    for m in a.methods:
        pipe = PIPELINES.get(m, Pipeline(m))
        results.append(run_method(pipe, root, runs, a.overrides, calibrated=not a.no_calibrate))
        print(table(results[-1:]).splitlines()[-1], flush=True)
        # published after every method: an interrupted comparison keeps the rows it finished
        publish(meta, kept + results, out_dir, benchmarks)
    results = kept + results
    print(table(results))


if __name__ == "__main__":
    main()
