"""A pipeline's steps on several GPUs (docs/distributed.md): a training as N processes of the ``torchrun`` path
(:func:`train_processes`), a per-photo step sharded over N processes (:func:`sharded`, ``runs/shard.py``'s
``--workers N``). Both run the ``wsss`` command a user would type, so a step run here is that command's."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence

from wsss.core.errors import DataError
from wsss.utils.procs import die_with_parent


def cuda_devices() -> int:
    """The CUDA devices this process sees (0 without CUDA; at least 1 where CUDA is available)."""
    import torch

    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 0


def torchrun_argv(processes: int, argv: Sequence[str]) -> list[str]:
    """``torchrun --standalone --nproc_per_node N -m wsss.cli ARGV`` as this Python runs it."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "wsss.cli",
        *argv,
    ]


def train_processes(processes: int, argv: Sequence[str]) -> None:
    """``wsss train ARGV`` as ``processes`` torchrun processes (one a GPU; gloo on the CPU), resumed from its
    ``last.pt`` as one process resumes; a failed one is a DataError naming the command and its last output."""
    cmd, parent = torchrun_argv(processes, ["train", *argv]), os.getpid()
    # the launcher ends with this process (SIGTERM: it stops its ranks and they save), killed or not
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
        preexec_fn=lambda: die_with_parent(signal.SIGTERM, parent),
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise DataError(f"`{' '.join(cmd[2:])}` failed (exit {done.returncode}): {' / '.join(tail)}")


@contextlib.contextmanager
def sharded(processes: int, argv: Sequence[str]) -> Iterator[object]:
    """A per-photo step (``wsss cam | pseudo | predict ARGV``) over ``processes`` processes: this one is rank 0, the
    others run ``ARGV`` (``runs/shard.job_processes``); one process: nothing started."""
    from wsss.runs.shard import job_processes

    with job_processes(processes if processes > 1 else 0, list(argv)) as procs:
        yield procs
