"""The route's time estimates (wsss.pipelines.estimates): a rate per unit of work for each step, the shipped ones
(src/wsss/pipelines/route_times.json) until a route has run on this machine, then this machine's measured ones."""

from __future__ import annotations

import json
import os

import pytest

from wsss.pipelines.estimates import (
    KEEP,
    LOAD_BAND,
    rates,
    read_step_log,
    record,
    shipped,
    shipped_photo_megapixels,
    step_estimates,
    step_work,
    user_rates_file,
)
from wsss.pipelines.steps import STEPS_LOG, StepRunner
from wsss.utils import cpuload
from wsss.utils.cpuload import CpuSample, others_share

COUNTS = {"train": 40, "val": 10, "new": 0, "folds": 0, "masked_train": 0, "rounds": 0, "abstain": 0}
ITERATIONS = {"classifier": 60, "seg": 60}


def test_every_step_of_the_cpu_routes_has_a_shipped_rate():
    for classifier in ("rca", "cam"):
        est = step_estimates(step_work(classifier, COUNTS, ITERATIONS), rates())
        for title in ("classifier", "cam", "pseudo", "seg", "masks", "report"):
            assert est[title] is not None and est[title] > 0, (classifier, title)
    per, mp = shipped(), shipped_photo_megapixels()
    est = step_estimates(step_work("cam", COUNTS, ITERATIONS), rates())
    # a per-photo step's work is its photos' megapixels: a photo of unknown size is as large as the shipped ones
    assert est["cam"] == pytest.approx(per["cam/cam"] * 40 * mp) and est["masks"] == pytest.approx(
        per["masks"] * 50 * mp
    )
    assert est["classifier"] == per["classifier/cam"] * 60 and est["check"] == per["check"] * 50
    large = step_estimates(step_work("cam", COUNTS, ITERATIONS, megapixels=2 * mp), rates())
    assert large["masks"] == pytest.approx(2 * est["masks"]) and large["pseudo"] == pytest.approx(2 * est["pseudo"])
    assert large["classifier"] == est["classifier"] and large["check"] == est["check"]
    abstain = step_estimates(step_work("cam", {**COUNTS, "abstain": 1}, ITERATIONS), rates())
    assert abstain["pseudo"] > est["pseudo"]


def test_a_gpu_route_or_a_preset_of_ones_own_is_none_measured_until_it_ran_here():
    est = step_estimates(step_work("cam", COUNTS, ITERATIONS, device="gpu"), rates())
    assert est["classifier"] is None and est["seg"] is None
    assert step_estimates(step_work("mine", COUNTS, ITERATIONS), rates())["classifier"] is None


def test_a_finished_step_teaches_the_next_plans_its_rate(tmp_path):
    path = tmp_path / "rates.json"
    work = step_work("cam", COUNTS, ITERATIONS, megapixels=0.5)
    record(work["cam"], 8.0, tmp_path / "route", path=path)  # 40 photos of half a megapixel in 8 s
    known = rates(path)
    assert known.seconds["cam/cam"] == 0.4 and known.seconds["seg"] == shipped()["seg"]
    more = step_work("cam", {**COUNTS, "train": 100}, ITERATIONS, megapixels=0.5)
    assert step_estimates(more, known)["cam"] == 20.0
    assert known.source(["cam/cam"]) == "measured on this machine, 1 run"
    assert known.source(["cam/cam", "seg"]) == "measured on this machine, 1 run; the shipped rates for seg"
    assert known.source(["seg"]).startswith("the shipped rates")
    for k in range(KEEP + 2):  # the recent runs only: the first ones fall out
        record(work["cam"], 40.0, tmp_path / f"route{k}", path=path)
    assert rates(path).seconds["cam/cam"] == 2.0 and rates(path).runs == KEEP + 3
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
    assert json.loads(broken.read_text())["rates"] == {"seg": [[30.0, 10, None]]}
    # a file of the form before (per-photo steps per photo, no version): its measurements are left out
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"rates": {"cam/cam": [[8.0, 40]]}, "routes": ["r"]}))
    assert not rates(old).measured and rates(old).runs == 0


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


def test_a_rate_is_of_the_measurements_timed_at_a_load_like_nows(tmp_path):
    path = tmp_path / "rates.json"
    for seconds, others in ((10.0, 0.0), (12.0, 0.05), (90.0, 0.8)):  # 40 photos alone, beside a light job, busy
        record([("cam/cam", 40)], seconds, tmp_path / f"r{seconds}", path=path, others=others)
    assert rates(path, others=0.0).seconds["cam/cam"] == (10.0 + 12.0) / 80  # both within LOAD_BAND of idle
    assert rates(path, others=0.7).seconds["cam/cam"] == 90.0 / 40
    assert rates(path).seconds["cam/cam"] == 112.0 / 120  # the load now unknown: every measurement
    assert 0.05 <= LOAD_BAND < 0.8
    data = json.loads(path.read_text())
    data["rates"]["cam/cam"].insert(0, [1000.0, 40])  # a measurement of an older file, its load unknown
    path.write_text(json.dumps(data))
    assert rates(path, others=0.0).seconds["cam/cam"] == (10.0 + 12.0) / 80  # left out where loads are known
    said = rates(path, others=0.25).source(["cam/cam"])
    assert "nearest now's" in said and "25% of the cores busy now" in said


def test_the_others_share_of_the_cores_is_the_machines_busy_time_less_ones_own():
    before = CpuSample(wall=100.0, busy=500.0, own=20.0, cores=2)
    # 10 s on 2 cores: 12 busy seconds, 4 of them this process's -> others 8 of 20
    assert others_share(before, CpuSample(110.0, 512.0, 24.0, 2)) == 0.4
    assert others_share(before, CpuSample(110.0, 530.0, 21.0, 2)) == 1.0  # clipped to the cores
    assert others_share(before, CpuSample(110.0, 503.0, 30.0, 2)) == 0.0  # children counted late: never below 0
    assert others_share(before, CpuSample(110.0, None, 24.0, 0)) is None
    assert others_share(before, CpuSample(100.0, 512.0, 24.0, 2)) is None  # no time passed


def test_the_machines_busy_time_is_read_from_proc_stat_or_unknown(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 20 30 400 50 1 2 3 0 0\ncpu0 50 10 15 200 25 0 1 1 0 0\ncpu1 50 10 15 200 25 1 1 2 0 0\n")
    got = cpuload.sample(stat)
    assert got.cores == 2 and abs(got.busy - (100 + 20 + 30 + 1 + 2 + 3) / os.sysconf("SC_CLK_TCK")) < 1e-9
    missing = cpuload.sample(tmp_path / "none")
    assert missing.busy is None and missing.cores == 0


def test_each_step_logs_how_busy_other_processes_kept_the_cores(tmp_path):
    runner = StepRunner(tmp_path, command="wsss route")
    runner.run("cam", "wsss cam", lambda: None)
    line = json.loads((tmp_path / STEPS_LOG).read_text())
    readable = cpuload.sample().busy is not None  # Linux: /proc/stat
    assert ("others_cpu" in line) == readable and (runner.others["cam"] is not None) == readable
    if readable:
        assert 0.0 <= line["others_cpu"] <= 1.0


def test_a_photos_mean_size_is_read_from_a_sample_of_their_headers(tmp_path):
    from PIL import Image

    from wsss.pipelines.route_data import mean_megapixels

    paths = []
    for k, (w, h) in enumerate([(100, 200), (300, 100), (50, 50)]):
        paths.append(tmp_path / f"{k}.png")
        Image.new("RGB", (w, h)).save(paths[-1])
    assert mean_megapixels(paths) == pytest.approx((0.02 + 0.03 + 0.0025) / 3, abs=1e-4)
    assert mean_megapixels(paths, most=2) == pytest.approx((0.02 + 0.0025) / 2, abs=1e-4)  # every other one
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert mean_megapixels([tmp_path / "broken.png"]) is None and mean_megapixels([]) is None
