"""``wsss predict --ensemble``: a member that is the run itself, or one listed twice, counts twice in the average:
legal, and said in one warning line."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsss.cli import main


@pytest.mark.parametrize("members", [["SELF"], ["OTHER", "OTHER"]])
def test_a_member_counted_twice_is_warned_of(
    reported_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], members: list[str]
) -> None:
    other = _copy(reported_copy, tmp_path / "other")
    alias = tmp_path / "alias"
    alias.symlink_to(other, target_is_directory=True)  # another name of one run: the same member
    first = {"SELF": str(reported_copy), "OTHER": str(other)}[members[0]]
    args = ["predict", str(reported_copy), "--split", "val", "--quiet", "--ensemble", first]
    assert main(args + ([str(alias)] if len(members) == 2 else [])) == 0
    err = capsys.readouterr().err
    if members == ["SELF"]:
        assert f"warning: {reported_copy}: an ensemble member that is the run itself counts twice" in err
    else:
        assert f"warning: {alias}: an ensemble member that is listed twice counts twice" in err
    assert err.count("warning:") == 1


def _copy(run: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("predictions*", "cams", "pseudo", "cam_labels"))
    return dest


def test_distinct_members_give_no_such_warning(
    reported_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = _copy(reported_copy, tmp_path / "seed_copy")
    assert main(["predict", str(reported_copy), "--split", "val", "--quiet", "--ensemble", str(other)]) == 0
    assert "counts twice" not in capsys.readouterr().err
