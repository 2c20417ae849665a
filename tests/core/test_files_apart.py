"""``wsss.core.files``: an output never lands on an input or in a run's own files (:func:`check_output_apart`), a
folder that an output needs is never a file (one line, not a traceback), a failed write names the user's path
(never the temporary's), and a killed writer's temporary is removed by the next writer of the same file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wsss.core.errors import OutputError
from wsss.core.files import TEMP_SUFFIX, atomic_write, check_output_apart, check_output_file, remove_dead_temps
from wsss.utils.runlock import run_own_files


def a_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"weights")
    (run / "config.yaml").write_text("method: cam\n")
    return run


def test_an_output_on_an_input_or_in_a_runs_own_files_is_refused(tmp_path):
    run = a_run(tmp_path)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(b"png")
    inputs = [*run_own_files(run), photos]
    for out in (
        run / "checkpoints" / "last.pt",
        run / "checkpoints" / "best.pt",
        run / "config.yaml",
        run / "metrics.jsonl",
        photos / "a.png",
        photos / "new.png",
        photos,
        tmp_path / "x" / ".." / "run" / "config.yaml",
    ):
        with pytest.raises(OutputError, match=rf"^{out}: --out (names|lies in) "):
            check_output_apart(out, inputs)
    os.symlink(run / "checkpoints", tmp_path / "link")  # through a symlink
    with pytest.raises(OutputError, match="lies in"):
        check_output_apart(tmp_path / "link" / "best.pt", inputs)
    # beside them, and in the run's folders for outputs: allowed
    for out in (run / "export" / "m.onnx", run / "m.onnx", tmp_path / "photos.onnx", run / "checkpoints.onnx"):
        assert check_output_apart(out, inputs) == out


def test_a_folder_above_the_output_that_is_a_file_is_one_error_naming_it(tmp_path):
    (tmp_path / "a.onnx").write_bytes(b"x")
    with pytest.raises(OutputError, match=r"a.onnx/sub/x.onnx: cannot write: .*a.onnx is a file, not a folder"):
        check_output_file(tmp_path / "a.onnx" / "sub" / "x.onnx")
    with pytest.raises(OutputError, match="is a file, not a folder"), atomic_write(tmp_path / "a.onnx" / "x.onnx"):
        pass


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_write_that_cannot_start_names_the_users_path():
    with pytest.raises(OutputError) as e, atomic_write("/proc/m.onnx"):
        pass
    assert str(e.value).startswith("/proc/m.onnx: cannot write") and TEMP_SUFFIX not in str(e.value)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_writers_temporary_goes_with_the_next_write_of_that_file(tmp_path):
    out = tmp_path / "m.onnx"
    dead = tmp_path / f".m.onnx.{dead_pid()}.k2j4x{TEMP_SUFFIX}"
    live = tmp_path / f".m.onnx.{os.getppid()}.a8b9c{TEMP_SUFFIX}"  # a writer still running
    other = tmp_path / f".n.onnx.{dead_pid()}.a8b9c{TEMP_SUFFIX}"  # another file's
    users = tmp_path / ".m.onnx.notes.tmp"
    for p in (dead, live, other, users):
        p.write_bytes(b"partial")
    assert remove_dead_temps(out) == 1
    assert not dead.exists() and live.exists() and other.exists() and users.exists()
    with atomic_write(out) as f:  # its temporary names its writer
        (tmp,) = [p for p in tmp_path.glob(f".m.onnx.{os.getpid()}.*") if p.name.endswith(TEMP_SUFFIX)]
        f.write(b"model")
    assert not tmp.exists() and out.read_bytes() == b"model"
