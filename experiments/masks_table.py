"""The table of the masks experiment (docs/own-photos.md#how-many-masks): ``experiments/real_route.py --masks K ...``
JSONs of one data set, one per seed, as BENCHMARKS.md's "how many masks" table: for each K and arm, the val mIoU's
mean and range over the seeds, and its share of the ceiling inferred alike.

Two inferences: plain (``wsss predict``, the same for every arm) and the user's (arm (a), with no classifier,
``--crf``; (b), (c) and the ceiling ``--crf --tags-from`` the route's classifier, (d) its own classifier). The
share is taken against the ceiling of the same seed at the same inference ((a) against the ceiling with the CRF
alone), then averaged.

    .venv/bin/python experiments/masks_table.py runs/m61/ccp_s0.json runs/m61/ccp_s1.json runs/m61/ccp_s2.json
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from wsss.cli_common import script_parser

USER_KEY = {"a": "val_crf"}  # the inference each arm's user runs; the others "val_crf_tagged"


def _fmt(values: list[float], pct: bool = False) -> str:
    if not values:
        return "-"
    unit = " %" if pct else ""
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.2f}{unit}"
    return f"{mean:.2f}{unit} ({min(values):.2f}-{max(values):.2f})"


def arm_figures(results: list[dict[str, Any]], k: str, arm: str, inference: str) -> tuple[list[float], list[float]]:
    """(values, shares of the ceiling) of ``arm`` at ``k`` over the seeds that have it; ``inference``: "plain" or
    "user"."""
    values, shares = [], []
    for res in results:
        arms = res.get("masks", {}).get("arms", {})
        row, ceiling = arms.get(k, {}).get(arm), arms.get("ceiling")
        if row is None or ceiling is None:
            continue
        key = "val" if inference == "plain" else USER_KEY.get(arm, "val_crf_tagged")
        if key not in row or key not in ceiling:
            continue
        values.append(row[key])
        shares.append(100 * row[key] / ceiling[key])
    return values, shares


def table(results: list[dict[str, Any]]) -> str:
    """The markdown table of one data set's seeds."""
    weights = results[0]["masks"]["weights"]
    arms = ["a", "b", *(f"c_w{w:g}" for w in weights), "d"]
    names = {
        "a": "(a) the K masks alone",
        "b": "(b) the route, K masks for the level",
        **{f"c_w{w:g}": f"(c) the route with the K masks, weight {w:g}" for w in weights},
        "d": "(d) as (c) at weight 1, its classifier's CAMs taught the K masks",
    }
    lines = [
        "| K | arm | seeds | val, plain | share of the ceiling, plain | val, the user's inference "
        "| share, inferred alike |",
        "|---|---|---|---|---|---|---|",
    ]
    ceilings = [r["masks"]["arms"]["ceiling"] for r in results if "ceiling" in r["masks"]["arms"]]
    plain = [c["val"] for c in ceilings]
    user = [c["val_crf_tagged"] for c in ceilings if "val_crf_tagged" in c]
    crf = [c["val_crf"] for c in ceilings if "val_crf" in c]
    lines.append(
        f"| all | the ceiling (every train mask) | {len(plain)} | {_fmt(plain)} | 100 % | "
        f"{_fmt(user)} with `--crf --tags-from`; {_fmt(crf)} with `--crf` | 100 % |"
    )
    ks = sorted({k for r in results for k in r["masks"]["arms"] if k != "ceiling"}, key=int)
    for k in ks:
        levels = [r["masks"]["arms"][k]["level"] for r in results if k in r["masks"]["arms"]]
        for arm in arms:
            v, s = arm_figures(results, k, arm, "plain")
            u, us = arm_figures(results, k, arm, "user")
            diverged = sum("diverged" in r["masks"]["arms"].get(k, {}).get(arm, {}) for r in results)
            if not v and not diverged:
                continue
            how = "`--crf`" if arm == "a" else "`--crf --tags-from`"
            if arm == "d":  # its own classifier's level
                levels = [r["masks"]["arms"][k]["d"]["level"] for r in results if "d" in r["masks"]["arms"].get(k, {})]
            label = names[arm] + (f" (levels {', '.join(f'{x:g}' for x in levels)})" if arm in "bd" else "")
            label += f"; diverged in {diverged} seed{'s' * (diverged > 1)}" if diverged else ""
            lines.append(
                f"| {k} | {label} | {len(v)} | {_fmt(v)} | {_fmt(s, True)} | {_fmt(u)} {how} | {_fmt(us, True)} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    p = script_parser(__doc__)
    p.add_argument("jsons", nargs="+", help="the --json of each seed's run of one data set")
    args = p.parse_args(argv)
    out = table([json.loads(Path(j).read_text()) for j in args.jsons])
    print(out)
    return out


if __name__ == "__main__":
    main()
