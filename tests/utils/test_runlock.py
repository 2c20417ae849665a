"""The lock of a run or a pipeline's folder (utils/runlock.py): a lock whose holder was killed is taken over with
one line; one let go normally, or by an error, names no holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings

import pytest

from conftest import REPO
from wsss.core.errors import ConfigWarning, UsageError
from wsss.utils.runlock import LOCK_FILE, run_dir_lock

HOLD = (
    "import sys, time; from wsss.utils.runlock import run_dir_lock\nwith run_dir_lock(sys.argv[1]):\n"
    "    print('held', flush=True); time.sleep(60)\n"
)


def _taken(folder) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with run_dir_lock(folder, command="wsss route", option="--out"):
            pass
    return [str(w.message) for w in caught if issubclass(w.category, ConfigWarning)]


def test_a_lock_of_a_killed_process_is_taken_over_with_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UsageError, match=rf"the run is in use by wsss train \(pid {holder.pid} on "):
            _taken(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    said = _taken(tmp_path)
    assert len(said) == 1 and f"taken over the lock of wsss train (pid {holder.pid} on " in said[0]
    assert said[0].endswith("which ended without letting it go (killed)")
    assert _taken(tmp_path) == []  # let go by its holder: nothing to say
    assert (tmp_path / LOCK_FILE).read_text() == ""


def test_a_lock_let_go_by_an_error_names_no_holder(tmp_path):
    with pytest.raises(ValueError), run_dir_lock(tmp_path):
        assert f"pid={os.getpid()}" in (tmp_path / LOCK_FILE).read_text()
        raise ValueError("bad input")
    assert (tmp_path / LOCK_FILE).read_text() == "" and _taken(tmp_path) == []
