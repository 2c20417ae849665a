"""The tables of the cross-validated route: ``experiments/real_route.py --folds 5 --steps`` JSONs of
ccp-dev and coco128-dev, as BENCHMARKS.md's "the route's choices cross-validated" reports them.

For each set and route (a JSON; the 24-epoch one holds its gains over the 12-epoch one, ``--gain-over``): the
route's figures over the folds, then each choice's gain fold by fold, and the protocol's rule: a choice enters the
manual's advice only if its mean gain over the deciding set's folds (ccp-dev) exceeds the standard deviation of its
per-fold gains, and its mean gain over the other set's folds (coco128-dev) is not negative. A choice is decided
only when every fold of both sets has run; until then the table says how many have. Under the verdicts, for each
route whose JSON holds the floor (the mIoU of masks of background alone), where its masks stand against it fold by
fold: a set at its floor vetoes with masks that say about as much as none.

    .venv/bin/python experiments/cv_table.py --decide runs/cv/ccp-dev_e12.json runs/cv/ccp-dev_e24.json \\
        --veto runs/cv/coco128-dev_e12.json runs/cv/coco128-dev_e24.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wsss.cli_common import script_parser

# The route's figures (keys of the JSON's ``summary``), as named in the table.
FIGURES = {
    "seeds.level": "the level the sweep picks on train",
    "pseudo.par": "PAR labels, mIoU on the train masks",
    "seg_val.miou": "one stage, val, plain",
    "seg_rounds.0.val_crf": "one stage, val, `--crf`",
    "seg_rounds.0.val_crf_tagged": "one stage, val, `--crf --tags-from`",
    "seg_ensemble.val.crf_tagged": "three stages ensembled, val, `--crf --tags-from`",
    "own_level.val": "one stage on labels at the preset's own level, val, plain",
    "own_level.val_crf": "one stage on labels at the preset's own level, val, `--crf`",
    "own_level.val_crf_tagged": "one stage on labels at the preset's own level, val, `--crf --tags-from`",
    "floor": "the floor: masks of background alone, val",
    "tags.precision": "the classifier's tags on val: precision",
    "tags.recall": "the classifier's tags on val: recall",
}

# Each choice's gain (keys of ``summary`` for a route's own steps, of ``gain_over.summary`` for the choice of
# the route itself over the route it was run against), as named in the table.
STEPS = {
    "steps.crf": "`--crf` (one stage, plain -> CRF)",
    "steps.tags": "`--tags-from` (one stage, plain)",
    "steps.tags_after_crf": "`--tags-from` after the CRF",
    "steps.level": "the sweep's level on train over the preset's own (plain)",
    "steps.level_crf_tagged": "the sweep's level on train over the preset's own (`--crf --tags-from`)",
    "steps.ensemble_crf_tagged": "three stages ensembled over one (`--crf --tags-from`)",
}
# The figures whose gain a route run against another (``--gain-over``) is judged on, named as in FIGURES. With the
# 12-epoch verdicts the advice became the preset's level, one stage, `--crf` (BENCHMARKS.md): the stage with `--crf`
# and the stage on labels at the preset's level are among them (that stage with `--crf`, the advised route itself,
# only in JSONs from 2026-11-28 on).
OVER = (
    "pseudo.par",
    "seg_val.miou",
    "seg_rounds.0.val_crf",
    "seg_rounds.0.val_crf_tagged",
    "own_level.val",
    "own_level.val_crf",
    "own_level.val_crf_tagged",
    "seg_ensemble.val.crf_tagged",
)


def _folds(res: dict[str, Any]) -> tuple[int, int]:
    """(folds run, folds of the protocol) of a ``--folds`` JSON."""
    runs = res.get("folds", [])
    return len(runs), (runs[0]["fold"]["folds"] if runs else 0)


def _devices(res: dict[str, Any]) -> str:
    """ "; fold F ran with run.device=D" for each fold whose training options name a device (the presets' is the CPU):
    folds gathered from several machines (``real_route.py --reuse``) say where each ran."""
    said = []
    for run in res.get("folds", []):
        options = [*run.get("settings", {}).get("overrides", []), *run.get("settings", {}).get("seg_set", [])]
        devices = list(dict.fromkeys(o for o in options if o.startswith("run.device=")))
        if devices:
            said.append(f"fold {run['fold']['fold']} ran with {', '.join(devices)}")
    return "".join(f"; {s}" for s in said)


def _cell(row: dict[str, Any] | None) -> str:
    """mean (sd; each fold's value); a gain signed."""
    if row is None:
        return "-"
    fmt = "{:+.2f}" if row.get("gain") else "{:.2f}"
    values = " / ".join("-" if v is None else fmt.format(v) for v in row["values"])  # None: undefined in that fold
    return f"{fmt.format(row['mean'])} (sd {row['sd']:.2f}; {values})"


def gains(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The choices a route's JSON measures, name -> its summary row (mean, sd, values) marked as a gain."""
    out = {}
    for key, name in STEPS.items():
        if key in res.get("summary", {}):
            out[name] = {**res["summary"][key], "gain": True}
    over = res.get("gain_over")
    if over:  # named alike in both sets (each set's route was run against its own JSON, named in the figures)
        for key in OVER:
            if key in over["summary"]:
                out[f"this route over its `--gain-over` route: {FIGURES[key]}"] = {**over["summary"][key], "gain": True}
    return out


def verdict(decide: dict[str, Any] | None, veto: dict[str, Any] | None, folds: tuple[int, int] | None) -> str:
    """The protocol's rule for one choice (BENCHMARKS.md, "the route's choices cross-validated"); ``folds``: each
    set's folds when every one has run (None before): a gain over fewer (a ``--gain-over`` route stopped early) or
    undefined in one decides nothing."""
    if decide is None or veto is None or folds is None or None in (*decide["values"], *veto["values"]):
        return "undecided"
    if (len(decide["values"]), len(veto["values"])) != folds:
        return "undecided"
    if decide["mean"] > decide["sd"] and veto["mean"] >= 0:
        return "**enters the advice**"
    why = []
    if decide["mean"] <= decide["sd"]:
        why.append("gain within its spread")
    if veto["mean"] < 0:
        why.append("loses on the other set")
    return "leaves the advice (" + ", ".join(why) + ")"


def floor_note(res: dict[str, Any], name: str) -> str | None:
    """Where a route's masks stand against the floor of its val photos (masks of background alone score it), fold by
    fold: a set whose masks are at or below it measures a choice by masks that say about as much as none (on
    coco128-dev, found by the cross-validation). None where the JSON has no floor."""
    s = res.get("summary", {})
    if "floor" not in s or "seg_val.miou" not in s:
        return None
    floor = s["floor"]["values"]
    pairs = [(v, f) for v, f in zip(s["seg_val.miou"]["values"], floor) if v is not None and f is not None]
    below = sum(v < f for v, f in pairs)
    note = f"{name}: the one stage (plain) is below the floor in {below} of {len(pairs)} folds"
    tagged = s.get("seg_rounds.0.val_crf_tagged")
    if tagged:
        over = [v - f for v, f in zip(tagged["values"], floor) if v is not None and f is not None]
        note += f"; with `--crf --tags-from` it is {min(over):+.2f} to {max(over):+.2f} from it"
    return note + " (the floor: what masks of background alone score on the same photos)"


def tables(decide: list[dict[str, Any]], veto: list[dict[str, Any]], names: tuple[str, str]) -> str:
    """Markdown: the routes' figures per set, then each choice's gains and verdict (routes paired by position)."""
    lines = []
    for set_name, results in zip(names, (decide, veto)):
        for i, res in enumerate(results):
            done, of = _folds(res)
            over = (
                f"; its own figures here, its gains over {Path(res['gain_over']['other']).name} in the rule's table"
                if res.get("gain_over")
                else ""
            )
            lines += [
                f"{set_name}, route {i + 1} ({done} of {of} folds run{over}{_devices(res)}): mean (sd; per fold)",
                "",
                "| figure | over the folds |",
                "|---|---|",
            ]
            lines += [
                f"| {name} | {_cell(res['summary'].get(key))} |"
                for key, name in FIGURES.items()
                if key in res.get("summary", {})
            ]
            lines.append("")
    lines += [f"| route | choice | {names[0]}: gain | {names[1]}: gain | the rule |", "|---|---|---|---|---|"]
    for i, (d, v) in enumerate(zip(decide, veto)):
        complete = all(_folds(r)[0] == _folds(r)[1] > 0 for r in (d, v))
        folds = (_folds(d)[1], _folds(v)[1]) if complete else None
        dg, vg = gains(d), gains(v)
        for name in dict.fromkeys([*dg, *vg]):
            lines.append(
                f"| {i + 1} | {name} | {_cell(dg.get(name))} | {_cell(vg.get(name))} | "
                f"{verdict(dg.get(name), vg.get(name), folds)} |"
            )
    notes = [floor_note(r, f"{n}, route {i + 1}") for n, rs in zip(names, (decide, veto)) for i, r in enumerate(rs)]
    if any(notes):  # beside the verdicts: a veto by a set at its floor says little (BENCHMARKS.md)
        lines += ["", *(f"- {n}" for n in notes if n)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    ap = script_parser(__doc__)
    ap.add_argument("--decide", nargs="+", required=True, type=Path, help="the deciding set's JSONs, one per route")
    ap.add_argument("--veto", nargs="+", required=True, type=Path, help="the other set's JSONs, the same routes")
    ap.add_argument("--names", nargs=2, default=("ccp-dev", "coco128-dev"), help="the two sets' names")
    a = ap.parse_args(argv)
    if len(a.decide) != len(a.veto):
        raise SystemExit("--decide and --veto name the same routes: give as many JSONs to each")
    load = [json.loads(p.read_text()) for p in a.decide], [json.loads(p.read_text()) for p in a.veto]
    text = tables(*load, tuple(a.names))
    print(text)
    return text


if __name__ == "__main__":
    main()
