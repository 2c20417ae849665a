"""The route's time estimates (wsss.pipelines.estimates): a rate per unit of work for each step, the shipped ones
(src/wsss/pipelines/route_times.json) until a route has run on this machine, then this machine's measured ones."""

from __future__ import annotations

import json

from wsss.pipelines.estimates import (
    KEEP,
    rates,
    read_step_log,
    record,
    shipped,
    step_estimates,
    step_work,
    user_rates_file,
)

COUNTS = {"train": 40, "val": 10, "new": 0, "folds": 0, "masked_train": 0, "rounds": 0, "abstain": 0}
ITERATIONS = {"classifier": 60, "seg": 60}


def test_every_step_of_the_cpu_routes_has_a_shipped_rate():
    for classifier in ("rca", "cam"):
        est = step_estimates(step_work(classifier, COUNTS, ITERATIONS), rates())
        for title in ("classifier", "cam", "pseudo", "seg", "masks", "report"):
            assert est[title] is not None and est[title] > 0, (classifier, title)
    per = shipped()
    est = step_estimates(step_work("cam", COUNTS, ITERATIONS), rates())
    assert est["cam"] == per["cam/cam"] * 40 and est["masks"] == per["masks"] * 50
    assert est["classifier"] == per["classifier/cam"] * 60
    abstain = step_estimates(step_work("cam", {**COUNTS, "abstain": 1}, ITERATIONS), rates())
    assert abstain["pseudo"] > est["pseudo"]


def test_a_gpu_route_or_a_preset_of_ones_own_is_none_measured_until_it_ran_here():
    est = step_estimates(step_work("cam", COUNTS, ITERATIONS, device="gpu"), rates())
    assert est["classifier"] is None and est["seg"] is None
    assert step_estimates(step_work("mine", COUNTS, ITERATIONS), rates())["classifier"] is None


def test_a_finished_step_teaches_the_next_plans_its_rate(tmp_path):
    path = tmp_path / "rates.json"
    work = step_work("cam", COUNTS, ITERATIONS)
    record(work["cam"], 8.0, tmp_path / "route", path=path)  # 40 photos in 8 s
    known = rates(path)
    assert known.seconds["cam/cam"] == 0.2 and known.seconds["seg"] == shipped()["seg"]
    assert step_estimates(step_work("cam", {**COUNTS, "train": 100}, ITERATIONS), known)["cam"] == 20.0
    assert known.source(["cam/cam"]) == "measured on this machine, 1 run"
    assert known.source(["cam/cam", "seg"]) == "measured on this machine, 1 run; the shipped rates for seg"
    assert known.source(["seg"]).startswith("the shipped rates")
    for k in range(KEEP + 2):  # the recent runs only: the first ones fall out
        record(work["cam"], 40.0, tmp_path / f"route{k}", path=path)
    assert rates(path).seconds["cam/cam"] == 1.0 and rates(path).runs == KEEP + 3
    record(work["choice"] or [("seg", 1), ("masks", 1)], 5.0, tmp_path / "route", path=path)  # two rates: not split
    assert "masks" not in rates(path).measured


def test_the_rates_file_is_the_users_cache_and_a_broken_one_is_the_shipped_rates(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_rates_file() == tmp_path / "xdg" / "wsss" / "route_rates.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_rates_file() == tmp_path / "home" / ".cache" / "wsss" / "route_rates.json"
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert rates(broken).seconds == shipped() and not rates(broken).measured
    record([("seg", 10)], 30.0, tmp_path, path=broken)  # written anew
    assert json.loads(broken.read_text())["rates"] == {"seg": [[30.0, 10]]}


def test_the_step_log_says_what_finished_and_what_a_stopped_step_spent(tmp_path):
    log = tmp_path / "steps.jsonl"
    lines = [
        {"step": "cam", "seconds": 3, "finished": True},
        {"step": "pseudo", "seconds": 5, "finished": False},
        {"step": "pseudo", "seconds": 7, "finished": False},
        {"step": "seg", "seconds": 2, "finished": False},
    ]
    log.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"step": "se')  # a kill cut the last line short
    assert read_step_log(log) == ({"cam"}, {"pseudo": 12.0, "seg": 2.0})
    assert read_step_log(tmp_path / "none.jsonl") == (set(), {})
