"""How long each step of ``wsss route`` may take: the route's own measured times on the set its classifier was
chosen on, scaled to the photos given (a training by its iterations). An estimate on 2 CPU cores shared with other
jobs, as the times were measured (docs/own-photos.md#what-to-expect); a GPU is far faster."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path

# The route on each measured set, by its classifier: the set's train and val photos and each step's wall seconds on
# 2 loaded CPU cores, as data beside this module (route_times.json; the table of
# docs/benchmarks/real-photos.md#current-figures is the same measurement).
TIMES_FILE = Path(__file__).with_name("route_times.json")


@cache
def measured() -> dict[str, dict[str, float]]:
    """classifier -> the measured route's photo counts and step seconds (:data:`TIMES_FILE`)."""
    data = json.loads(TIMES_FILE.read_text())
    return {k: {n: v for n, v in row.items() if n != "set"} for k, row in data.items() if isinstance(row, dict)}


def step_estimates(
    classifier: str, counts: Mapping[str, int], iterations: Mapping[str, tuple[int, int]]
) -> dict[str, float | None]:
    """Seconds per step title (None: no measured rate). ``classifier``: the route's choice (``rca``, ``cam``; a preset
    of its own: the RCA route's rates, its training unestimated); ``counts``: ``train``, ``val``, ``new`` (photos of
    ``--images``), ``folds``, ``masked_train``, ``rounds`` (of ``--rounds``) and ``abstain`` (1: the labels of
    ``--refine agree``, at the measured ratio of their time to PAR's); ``iterations``: per training
    (``classifier``, ``seg``) the route's iterations and those of the measured run."""
    times = measured()
    m = times.get(classifier, times["rca"])
    per_train = {k: m[k] / m["train"] for k in ("cam", "pseudo")}
    if counts.get("abstain"):  # a CRF per photo beside PAR
        per_train["pseudo"] *= m["agree_over_par"]
    per_predicted = m["predict"] / m["val"]

    def trained(step: str) -> float | None:
        if step == "classifier" and classifier not in times:
            return None
        mine, measured = iterations[step]
        return m[step] * mine / measured

    seg = trained("seg")
    folds = counts.get("folds", 0)
    return {
        "prepare": None,
        "check": None,
        "classifier": trained("classifier"),
        "cam": per_train["cam"] * counts["train"],
        "pseudo": per_train["pseudo"] * counts["train"],
        # each fold trains both stages; each masked photo is held once and predicted by both
        "choice": None if seg is None else folds * 2 * seg + 2 * per_predicted * counts.get("masked_train", 0),
        "seg": seg,
        "masks": per_predicted * (counts["train"] + counts["val"]),
        "report": m["report"],
        "new photos": per_predicted * counts.get("new", 0),
        # each round predicts the train photos as the masks step does, then trains the stage again
        **{title: seconds for r in range(1, counts.get("rounds", 0) + 1)
           for title, seconds in ((f"round {r} labels", per_predicted * counts["train"]), (f"round {r}", seg))},
    }  # fmt: skip
