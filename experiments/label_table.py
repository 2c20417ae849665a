"""The tables of the labels' measurements, fold by fold: ``experiments/label_folds.py``'s JSONs (the masks before
and after ``--labelled-only``, the photos missing a labelled class, each recovery tried, the plan against the run)
and ``experiments/label_runs.py``'s (``*_runs.json``: whether agreement with the labels ranks the stage's runs as
their val mIoU does, the draw-next list against a random choice of photos, and which runs find a lost class again).

    .venv/bin/python experiments/label_table.py experiments/results/labels/coco128-dev_fold*.json

A rule is adopted only where it wins on every fold measured; the table says how many folds it has.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wsss.cli_common import script_parser

RECOVERIES = {"after_recovered_par": "PAR region", "after_recovered_probability": "probability peak"}
DRAWS = ((10, "rule10", "random10"), (20, "rule20", "random20"))
LOST_RUNS = ("seed1", *(run for _, rule, rand in DRAWS for run in (rule, rand)))  # the runs beside seed 0


def ranks(values: Sequence[float]) -> list[float]:
    """Each value's rank from 1, ties given their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation of ``x`` and ``y`` (None with fewer than 3 pairs or a constant side)."""
    if len(x) != len(y) or len(x) < 3:
        return None
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return None if vx == 0 or vy == 0 else cov / (vx * vy) ** 0.5


def fold_of(path: Path) -> tuple[str, int, bool]:
    """(set, fold, is a runs JSON) from a file name ``SET_foldF.json`` or ``SET_foldF_runs.json``."""
    m = re.fullmatch(r"(.+)_fold(\d+)(_runs)?\.json", path.name)
    if not m:
        raise SystemExit(f"error: {path}: not a label_folds.py or label_runs.py JSON (SET_foldF[_runs].json)")
    return m.group(1), int(m.group(2)), bool(m.group(3))


def masks_rows(folds: dict[tuple[str, int], dict[str, Any]]) -> list[str]:
    """(1) and (2): each fold's mIoU of every labelled photo's mask before and after, the photos missing a label and
    the masks naming an unlabelled class before and after, and each recovery's mIoU."""
    head = (
        "| set, fold | mIoU before | after | photos missing a label: before | after | masks naming an unlabelled "
        "class: before | after | " + " | ".join(f"after + {v}" for v in RECOVERIES.values()) + " |"
    )
    rows = [head, "|" + "---|" * (7 + len(RECOVERIES))]
    for (name, fold), res in sorted(folds.items()):
        if "after" not in res:
            continue
        b, a = res["before"], res["after"]
        rec = [f"{res[k]['miou_all']:.2f}" if k in res else "not run" for k in RECOVERIES]
        rows.append(
            f"| {name} {fold} | {b['miou_all']:.2f} | {a['miou_all']:.2f} | "
            f"{b['labels']['photos_missing_a_label']} | {a['labels']['photos_missing_a_label']} | "
            f"{b['labels']['masks_naming_an_unlabelled_class']} | {a['labels']['masks_naming_an_unlabelled_class']} | "
            + " | ".join(rec)
            + " |"
        )
    return rows


def runs_rows(runs: dict[tuple[str, int], dict[str, Any]]) -> list[str]:
    """(4) and (5): per fold, the rank correlation of the runs' agreement with their val mIoU (the agreement over the
    photos no run drew, and over every train photo), seed 1 against seed 0, and the draw-next list against random at
    each K."""
    rows = [
        "| set, fold | runs | photos no run drew | Spearman (agreement on them, val mIoU) | Spearman (agreement on "
        "every train photo, val mIoU) | seed 0 -> 1 (none drawn): val mIoU, agreement | K=10: rule / random val mIoU "
        "| K=20: rule / random val mIoU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (name, fold), res in sorted(runs.items()):
        r = res.get("runs", {})
        names = sorted(r)
        val = [r[n]["val_miou"] for n in names]
        rhos = [spearman([scored(r[n], "common")["labelled_found"] for n in names], val)]
        rhos.append(spearman([r[n]["labelled_found"] for n in names], val))
        seeds = (
            f"{r['seed0']['val_miou']:.2f} -> {r['seed1']['val_miou']:.2f}, "
            f"{r['seed0']['labelled_found']:.3f} -> {r['seed1']['labelled_found']:.3f}"
            if {"seed0", "seed1"} <= set(r)
            else "not run"
        )
        draws = [
            f"{r[rule]['val_miou']:.2f} / {r[rand]['val_miou']:.2f}" if {rule, rand} <= set(r) else "not run"
            for _, rule, rand in DRAWS
        ]
        photos = scored(r[names[0]], "common")["photos"] if names else "n/a"
        rho_cells = " | ".join("n/a" if rho is None else f"{rho:+.2f}" for rho in rhos)
        rows.append(f"| {name} {fold} | {len(names)} | {photos} | {rho_cells} | {seeds} | {' | '.join(draws)} |")
    return rows


def scored(run: dict[str, Any], photos: str) -> dict[str, Any]:
    """A run's agreement over a set of ``label_runs.py``'s train photos: ``common`` (no run drew them) or
    ``undrawn`` (this run did not draw them)."""
    if photos not in run:
        raise SystemExit(f"error: a run has no {photos!r} scores: experiments/label_runs.py --variants '' adds them")
    return run[photos]


def lost_rows(runs: dict[tuple[str, int], dict[str, Any]]) -> list[str]:
    """What helps a lost class: per fold, the classes lost at seed 0 (no photo drawn), and for each other run, over
    the photos it did not draw (as the route counts: a drawn photo's mask is the user's), how many of them its masks
    find again, how many classes it loses that seed 0 did not, and how many of seed 0's it drew every photo of."""
    rows = [
        "| set, fold | lost at seed 0 | "
        + " | ".join(f"{v}: found again, newly lost, every photo drawn" for v in LOST_RUNS)
        + " |",
        "|---|---|" + "---|" * len(LOST_RUNS),
    ]
    for (name, fold), res in sorted(runs.items()):
        r = res.get("runs", {})
        if "seed0" not in r:
            continue
        lost = set(r["seed0"]["lost"])
        cells = []
        for v in LOST_RUNS:
            if v not in r:
                cells.append("not run")
                continue
            other, gone = set(scored(r[v], "undrawn")["lost"]), set(scored(r[v], "undrawn")["uncounted"])
            cells.append(f"{len(lost - other - gone)}, {len(other - lost)}, {len(lost & gone)}")
        rows.append(f"| {name} {fold} | {len(lost)} | " + " | ".join(cells) + " |")
    return rows


def verdicts(runs: dict[tuple[str, int], dict[str, Any]]) -> list[str]:
    """Whether the draw-next list beat random on every fold measured, at each K."""
    out = []
    for k, rule, rand in DRAWS:
        measured = [r["runs"] for r in runs.values() if {rule, rand} <= set(r.get("runs", {}))]
        pairs = [(r[rule]["val_miou"], r[rand]["val_miou"]) for r in measured]
        wins = sum(a > b for a, b in pairs)
        out.append(f"K={k}: the draw-next list beat random on {wins} of {len(pairs)} folds measured")
    return out


def main(argv: list[str] | None = None) -> str:
    p = script_parser(__doc__)
    p.add_argument("jsons", nargs="+", type=Path)
    args = p.parse_args(argv)
    folds: dict[tuple[str, int], dict[str, Any]] = {}
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    for path in args.jsons:
        name, fold, is_runs = fold_of(path)
        (runs if is_runs else folds)[(name, fold)] = json.loads(path.read_text())
    text = "\n".join([*masks_rows(folds), "", *runs_rows(runs), "", *lost_rows(runs), "", *verdicts(runs)])
    print(text)
    return text


if __name__ == "__main__":
    main()
