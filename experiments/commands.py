"""Running ``wsss`` commands from an experiment: the one runner of every script of ``experiments/``.

A script runs each step of its protocol as the command a user would type, so that its figures are those of the
product's commands. :func:`run_wsss` runs one, in this process (no start-up per command: tests and short steps) or
as a child process whose output goes to a log (long protocols, whose every step a user can read and rerun), and
raises :class:`CommandFailed` when it fails, with its exit status (a training that diverged exits 3,
``wsss.core.errors.TrainingDiverged``: a sweep records it and goes on) and the last ``error:`` line of its log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import IO

from wsss.utils.procs import die_with_parent

REPO = Path(__file__).resolve().parents[1]


class CommandFailed(SystemExit):
    """A ``wsss`` command that failed: ``exit_status``, its exit status; ``error``, the last ``error:`` line of the
    log (its own, if it wrote one; empty without a log). Uncaught, it ends the script with its message."""

    def __init__(self, message: str, exit_status: int, error: str = "") -> None:
        super().__init__(message)
        self.exit_status = exit_status
        self.error = error


def run_wsss(*args: str, log: Path | None = None, in_process: bool = True) -> float:
    """Run ``wsss ARGS``; its wall seconds. Its command line and output are appended to ``log`` (printed without
    one), then a line of when it ended, its wall seconds and its exit status (where a long protocol's time went:
    read from the log of a run cut short); ``in_process``: by ``wsss.cli.main`` in this process, else as a child
    (:func:`run_child`)."""
    t = time.perf_counter()
    with open(log, "a") if log is not None else contextlib.nullcontext(sys.stdout) as out:
        out.write(f"$ wsss {' '.join(args)}\n")
        out.flush()
        if not in_process:
            code = run_child([sys.executable, "-m", "wsss", *args], out)
        elif log is None:
            code = _main(args)
        else:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                code = _main(args)
        wall = time.perf_counter() - t
        if log is not None:
            out.write(f"# ended {time.strftime('%H:%M:%S')}, {wall:.1f} s, exit {code}\n")
    if code != 0:
        errors = [line for line in log.read_text().splitlines() if line.startswith("error: ")] if log else []
        where = f": see {log}" if log is not None else ""
        raise CommandFailed(f"wsss {' '.join(args)} failed (exit {code}){where}", code, errors[-1] if errors else "")
    return wall


def _main(args: tuple[str, ...]) -> int:
    from wsss.cli import main

    try:
        return main(list(args))
    except SystemExit as e:  # argparse's usage errors (2), --version (0): the status Python's exit would give
        return 0 if e.code is None else e.code if isinstance(e.code, int) else 1


def run_child(cmd: list[str], out: IO[str]) -> int:
    """Run ``cmd`` in the repository, its output to ``out``; its exit status. The child ends with this process:
    the kernel sends it SIGTERM when this process ends, by SIGTERM or SIGKILL too
    (``wsss.utils.procs.die_with_parent``), and a ``wsss`` command takes SIGTERM as Ctrl-C (a training saves its
    step and resumes from it)."""
    starter = partial(die_with_parent, signal.SIGTERM, os.getpid())
    return subprocess.run(cmd, cwd=REPO, stdout=out, stderr=out, preexec_fn=starter).returncode
