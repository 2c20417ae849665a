"""The entry points: ``python -m wsss`` runs the CLI, and the CLI reports user errors (wsss.core.errors)
as one line with a non-zero exit while any other exception keeps its traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

import wsss
import wsss.cli
import wsss.cli.data
from conftest import REPO
from wsss.core.errors import ConfigError, DataError, MissingFileError


def test_python_dash_m_wsss_runs_the_cli():
    env_path = str(REPO / "src")
    out = subprocess.run(
        [sys.executable, "-m", "wsss", "--help"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": env_path, "PATH": ""},
        timeout=300,
    )
    assert out.returncode == 0 and "check-data" in out.stdout


@pytest.mark.parametrize(
    ("error", "code"),
    [(DataError("a.png: bad"), 1), (MissingFileError("x: missing"), 1), (ConfigError("train.lr: bad"), 2)],
)
def test_user_errors_are_one_line(monkeypatch, capsys, tmp_path, error, code):
    def fail(a):
        raise error

    monkeypatch.setattr(wsss.cli.data, "cmd_check_data", fail)
    assert wsss.cli.main(["check-data", str(tmp_path)]) == code
    err = capsys.readouterr().err
    assert err == f"error: {error}\n"


@pytest.mark.parametrize("error", [KeyError("x"), ValueError("bug"), RuntimeError("bug")])
def test_unexpected_exceptions_keep_their_traceback(monkeypatch, tmp_path, error):
    def fail(a):
        raise error

    monkeypatch.setattr(wsss.cli.data, "cmd_check_data", fail)
    with pytest.raises(type(error)):
        wsss.cli.main(["check-data", str(tmp_path)])


@pytest.mark.parametrize("name", wsss.__all__)
def test_every_public_name_resolves(name):
    """The lazy exports of ``wsss`` point at modules that exist (a move must update them)."""
    assert getattr(wsss, name) is not None


def test_the_pre_release_package_alias_is_gone():
    with pytest.raises(AttributeError, match="datasets"):
        wsss.datasets  # noqa: B018
