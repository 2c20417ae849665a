"""``wsss report RUN``: one self-contained folder, ``RUN/report/index.html`` with its PNGs beside it
(``report/*.png``, ``report/images/``), so the folder can be copied or served as it is.

The page shows, for each split the run has outputs of (``cams/``, ``cam_labels/``, ``pseudo/``, ``predictions/``,
``predictions_crf/``; the val split first, then the training split, then the others; with none, the val split, or
the training split of a dataset without a val split;
``split``: that one only):

- a summary table: the mIoU of every output the run has on the split (CAM seeds, pseudo labels,
  segmentation, segmentation + CRF), each scored with the evaluator of ``wsss eval`` (so the numbers
  are the same), with the pixel accuracy, the mean false-activation rate and the share left at 255;
- what to do, from the last output's figures and the route's folds (report/advice.py);
- the per-class table (IoU and false-activation rate of each output);
- the co-occurrence diagnostics as a chart (false activation per class, pair-confusion matrices) and
  the largest confusions as text;
- training curves (losses, learning rate, validation mIoU) and the last / best validation of
  ``metrics.jsonl``;
- image grids (image, ground truth, CAM per labelled class, CAM seeds, pseudo label, prediction),
  the worst images first (per-image mIoU of the last output of the pipeline);
- the resolved ``config.yaml``.

A split's image grids are ``report/images/<split>/``, its co-occurrence chart ``report/cooccurrence_<split>.png``,
its scores ``report/summary.json`` (``{split: {folder: wsss eval's JSON}}``). Numbers carry ``data-split`` /
``data-output`` / ``data-metric`` attributes so scripts (and the tests) can read them.
"""

from __future__ import annotations

import html
import json
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import yaml

from wsss.core.config import (
    load_run_config,
    parse_override,
    run_config_path,
    set_dotted,
    yaml_error_text,
    yaml_load,
)
from wsss.core.errors import ConfigError, DataError, OutputError, ResultWarning, UsageError
from wsss.core.files import atomic_write, remove_stale_temps
from wsss.data import VOCDataset
from wsss.data.voc import available_splits, masked_view, run_dataset
from wsss.engine.defaults import run_has_seg_head
from wsss.evaluation import EvalResult, confusion_matrix, coverage_note, evaluate, scores_from_hist
from wsss.report.advice import advice, route_folds
from wsss.report.figures import (
    IGNORE,
    OUTPUTS,
    colorize,
    cooccurrence_chart,
    save_grid,
    saved_panels,
    training_curves,
)
from wsss.report.labels import few_val_note, labels_section, route_labels, taught_ids, taught_note, without_taught
from wsss.utils.io import per_id_path, plural, read_label_png

__all__ = ["colorize", "read_metrics", "report_is_current", "write_report"]

_CSS = """body{font-family:sans-serif;margin:2em auto;max-width:1440px;padding:0 1em;color:#222}
h1{font-size:1.5em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left} img{max-width:100%}
figure{margin:1em 0} figcaption{font-size:.9em;color:#555} pre{background:#f7f7f7;padding:.6em;overflow-x:auto}
.note{color:#666;font-size:.9em} nav a{margin-right:1em}"""


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (empty if the file does not exist). A last line cut short (a training
    killed as it wrote, or one writing now) is left out with a warning; any other line that is not a JSON object
    with an integer ``step`` is a ``DataError`` naming the file and the line."""
    if not path.is_file():
        return []
    lines = [(n, line) for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1) if line.strip()]
    records = []
    for n, line in lines:
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            if n == lines[-1][0] and isinstance(e, json.JSONDecodeError):
                warnings.warn(
                    f"{path}:{n}: the last line is cut short (a training killed as it wrote, or one "
                    "writing now): left out",
                    ResultWarning,
                    stacklevel=2,
                )
                break
            raise DataError(f"{path}:{n}: not a JSON line ({type(e).__name__})") from None
        if not isinstance(record, dict) or type(record.get("step")) is not int:
            raise DataError(f"{path}:{n}: not a metrics record (a JSON object with an integer 'step')")
        records.append(record)
    return records


def run_metrics(run: Path) -> list[dict[str, Any]]:
    """The run's ``metrics.jsonl``; for a multi-run method (SC-CAM: ``round_<k>/metrics.jsonl``, no file of
    its own) the rounds' records one after the other, steps offset to a running count, tagged ``round``."""
    own = read_metrics(run / "metrics.jsonl")
    if own:
        return own
    rounds = sorted(run.glob("round_*/metrics.jsonl"), key=lambda p: int(p.parent.name.split("_")[-1]))
    records: list[dict[str, Any]] = []
    offset = 0
    for path in rounds:
        recs = read_metrics(path)
        k = int(path.parent.name.split("_")[-1])
        records += [{**r, "step": r["step"] + offset, "round": k} for r in recs]
        offset += max((r["step"] for r in recs), default=0)
    return records


def _e(value: Any) -> str:
    """Text or attribute value for the page: every string from data, config or logs goes through here
    (class names, ids, config values, metric names), so a crafted one is shown, never run."""
    return html.escape(str(value), quote=True)


def _num(value: Any, fmt: str) -> str:
    """A number of metrics.jsonl formatted with ``fmt``; anything else is shown escaped as it is."""
    return format(value, fmt) if isinstance(value, (int, float)) and not isinstance(value, bool) else _e(value)


def _pct(x: float | None) -> str:
    return "" if x is None or not np.isfinite(x) else f"{100 * x:.2f}"


def _cell(value: float | None, output: str, metric: str, scale: float = 100.0, split: str | None = None) -> str:
    """A table cell holding a number with its machine-readable name (and split)."""
    text = "" if value is None or not np.isfinite(value) else f"{scale * value:.2f}"
    where = f'data-split="{_e(split)}" ' if split is not None else ""
    return f'<td {where}data-output="{_e(output)}" data-metric="{_e(metric)}">{text}</td>'


def _has_number(value: float | None) -> bool:
    return value is not None and bool(np.isfinite(value))


def _summary_table(results: dict[str, tuple[str, EvalResult]], split: str) -> str:
    head = (
        "<tr><th>output</th><th>folder</th><th>mIoU</th><th>mIoU (255 excluded)</th><th>pixel acc.</th>"
        "<th>mean FAR</th><th>at 255</th></tr>"
    )
    rows = []
    for folder, (title, r) in results.items():
        s = r.scores
        rows.append(
            f"<tr><td>{_e(title)}</td><td>{_e(folder)}/</td>"
            + _cell(r.miou, folder, "miou", split=split)
            + _cell(s.get("pseudo_miou") if r.pseudo else None, folder, "pseudo_miou", split=split)
            + _cell(s["pAcc"], folder, "pAcc", split=split)
            + _cell(r.cooccurrence["mean_far"], folder, "mean_far", split=split)
            + _cell(s.get("ignored_share"), folder, "ignored_share", split=split)
            + "</tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _per_class_table(results: dict[str, tuple[str, EvalResult]], split: str) -> str:
    """IoU and FAR of each class that has a number in some output: a class in no mask and no output of the split
    (a small split of many classes: most of them) is left out, and counted in a note."""
    first = next(iter(results.values()))[1]
    head = "<tr><th rowspan=2>class</th>" + "".join(f"<th colspan=2>{_e(t)}</th>" for t, _ in results.values())
    head += "</tr><tr>" + "<th>IoU</th><th>FAR</th>" * len(results) + "</tr>"
    rows, absent = [], 0
    for c, name in enumerate(first.class_names):
        values = [(folder, r.per_class[c]["iou"], r.per_class[c]["far"]) for folder, (_, r) in results.items()]
        if not any(_has_number(iou) or _has_number(far) for _, iou, far in values):
            absent += 1
            continue
        cells = "".join(
            _cell(iou, folder, f"iou/{name}", split=split) + _cell(far, folder, f"far/{name}", split=split)
            for folder, iou, far in values
        )
        rows.append(f"<tr><td>{_e(name)}</td>{cells}</tr>")
    note = (
        f"<p class=note>{plural(absent, 'class')} of the {len(first.class_names)} in neither the masks nor the "
        "outputs of this split: not listed</p>"
        if absent
        else ""
    )
    return f"<table>{head}{''.join(rows)}</table>{note}"


def _pairs_text(results: dict[str, tuple[str, EvalResult]], top: int = 5) -> str:
    out = []
    for title, r in results.values():
        pairs = [p for p in r.cooccurrence["pairs"] if p["share"] is not None and np.isfinite(p["share"])]
        lines = [
            f"{p['gt']} -> {p['pred']}: {100 * p['share']:.2f} % of the {p['gt']} pixels "
            f"({plural(p['images'], 'image')})"
            for p in pairs[:top]
            if p["share"] > 0
        ] or ["(no confusion between co-occurring classes)"]
        out.append(f"<p><b>{_e(title)}</b></p><pre>{_e(chr(10).join(lines))}</pre>")
    return "".join(out)


def _training_section(metrics: list[dict[str, Any]], curves: list[str], run: Path) -> str:
    if not metrics:
        return "<p class=note>no metrics.jsonl in this run</p>"
    parts = [f'<img src="{_e(quote(c))}" alt="{_e(c)}">' for c in curves]
    train = [m for m in metrics if "loss/loss" in m]
    if train:
        last = train[-1]
        cells = "".join(
            f'<tr><td>{_e(k)}</td><td data-output="train" data-metric="{_e(k)}" '
            f'data-step="{_e(last["step"])}">{_num(last[k], ".4g")}</td></tr>'
            for k in sorted(k for k in last if k.startswith("loss/") or k in ("lr", "sec_per_iter"))
        )
        parts.append(f"<h3>Last training log (iteration {_e(last['step'])})</h3><table>{cells}</table>")
    val = [m for m in metrics if "val" in m]
    if val:
        keys = sorted({k for m in val for k in m["val"] if k.endswith("miou")})
        head = "<tr><th>iteration</th>" + "".join(f"<th>{_e(k)}</th>" for k in keys) + "</tr>"
        rows = "".join(
            f"<tr><td>{_e(m['step'])}</td>"
            + "".join(
                f'<td data-output="val" data-metric="{_e(k)}" data-step="{_e(m["step"])}">'
                f"{_num(m['val'][k], '.2f')}</td>"
                if k in m["val"]
                else "<td></td>"
                for k in keys
            )
            + "</tr>"
            for m in val
        )
        parts.append(f"<h3>Training-time validation (mIoU %, metrics.jsonl)</h3><table>{head}{rows}</table>")
    if (run / "tensorboard").is_dir():
        parts.append(f"<p class=note>TensorBoard: <code>tensorboard --logdir {_e(str(run))}/tensorboard</code></p>")
    return "".join(parts)


def _image_miou(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
    """mIoU of one image over the classes of its GT; 255 in a pseudo label counts as background."""
    pred = np.where(pred == IGNORE, 0, pred)
    return float(scores_from_hist(confusion_matrix(gt, pred, num_classes))["miou"])


def _score_outputs(run: Path, scored: VOCDataset | None, split: str) -> dict[str, tuple[str, EvalResult]]:
    """Every output folder of the split that holds the masked photos' files, scored on them as `wsss eval` scores
    it: folder -> (title, result)."""
    results: dict[str, tuple[str, EvalResult]] = {}
    for folder, title in OUTPUTS:
        pred_dir = run / folder / split
        if (
            scored is not None
            and pred_dir.is_dir()
            and all(per_id_path(pred_dir, i, ".png").is_file() for i in scored.ids)
        ):
            results[folder] = (title, evaluate(pred_dir, scored.root, split, dataset=scored, pseudo=folder == "pseudo"))
    return results


def _can_predict(run: Path, class_names: list[str], overrides: Sequence[str] = ()) -> bool | None:
    """Whether the run has a segmentation head (``wsss predict``); None when its config does not load as a config
    of this wsss (the page still shows the file as written)."""
    try:
        return run_has_seg_head(load_run_config(run, overrides=overrides), class_names)
    except ConfigError:
        return None


def _next_steps(run: Path, split: str, can_predict: bool | None, has_masks: bool) -> str:
    """What to run for a split with no scored output: the steps the run has not made yet, in the route's order,
    and only those this run can make (`wsss predict` needs a segmentation head)."""
    if not has_masks:
        return f"no photo of split {split} has a ground-truth mask: its outputs are shown without scores"
    made = {
        folder
        for folder in ("cams", *(f for f, _ in OUTPUTS))
        if (run / folder / split).is_dir() and any(p.is_file() for p in (run / folder / split).iterdir())
    }
    steps = [] if "cams" in made else [f"`wsss cam {run} --split {split}`"]
    steps += [] if "pseudo" in made else [f"`wsss pseudo {run} --split {split}`"]
    if can_predict and "predictions" not in made:
        steps.append(f"`wsss predict {run} --split {split}`")
    if not steps:
        return f"no output of split {split} covers its masked photos: run the step again with this split"
    tail = (
        ""
        if can_predict is not False
        else "; this run has no segmentation head: its masks are its pseudo labels, or a DeepLab stage's on them"
    )
    return f"no scored output on split {split} yet: run {', then '.join(steps)}{tail}"


def _ranked_grids(
    run: Path,
    ds: VOCDataset,
    scored: VOCDataset | None,
    out: Path,
    results: dict[str, tuple[str, EvalResult]],
    max_images: int,
) -> tuple[list[tuple[str, str, str]], str | None]:
    """The image grids shown (``images/<split>/``), worst first by the last output's per-image mIoU on the ``scored``
    photos (the others after them, else in split order), as (relative path, id, caption), and that output's
    folder."""
    ids, split = list(ds.ids), ds.split
    rank_folder = next(reversed(results), None)  # the last output of the pipeline ranks the images
    per_image: dict[str, float] = {}
    if rank_folder is not None and scored is not None:
        for i in scored.ids:
            pred = read_label_png(per_id_path(run / rank_folder / split, i, ".png"))
            per_image[i] = _image_miou(ds.load_mask(i), pred, ds.num_classes)
        ids.sort(key=lambda i: (np.nan_to_num(per_image.get(i, np.nan), nan=np.inf), i))
    grids = []
    folder = per_id_path(out / "images", split, "")  # a split's name is a folder name here: checked as an id
    remove_stale_temps(folder)  # a killed earlier report's temporary files
    for i in ids[:max_images]:
        caption = i if i not in per_image else f"{i}: {results[rank_folder][0]} mIoU {100 * per_image[i]:.1f}"
        path = save_grid(saved_panels(ds, i, run, split, title=""), per_id_path(folder, f"grid_{i}", ".png"))
        grids.append((path.relative_to(out).as_posix(), i, caption))
    return grids, rank_folder


def _remove_stale_pictures(out: Path, shown: set[str]) -> None:
    """The grids and co-occurrence charts of an earlier report that this one does not show (of its splits, and of
    splits it no longer shows; ``images/grid_*.png`` and ``cooccurrence.png``: the layout of one split before)."""
    pictures = [
        *(out / "images").glob("grid_*.png"),
        *(out / "images").glob("*/grid_*.png"),
        *out.glob("cooccurrence*.png"),
    ]
    for stale in pictures:
        if stale.relative_to(out).as_posix() not in shown:
            stale.unlink()
    for folder in (out / "images").iterdir():
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _split_order(splits: set[str], cfg: dict[str, Any]) -> list[str]:
    """The val split first, then the training split, then the others by name."""
    first = [cfg["data"].get("val_split"), cfg["data"].get("train_split")]
    return [s for s in first if s in splits] + sorted(splits - set(first))


def report_splits(run: Path, cfg: dict[str, Any], root: str | Path) -> tuple[list[str], list[str]]:
    """The splits a report shows, and a note for each split whose outputs it cannot show: the splits with a file
    in an output folder of the run (``cams/``, ``OUTPUTS``), that the dataset at ``root`` has (a split of another
    dataset root, ``--data-root``, is named in a note); none: the val split, for its notes (the training split
    where the dataset has no val split)."""
    found = {
        d.name
        for folder in ("cams", *(f for f, _ in OUTPUTS))
        if (run / folder).is_dir()
        for d in (run / folder).iterdir()
        if d.is_dir() and any(p.is_file() and not p.name.startswith(".") for p in d.iterdir())
    }
    have = set(available_splits(root))
    notes = [
        f"split {s}: outputs in {run} but no split file in {root}; `wsss report {run} --split {s} --data-root "
        "ROOT` shows them with the dataset they came from"
        for s in _split_order(found - have, cfg)
    ]
    shown = _split_order(found & have, cfg)
    # none yet (a run just trained): the val split, for its notes, or the training split where the dataset has no
    # val split (photos without masks: `wsss prepare folder` writes none), not an error about a missing val.txt
    first = _split_order(have & {cfg["data"].get("val_split"), cfg["data"].get("train_split")}, cfg)
    return (shown or first[:1] or [cfg["data"]["val_split"]]), notes


def _floor_note(results: dict[str, tuple[str, EvalResult]]) -> str:
    """The split's floor, the mIoU of masks of background alone (the same ground truth for every output: the
    first one's), in a sentence with its machine-readable name."""
    floor = next(iter(results.values()))[1].scores["miou_background_only"]
    if not _has_number(floor):
        return ""
    return (
        f'Masks of background alone would score <b data-metric="miou_background_only">{100 * floor:.2f}'
        "</b> mIoU on this split: the floor."
    )


def _result_sections(
    results: dict[str, tuple[str, EvalResult]], split: str, chart: Path | None, coverage: str, missing: str
) -> tuple[str, str, str]:
    """The summary, per-class and co-occurrence sections' HTML (``missing``, what to run, where there is nothing
    to show; ``coverage``, a sentence on which photos were scored)."""
    summary_html = (
        _summary_table(results, split) + "<p class=note>mIoU: mean over the classes present in the ground truth, 255 "
        "counted as background; '255 excluded': the official pseudo-label convention. FAR: ground-truth "
        "background pixels predicted as the image's class. Same evaluator as <code>wsss eval</code>. "
        + coverage
        + _floor_note(results)
        + "</p>"
        if results
        else f"<p class=note>{_e(missing)}</p>"
    )
    per_class_html = _per_class_table(results, split) if results else "<p class=note>no outputs to score</p>"
    cooc_html = (
        (f'<img src="{_e(quote(chart.name))}" alt="co-occurrence diagnostics">' if chart else "") + _pairs_text(results)
        if results
        else "<p class=note>no outputs to diagnose</p>"
    )
    return summary_html, per_class_html, cooc_html


def _advice_html(results: dict[str, tuple[str, EvalResult]], folds: dict[str, Any] | None) -> str:
    """What to do, from the last output's figures (report/advice.py) and the route's folds."""
    if not results:
        return ""
    title, last = results[next(reversed(results))]
    items = "".join(f"<li>{_e(line)}</li>" for line in advice(last, folds))
    return f"<p class=note>From the {_e(title)}:</p><ul>{items}</ul>"


def _split_section(
    run: Path,
    ds: VOCDataset,
    out: Path,
    max_images: int,
    can_predict: bool | None,
    folds: dict[str, Any] | None = None,
    taught: frozenset[str] | set[str] = frozenset(),
    val_split: str | None = None,
) -> tuple[str, list[str], dict[str, Any]]:
    """One split's part of the page (summary, what to do, images, per class, co-occurrence), the grids it shows and
    its scores for summary.json; the ``taught`` photos (their own masks trained the run) left out of its scores."""
    split = ds.split
    scored, left_out = without_taught(masked_view(ds), taught)
    results = _score_outputs(run, scored, split)
    grids, rank_folder = _ranked_grids(run, ds, scored, out, results, max_images)
    chart_path = per_id_path(out, f"cooccurrence_{split}", ".png")
    chart = cooccurrence_chart({t: r for t, r in results.values()}, chart_path) if results else None
    note = coverage_note(len(scored), len(ds)) if scored is not None and scored is not ds else ""
    coverage = f"{note[:1].upper()}{note[1:]}. " if note else ""
    coverage += (taught_note(left_out) + " " if left_out else "") + few_val_note(split, val_split, len(scored or ()))
    missing = (
        taught_note(left_out)
        if left_out and scored is None
        else _next_steps(run, split, can_predict, scored is not None)
    )
    summary_html, per_class_html, cooc_html = _result_sections(results, split, chart, coverage, missing)
    figures = "".join(
        f'<figure><figcaption>{_e(c)}</figcaption><img src="{_e(quote(g))}" alt="{_e(i)}"></figure>'
        for g, i, c in grids
    )
    order = f"worst first by per-image mIoU of the {_e(results[rank_folder][0])}" if rank_folder else "in split order"
    advice_html = _advice_html(results, folds)
    s = _e(split)
    html_text = f"""<h2 id="split-{s}">Split {s} ({plural(len(ds), "image")})</h2>
<h3 id="{s}-summary">Summary (%)</h3>{summary_html}
{f'<h3 id="{s}-advice">What to do</h3>{advice_html}' if advice_html else ""}
<h3 id="{s}-images">Images ({order}; {len(grids)} of {len(ds)})</h3>
<p class=note>CAMs: the map of each labelled class over the image (jet: red = high). Label maps in the VOC
palette; the light grey-yellow of "ignore / undecided" is a pixel a pseudo label leaves to the loss.</p>{figures}
<h3 id="{s}-per-class">Per class (%)</h3>{per_class_html}
<h3 id="{s}-cooccurrence">Co-occurrence diagnostics</h3>{cooc_html}
"""
    shown = [g for g, _, _ in grids] + ([chart.name] if chart is not None else [])
    return html_text, shown, {folder: r.to_json() for folder, (_, r) in results.items()}


REPORT_INPUTS = ".inputs"  # in RUN/report: the fingerprint of the run's outputs the page was made of
# read whole: a resumed run rewrites them with the same content
READ_WHOLE = ("config.yaml", "metrics.jsonl")


def _inputs_fingerprint(run: Path) -> str:
    """The run's outputs as a report reads them (its hidden bookkeeping files, which each job rewrites, aside): each
    file's path, size and time, or its content for :data:`READ_WHOLE`."""
    import hashlib

    digest = hashlib.sha1()
    for path in sorted(run.rglob("*")):
        parts = path.relative_to(run).parts
        if parts[0] == "report" or any(p.startswith(".") for p in parts) or not path.is_file():
            continue
        stat = path.stat()
        seen = path.read_bytes() if path.name in READ_WHOLE else f"{stat.st_size}:{stat.st_mtime_ns}".encode()
        digest.update("/".join(parts).encode() + b"\0" + seen + b"\0")
    return digest.hexdigest()


def report_is_current(run: str | Path) -> bool:
    """Whether ``RUN/report/index.html`` was made of the run's outputs as they are now (:func:`_inputs_fingerprint`,
    recorded by :func:`write_report`): a rerun of a finished route need not make it again."""
    run = Path(run)
    record = run / "report" / REPORT_INPUTS
    if not (run / "report" / "index.html").is_file() or not record.is_file():
        return False
    return record.read_text().strip() == _inputs_fingerprint(run)


def _shown_config(run: Path, overrides: Sequence[str]) -> dict[str, Any]:
    """The run's config.yaml as written (the page shows the whole file), with ``overrides`` set over it."""
    cfg_path = run_config_path(run)
    try:
        cfg = yaml_load(cfg_path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{cfg_path}: invalid YAML ({yaml_error_text(e)})") from e
    if overrides:
        load_run_config(run, overrides=overrides)  # a wrong word refused in one line naming it
        for word in overrides:
            keys, value = parse_override(word)
            set_dotted(cfg, keys, value)
    return cfg


def write_report(
    run: str | Path,
    *,
    split: str | None = None,
    data_root: str | None = None,
    max_images: int = 12,
    overrides: Sequence[str] = (),
    folds: dict[str, Any] | None = None,
    links: Sequence[tuple[str, str]] = (),
    labels: dict[str, Any] | None = None,
) -> Path:
    """Write ``<run>/report/index.html`` (and its PNGs) and return its path: every split with outputs, or
    ``split`` alone. ``overrides``: ``KEY=VALUE`` words over the run's saved config for this report (checked as
    every command's, ``load_run_config``), shown in the page's config as this command read it. ``folds``: the
    route's fold figures for the advice (default: those of the route summary beside the run, if any). ``links``:
    (address relative to the page, text) of pages beside it (the route's overlays of its masks), listed at the top.
    ``labels``: the route's check of its masks against the labels (default: the route summary's beside the run).
    The photos whose own masks trained the run (``data.true_masks``) are left out of its scores, named so."""
    run = Path(run)
    if max_images < 0:
        raise UsageError(f"--max-images {max_images}: give 0 or more images for each split's grid")
    cfg = _shown_config(run, overrides)
    root = data_root or cfg["data"]["root"]
    splits, notes = ([split], []) if split else report_splits(run, cfg, root)
    datasets = [run_dataset(data_root, cfg["data"]["root"], s, run) for s in splits]  # all read before any write
    out = run / "report"
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputError(
            f"{out}: is a {'link' if out.is_symlink() else 'file'}; the report is written in the run's "
            "own report/ folder: move it away and run again"
        )
    (out / "images").mkdir(parents=True, exist_ok=True)
    for folder in (out, out / "images"):
        remove_stale_temps(folder)  # a killed earlier report's temporary files
    metrics = run_metrics(run)
    folds = folds if folds is not None else route_folds(run)

    sections, shown, summary = [], set(), {}
    can_predict = _can_predict(run, datasets[0].class_names, overrides)
    taught = taught_ids(cfg)
    for ds in datasets:
        section, pictures, summary[ds.split] = _split_section(
            run, ds, out, max_images, can_predict, folds, taught, cfg["data"].get("val_split") or "val"
        )
        sections.append(section)
        shown |= set(pictures)
    _remove_stale_pictures(out, shown)
    curves = training_curves(metrics, out)
    title = f"wsss report: {run.name}"
    config_text = yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)
    listing = ", ".join(f"<b>{_e(ds.split)}</b> ({plural(len(ds), 'image')})" for ds in datasets)
    nav = "".join(f'<a href="#split-{_e(ds.split)}">{_e(ds.split)}</a>' for ds in datasets)
    notes_html = "".join(f"<p class=note>{_e(n)}</p>" for n in notes)
    notes_html += "".join(f'<p><a href="{_e(href)}">{_e(text)}</a></p>' for href, text in links)
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{_e(title)}</h1>
<p>run <code>{_e(str(run))}</code>; method <b>{_e(str(cfg.get("method")))}</b>, backbone
{_e(str(cfg["model"]["backbone"]))}; {"split" if len(datasets) == 1 else "splits"} {listing} of
<code>{_e(str(datasets[0].root))}</code>; written {datetime.now():%Y-%m-%d %H:%M}</p>{notes_html}
<nav>{nav}<a href="#training">training</a><a href="#config">config</a></nav>
{labels_section(run, labels if labels is not None else route_labels(run))}
{"".join(sections)}
<h2 id="training">Training</h2>{_training_section(metrics, curves, run)}
<h2 id="config">Config (config.yaml)</h2><pre>{_e(config_text)}</pre>
</body></html>"""
    with atomic_write(out / "index.html", "w") as f:
        f.write(page)
    with atomic_write(out / "summary.json", "w") as f:
        json.dump(summary, f, indent=1)
    with atomic_write(out / REPORT_INPUTS, "w") as f:
        f.write(_inputs_fingerprint(run) + "\n")
    return out / "index.html"
