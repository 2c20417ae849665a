"""The candidates past the route's first labels, cross-validated: the table of
docs/benchmarks/history/real-photos.md#past-the-first-labels from the JSONs of ``experiments/real_route.py --level own``
folds (one ``--fold F/5`` JSON each, or a ``--folds 5`` JSON), per set.

Each candidate's gain is its val mIoU with ``--crf`` less the same fold's route (the first DeepLab stage on PAR labels
at the preset's level, with ``--crf``). The rule, fixed before the runs: the route adopts a candidate only if, on
every set, all five folds have run and its mean gain exceeds twice the standard deviation of its per-fold gains.
A fold whose gain is 0 or less decides it before the others run: over five values, none lies further than
4 / sqrt(5) (1.79) sample standard deviations from their mean (Samuelson's inequality), so a mean over twice the
deviation leaves every value above 0.

A candidate that changes the classifier (EfficientNet-Lite0's) is a route of its own: its folds' JSONs come with
``--arm SET NAME JSON ...`` and are read beside the set's folds of the same index, under ``arms.NAME``.

    .venv/bin/python experiments/candidates_table.py --set ccp-dev runs/i90/json/ccp-dev_fold*.json \\
        --set coco128-dev runs/i90/json/coco128-dev_fold*.json \\
        --arm ccp-dev effnet runs/i90/json/eff_ccp-dev_fold*.json \\
        --arm coco128-dev effnet runs/i90/json/eff_coco128-dev_fold*.json
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: its package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.route_folds import figures, summarise  # noqa: E402
from wsss.cli_common import script_parser  # noqa: E402

FOLDS = 5
# a value's furthest distance from the mean of FOLDS values, in sample standard deviations (Samuelson): under 2, a
# fold's gain of 0 or less already fails the rule
EARLY = (FOLDS - 1) / math.sqrt(FOLDS) < 2
ROUTE = "seg_rounds.0.val_crf"  # the route's own figure: one stage on PAR labels at the preset's level, --crf
# candidate -> (its figure, the route's figure it is judged against); the plain rows decide nothing
CANDIDATES = {
    "self-training: one more round (`--rounds 1`)": ("seg_rounds.1.val_crf", ROUTE),
    "labels that abstain (`--abstain`)": ("abstain.val_crf", ROUTE),
    "the stage's consistency on the val photos (`seg.loss.weights.consistency=1 ...`)": (
        "variants.consistency.val_crf",
        ROUTE,
    ),
    "a loss that tolerates noisy labels (`seg.options.seg_loss=gce`)": ("variants.gce.val_crf", ROUTE),
    "EfficientNet-Lite0 as the stage's backbone": ("variants.effseg.val_crf", ROUTE),
    "EfficientNet-Lite0 as the classifier (arm effnet)": ("arms.effnet.seg_rounds.0.val_crf", ROUTE),
    "EfficientNet-Lite0 as both (arm effnet, its effseg variant)": ("arms.effnet.variants.effseg.val_crf", ROUTE),
}
PLAIN = {
    "self-training, plain": ("seg_rounds.1.val", "seg_rounds.0.val"),
    "labels that abstain, plain": ("abstain.val", "seg_rounds.0.val"),
    "consistency, plain": ("variants.consistency.val", "seg_rounds.0.val"),
    "the noisy-label loss, plain": ("variants.gce.val", "seg_rounds.0.val"),
    "EfficientNet-Lite0, the stage, plain": ("variants.effseg.val", "seg_rounds.0.val"),
    "EfficientNet-Lite0, the classifier, plain": ("arms.effnet.seg_rounds.0.val", "seg_rounds.0.val"),
    "EfficientNet-Lite0, both, plain": ("arms.effnet.variants.effseg.val", "seg_rounds.0.val"),
}
# figures shown beside the gains: the labels each stage learnt from, on the train masks
FIGURES = {
    ROUTE: "the route: one stage, val, `--crf`",
    "seg_rounds.0.val": "the route: one stage, val, plain",
    "pseudo.par": "its PAR labels, train masks",
    "seg_rounds.0.train_predictions": "round 2's labels (round 1's masks, `--labelled-only --crf`), train masks",
    "abstain.pseudo.miou": "the labels that abstain, train masks (255 as background)",
    "abstain.pseudo.pseudo_miou": "the labels that abstain, on the pixels they label",
    "abstain.pseudo.ignored_share": "the labels that abstain: share of pixels left at 255 (%)",
    "arms.effnet.pseudo.par": "EfficientNet-Lite0 classifier's PAR labels, train masks",
}


def read_folds(paths: list[str]) -> list[dict[str, Any]]:
    """The folds the JSONs hold (a ``--fold`` JSON is one, a ``--folds`` JSON its ``folds``), by fold index; a fold
    given twice is refused (SystemExit naming both files)."""
    folds: dict[int, tuple[dict[str, Any], str]] = {}
    for path in paths:
        try:
            res = json.loads(Path(path).read_text())
            entries = res.get("folds", [res])
            indexed = [(int(e["fold"]["fold"]), e) for e in entries]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise SystemExit(f"{path}: not the JSON of a --fold or --folds run ({e!r})") from None
        for fold, entry in indexed:
            if fold in folds:
                raise SystemExit(f"{path}: fold {fold} is in {folds[fold][1]} too: pass one of them")
            folds[fold] = entry, path
    return [folds[f][0] for f in sorted(folds)]


def gains(folds: list[dict[str, Any]], figure: str, against: str) -> dict[int, float]:
    """``figure`` less ``against`` in each fold that has both, by fold index."""
    flat = {int(r["fold"]["fold"]): figures(r) for r in folds}  # each fold's numbers by dotted key path
    pairs = {f: (numbers.get(figure), numbers.get(against)) for f, numbers in flat.items()}
    return {f: a - b for f, (a, b) in pairs.items() if a is not None and b is not None}


def verdict(per_set: dict[str, dict[int, float]]) -> str:
    """The rule over every set's per-fold gains (see the module docstring)."""
    losing = [f"{name} fold {f}: {g:+.2f}" for name, gs in per_set.items() for f, g in gs.items() if g <= 0]
    short = [f"{name} {len(g)} of {FOLDS}" for name, g in per_set.items() if len(g) < FOLDS]
    if short and losing and EARLY:
        return f"not adopted, whatever the other folds give (a gain <= 0: {'; '.join(losing)})"
    if short:
        return f"undecided (folds run: {', '.join(short)})"
    failed = []
    for name, g in per_set.items():
        s = summarise([{"g": x} for x in g.values()])["g"]
        if not s["mean"] > 2 * s["sd"]:
            failed.append(f"{name}: {s['mean']:+.2f} <= 2 x {s['sd']:.2f}")
    return "**adopted**" if not failed else f"not adopted ({'; '.join(failed)})"


def _cell(g: dict[int, float]) -> str:
    if not g:
        return "not run"
    s = summarise([{"g": x} for x in g.values()])["g"]
    folds = " / ".join(f"{x:+.2f}" for x in g.values())
    return f"{s['mean']:+.2f} (sd {s['sd']:.2f}; n {len(g)}: {folds})"


def with_arm(folds: list[dict[str, Any]], name: str, arm: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``folds`` with each fold of ``arm`` (another route's, by fold index) under ``arms.NAME``; a fold of the arm that
    the set lacks is refused (SystemExit), as its gain would have no route to be measured against."""
    by_fold = {int(r["fold"]["fold"]): r for r in folds}
    missing = sorted(set(int(r["fold"]["fold"]) for r in arm) - set(by_fold))
    if missing:
        raise SystemExit(f"--arm {name}: folds {missing} have no fold of the set's own route to be measured against")
    for r in arm:
        by_fold[int(r["fold"]["fold"])].setdefault("arms", {})[name] = r
    return folds


def table(sets: dict[str, list[dict[str, Any]]]) -> str:
    """The markdown tables: the figures per set, then each candidate's gain per set and the rule's verdict."""
    names = list(sets)
    lines = [f"| figure | {' | '.join(names)} |", f"|---|{'---|' * len(names)}"]
    flat = {name: [figures(r) for r in folds] for name, folds in sets.items()}
    for key, label in FIGURES.items():
        cells = []
        for numbers in flat.values():
            vals = [v for v in (n.get(key) for n in numbers) if v is not None]
            s = summarise([{"v": v} for v in vals]).get("v")
            cells.append(f"{s['mean']:.2f} (sd {s['sd']:.2f}; n {len(vals)})" if s else "not run")
        lines.append(f"| {label} | {' | '.join(cells)} |")
    lines += [
        "",
        f"| candidate, gain over the route | {' | '.join(names)} | the rule |",
        f"|---|{'---|' * (len(names) + 1)}",
    ]
    for label, (figure, against) in {**CANDIDATES, **PLAIN}.items():
        per_set = {name: gains(folds, figure, against) for name, folds in sets.items()}
        rule = verdict(per_set) if label in CANDIDATES else "decides nothing"
        lines.append(f"| {label} | {' | '.join(_cell(g) for g in per_set.values())} | {rule} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    p = script_parser(__doc__)
    p.add_argument(
        "--set",
        nargs="+",
        action="append",
        required=True,
        metavar=("NAME", "JSON"),
        help="a set's name and its folds' JSONs (repeat for each set)",
    )
    p.add_argument(
        "--arm",
        nargs="+",
        action="append",
        default=[],
        metavar=("SET", "NAME"),
        help="another route's folds on SET (JSONs after NAME) as arms.NAME of its folds",
    )
    args = p.parse_args(argv)
    if any(len(s) < 2 for s in args.set):
        p.error("--set NAME JSON [JSON ...]: a name and at least one JSON")
    if any(len(a) < 3 for a in args.arm):
        p.error("--arm SET NAME JSON [JSON ...]: a set, a name and at least one JSON")
    sets = {s[0]: read_folds(s[1:]) for s in args.set}
    for set_name, name, *paths in args.arm:
        if set_name not in sets:
            p.error(f"--arm {set_name}: no --set of that name")
        with_arm(sets[set_name], name, read_folds(paths))
    text = table(sets)
    print(text)
    return text


if __name__ == "__main__":
    main()
