"""experiments/commands.py: the runner of every experiment's ``wsss`` commands."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO
from experiments.commands import CommandFailed, run_wsss


@pytest.mark.parametrize("in_process", [True, False])
def test_a_failed_command_names_its_exit_status_and_its_error_line(tmp_path, in_process):
    """A failure carries the command's exit status (a sweep tells a diverged training, exit 3, from a bug by it) and
    the last ``error:`` line of its log, in this process or as a child."""
    log = tmp_path / "route.log"
    missing = tmp_path / "no_run"
    with pytest.raises(CommandFailed) as failed:
        run_wsss("cam", str(missing), "--split", "val", "--quiet", log=log, in_process=in_process)
    e = failed.value
    assert e.exit_status == 1 and e.error.startswith(f"error: {missing}") and str(log) in str(e)
    assert log.read_text().startswith(f"$ wsss cam {missing} --split val --quiet\n")
    ended = [line for line in log.read_text().splitlines() if line.startswith("# ended ")]  # when, how long, status
    assert len(ended) == 1 and re.fullmatch(r"# ended \d\d:\d\d:\d\d, \d+\.\d s, exit 1", ended[0])
    with pytest.raises(CommandFailed) as failed:  # argparse's usage error: its status, not its SystemExit
        run_wsss("no-such-command", log=log, in_process=in_process)
    assert failed.value.exit_status == 2


def test_without_a_log_the_command_line_is_printed_and_the_failure_says_its_status(capsys):
    run_wsss("--version")  # argparse's exit 0: a success, not a CommandFailed
    out = capsys.readouterr().out
    assert out.startswith("$ wsss --version\n") and out.splitlines()[1].startswith("wsss ")
    with pytest.raises(CommandFailed, match=r"^wsss no-such-command failed \(exit 2\)$") as failed:
        run_wsss("no-such-command")
    assert failed.value.error == ""


def test_a_wsss_command_ends_with_the_experiment(tmp_path):
    """SIGTERM to the experiment (kill, SLURM) reaches its running command as SIGTERM (a `wsss train` then saves
    its step). The command here is a Python child that notes the signal; before, it slept on after its parent
    had gone."""
    started, stopped = tmp_path / "started", tmp_path / "stopped"
    child = (
        f"import pathlib, signal, sys, time\n"
        f"def stop(*_): pathlib.Path({str(stopped)!r}).write_text('SIGTERM'); sys.exit(0)\n"
        f"signal.signal(signal.SIGTERM, stop)\n"
        f"pathlib.Path({str(started)!r}).touch()\n"
        f"time.sleep(60)\n"
    )
    parent = (
        "import sys\nfrom experiments.commands import run_child\n"
        f"with open({str(tmp_path / 'log')!r}, 'a') as f: run_child([sys.executable, '-c', {child!r}], f)\n"
    )
    experiment = subprocess.Popen([sys.executable, "-c", parent], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), "the child never started"
        experiment.send_signal(signal.SIGTERM)
        experiment.wait(timeout=30)
        deadline = time.monotonic() + 30
        # the file exists a moment before its text is written: wait for the text
        while not (stopped.exists() and stopped.read_text() == "SIGTERM") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stopped.exists() and stopped.read_text() == "SIGTERM"
    finally:
        experiment.kill()
