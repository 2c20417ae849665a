"""The step runner that ``wsss route`` and experiments/real_route.py share (pipelines/steps.py): each step timed
and logged (a stopped one too), its output transcribed with its exit status, the settings record checked."""

from __future__ import annotations

import json

import pytest

from wsss.core.errors import DataError, UsageError
from wsss.pipelines.steps import StepRunner, changed_settings, computed_words


def test_a_step_is_timed_logged_and_transcribed_a_failed_one_too(tmp_path):
    runner = StepRunner(tmp_path, command="test", transcript=tmp_path / "route.log")
    result, seconds = runner.run("cam", "wsss cam RUN", lambda: print("said") or 7)
    assert result == 7 and seconds == runner.times["cam"] >= 0

    def fails() -> None:
        raise UsageError("bad word")

    with pytest.raises(UsageError):
        runner.run("cam", "wsss cam RUN --again", fails)
    lines = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert [(e["step"], e["finished"]) for e in lines] == [("cam", True), ("cam", False)]
    assert runner.seconds_over_runs()["cam"] == pytest.approx(sum(e["seconds"] for e in lines))
    log = (tmp_path / "route.log").read_text()
    assert log.startswith("$ wsss cam RUN\nsaid\n# ended ") and ", exit 0\n" in log
    assert "$ wsss cam RUN --again\nerror: bad word\n" in log and log.rstrip().endswith(f"exit {UsageError.exit_code}")


def test_the_settings_record_is_checked_and_overwrite_clears_only_the_folders_own_outputs(tmp_path):
    runner = StepRunner(tmp_path / "out", command="test")
    runner.out.mkdir()
    assert runner.recorded() is None
    runner.record({"folds": 3, "overrides": ["train.lr=0.1"]})
    runner.settle({"folds": 3, "overrides": ["train.lr=0.1"]}, overwrite=False, own=["cls"], inputs=[])
    (runner.out / "cls").mkdir()
    with pytest.raises(UsageError, match=r"other settings \(folds: 3 -> 2\)"):
        runner.settle({"folds": 2, "overrides": ["train.lr=0.1"]}, overwrite=False, own=["cls"], inputs=[])
    with pytest.raises(UsageError, match="an input of this command inside"):
        runner.settle({"folds": 2}, overwrite=True, own=["cls"], inputs=[runner.out / "cls" / "photos"])
    runner.settle({"folds": 2}, overwrite=True, own=["cls"], inputs=[tmp_path / "photos"])
    assert not (runner.out / "cls").exists() and (runner.out / "route.json").is_file()
    (runner.out / "route.json").write_text("[]")
    with pytest.raises(DataError, match="not a route's record"):
        runner.recorded()


def test_settings_compare_what_is_computed_only():
    words = ["run.device=cuda", "infer.crf_workers=4", "data.num_workers=2", "run.threads=1", "train.lr=0.1"]
    assert computed_words(words) == ["train.lr=0.1"]
    assert changed_settings({"a": 1, "b": 2}, {"a": 1, "c": 3}) == ["b", "c"]
