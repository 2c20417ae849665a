"""The route's time estimates: their rates are the measured route's (src/wsss/pipelines/route_times.json), the same
figures as BENCHMARKS.md's table of that measurement, and they give back the measured times on the measured sets."""

from __future__ import annotations

import re

from conftest import REPO
from wsss.pipelines.estimates import measured, step_estimates


def _benchmarks_seconds() -> list[list[int]]:
    """The two step rows of BENCHMARKS.md's `wsss route` table: per row, ccp-dev's three seconds then coco128-dev's."""
    text = (REPO / "BENCHMARKS.md").read_text()
    rows = [
        line
        for line in text.splitlines()
        if line.startswith(("| classifier / CAMs / PAR labels |", "| DeepLab stage / `predict --crf` / reports |"))
    ]
    assert len(rows) == 2, "BENCHMARKS.md's table of the route's step times moved: update this test and the JSON"
    return [[int(n.replace(",", "")) for n in re.findall(r"([\d,]+) s", row)] for row in rows]


def test_the_rates_are_the_benchmarks_figures():
    first, second = _benchmarks_seconds()
    for column, key in ((0, "rca"), (3, "cam")):
        m = measured()[key]
        assert [m["classifier"], m["cam"], m["pseudo"]] == first[column : column + 3]
        assert [m["seg"], m["predict"], m["report"]] == second[column : column + 3]


def test_the_measured_set_gets_its_measured_times_back():
    for key, m in measured().items():
        counts = {"train": int(m["train"]), "val": int(m["val"])}
        same = {"classifier": (1000, 1000), "seg": (500, 500)}
        est = step_estimates(key, counts, same)
        assert est["classifier"] == m["classifier"] and est["seg"] == m["seg"]
        assert est["cam"] == m["cam"] and est["pseudo"] == m["pseudo"] and est["report"] == m["report"]
        assert abs(est["masks"] - m["predict"] * (m["train"] + m["val"]) / m["val"]) < 1e-9
        assert step_estimates(key, counts, {"classifier": (2000, 1000), "seg": (500, 500)})["classifier"] == (
            2 * m["classifier"]
        )


def test_labels_that_abstain_cost_the_measured_ratio_of_pars_time():
    for key, m in measured().items():
        counts = {"train": int(m["train"]), "val": int(m["val"])}
        same = {"classifier": (1000, 1000), "seg": (500, 500)}
        par, agree = (step_estimates(key, {**counts, "abstain": a}, same) for a in (0, 1))
        assert m["agree_over_par"] > 1 and abs(agree["pseudo"] - m["agree_over_par"] * par["pseudo"]) < 1e-9
        assert {k: v for k, v in agree.items() if k != "pseudo"} == {k: v for k, v in par.items() if k != "pseudo"}
