"""What a damaged run gives ``wsss report``: a metrics.jsonl with a bad line, a report/ that is a file or a link, a
negative --max-images: one ``error:`` line or a warning, never a traceback, and nothing written outside the run."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from wsss.cli import main
from wsss.core.errors import DataError, ResultWarning
from wsss.report.html import read_metrics


def _lines(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_a_last_line_cut_short_is_left_out_with_a_warning(tmp_path: Path) -> None:
    path = _lines(tmp_path / "metrics.jsonl", '{"step": 2, "loss/loss": 1.0}', '{"step": 4, "lo')
    with pytest.warns(ResultWarning, match=r"metrics.jsonl:2: the last line is cut short"):
        assert read_metrics(path) == [{"step": 2, "loss/loss": 1.0}]


@pytest.mark.parametrize(
    "bad, why",
    [
        ("not json", "not a JSON line"),
        ("[1, 2, 3]", "not a metrics record"),
        ('{"step": "x", "loss": "y"}', "not a metrics record"),
        ('{"loss/loss": 1.0}', "not a metrics record"),
        ("[" * 100_000 + "]" * 100_000, "not a JSON line"),
    ],
)
def test_a_bad_line_before_the_last_is_one_error_naming_the_file_and_line(tmp_path: Path, bad: str, why: str) -> None:
    path = _lines(tmp_path / "metrics.jsonl", '{"step": 2}', bad, '{"step": 4}')
    with pytest.raises(DataError, match=rf"metrics.jsonl:2: {why}"):
        read_metrics(path)


def test_a_cut_last_line_of_nested_brackets_is_an_error_not_a_recursion(tmp_path: Path) -> None:
    # the last line too: a RecursionError is no cut write
    path = _lines(tmp_path / "metrics.jsonl", '{"step": 2}', "[" * 100_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match=r"metrics.jsonl:2: not a JSON line"):
            read_metrics(path)


def test_report_of_a_run_with_a_bad_metrics_line_says_one_line(
    reported_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open(reported_copy / "metrics.jsonl", "a") as f:
        f.write("[1, 2, 3]\n" + json.dumps({"step": 99}) + "\n")
    assert main(["report", str(reported_copy), "--max-images", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a metrics record" in err and "Traceback" not in err


@pytest.mark.parametrize("kind", ["file", "link"])
def test_report_refuses_a_report_path_that_is_a_file_or_a_link_out_of_the_run(
    reported_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "index.html").write_text("the user's page")
    report = reported_copy / "report"
    if kind == "file":
        report.write_text("a note")
    else:
        report.symlink_to(outside, target_is_directory=True)
    assert main(["report", str(reported_copy), "--max-images", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {report}: is a {kind};") and "Traceback" not in err
    assert (outside / "index.html").read_text() == "the user's page"
    assert sorted(p.name for p in outside.iterdir()) == ["index.html"]


def test_report_refuses_a_negative_max_images(reported_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(reported_copy), "--max-images", "-1"]) == 1
    assert "--max-images -1: give 0 or more" in capsys.readouterr().err
    assert not (reported_copy / "report").exists()
