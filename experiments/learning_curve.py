"""The learning curve: ``experiments/real_route.py --train-photos K --ceiling`` JSONs (one per number of train photos
and seed, on the same val photos), grouped by K: the route's val mIoU with ``--crf``, the ceiling's (the same stage
on the true masks), and the route's share of it, each over the seeds (mean, standard deviation, n); a line for each
other route a JSON holds (a later ``--seg-rounds`` round, ``--abstain``). One JSON a run (``--fold F/N`` or the data
set's own split, not ``--folds``: the curve is on one set of val photos). The protocol:
docs/benchmarks/history/real-photos.md#learning-curve.

    .venv/bin/python experiments/learning_curve.py 'runs/curve/k*_s*.json'
"""

from __future__ import annotations

import glob
import json
import re
import sys
from pathlib import Path
from typing import Any

from wsss.cli_common import script_parser

if __package__ in (None, ""):  # run as a script (`python experiments/learning_curve.py`): its package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.route_folds import figures, summarise  # noqa: E402

# the routes a JSON may hold, by their val mIoU with the CRF (a key path of route_folds.figures), as the table names
# them; the route itself first
ROUTE = "seg_rounds.0.val_crf"
VARIANTS = {ROUTE: "the route", "abstain.val_crf": "labels that abstain (`--abstain`)"}
ROUND = re.compile(r"seg_rounds\.(\d+)\.val_crf")
CEILING = "ceiling.val_crf"


def _name(key: str) -> str:
    later = ROUND.fullmatch(key)
    return f"round {int(later[1]) + 1} (`--seg-rounds`)" if later and key not in VARIANTS else VARIANTS[key]


def load_runs(patterns: list[str]) -> list[tuple[Path, dict[str, Any]]]:
    """The runs of the JSONs (paths or quoted globs), each checked to be one ``--train-photos`` run on the same val
    photos as the others and of a K and seed no other has; SystemExit naming the file otherwise."""
    paths = [Path(p) for pattern in patterns for p in (sorted(glob.glob(pattern)) or [pattern])]
    runs, seen, photos = [], {}, None
    for path in paths:
        try:
            res = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise SystemExit(f"{path}: cannot be read as JSON ({e})") from None
        if not isinstance(res, dict) or "subset" not in res:  # a --folds JSON too: its folds' val photos differ
            raise SystemExit(f"{path}: not the JSON of one experiments/real_route.py --train-photos K run")
        # the val photos: the fold's, else the data set's own val split
        val = (Path(str(res.get("data_root"))).name, (res.get("fold") or {}).get("val_ids"))
        if photos is not None and val != photos[0]:
            raise SystemExit(f"{path}: scored on other val photos than {photos[1]}: a curve is on one set")
        photos = photos or (val, path)
        point = (res["subset"]["train_photos"], res["subset"]["seed"])
        if point in seen:
            raise SystemExit(
                f"{path}: {point[0]} train photos of seed {point[1]} are in {seen[point]} too: pass one of them"
            )
        seen[point] = path
        runs.append((path, res))
    return runs


def rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each K (ascending) and each route its runs hold: its val mIoU with the CRF, the ceiling's and the share
    (100 * route / ceiling, run by run), each as route_folds.summarise gives them (mean, sd, n: over the runs where
    it is defined)."""
    out = []
    for k in sorted({r["subset"]["train_photos"] for r in runs}):
        group = [r for r in runs if r["subset"]["train_photos"] == k]
        flat = [figures(r) for r in group]
        keys = [key for key in dict.fromkeys(key for f in flat for key in f) if key in VARIANTS or ROUND.fullmatch(key)]
        for key in sorted(keys, key=lambda key: (key != ROUTE, key)):
            points = []
            for f in flat:
                route, ceiling = f.get(key), f.get(CEILING)
                share = 100 * route / ceiling if route is not None and ceiling else None
                points.append({"route": route, "ceiling": ceiling, "share": share})
            s = summarise(points)
            out.append(
                {
                    "k": k,
                    "name": _name(key),
                    "seeds": sorted(r["subset"]["seed"] for r in group),
                    **{name: s.get(name) for name in ("route", "ceiling", "share")},
                }
            )
    return out


def _cell(figure: dict[str, Any] | None, unit: str = "") -> str:
    if figure is None:
        return "-"
    sd = f"{figure['sd']:.2f}" if figure["n"] > 1 else "-"
    return f"{figure['mean']:.2f}{unit} (sd {sd}, n {figure['n']})"


def table(runs: list[dict[str, Any]]) -> str:
    """Markdown: a line per K and route."""
    lines = [
        "| train photos | route | seeds | val mIoU, `--crf` | the ceiling, `--crf` | share of the ceiling |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows(runs):
        seeds = ", ".join(map(str, row["seeds"]))
        lines.append(
            f"| {row['k']} | {row['name']} | {seeds} | {_cell(row['route'])} | "
            f"{_cell(row['ceiling'])} | {_cell(row['share'], ' %')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    ap = script_parser(__doc__)
    ap.add_argument("json", nargs="+", help="the runs' JSONs (paths, or globs in quotes)")
    text = table([run for _, run in load_runs(ap.parse_args(argv).json)])
    print(text)
    return text


if __name__ == "__main__":
    main()
