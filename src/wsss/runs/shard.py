"""Per-id jobs (``wsss cam | pseudo | predict``) over several processes (docs/speed.md#targets: inference
over a split uses every core and every GPU it is given).

The split of the work is the official COCO inference's (``Subset(range(rank, N, world))``): rank r of
``world`` takes every ``world``-th id, from the r-th, of the ids still to write. The processes are

- torchrun's: ``torchrun --nproc_per_node N -m wsss cam RUN --split S`` (and across nodes); RANK,
  WORLD_SIZE, LOCAL_RANK and MASTER_ADDR / MASTER_PORT come from the environment;
- or, without torchrun, ``--workers N``: this process is rank 0 and starts N - 1 copies of the same
  command on this machine (:func:`job_processes`).

Every rank writes its own ids (atomic, skip-if-present, as in one process), so a killed rank loses
only its unfinished ids and rerunning the same command finishes the job. The process group is gloo
whatever the device: it carries two small messages per job (the ids to do and the address of the
job's counter store), never tensors. Rank 0 lists the ids to do before any rank writes
(:func:`shared_todo`), shows the one progress bar of the job and, once every rank reported, prints
the summary (:func:`run_ids`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from wsss.core.errors import ConfigWarning, DataError, UsageError
from wsss.utils.procs import PARENT_ENV, die_with_starter

if TYPE_CHECKING:
    import torch.distributed as dist

# torch is imported in the functions, after `--workers` started its workers: each import takes seconds,
# and the workers' imports then run beside this process's instead of after it.

T = TypeVar("T")

# The local workers this process started (``job_processes``), watched by ``run_ids`` while rank 0
# waits for them: a worker that dies is reported instead of waited for.
_CHILDREN: list[subprocess.Popen] = []

# How long a stopping rank 0 (an error, Ctrl-C, SIGTERM) gives its local workers to stop before killing them.
STOP_GRACE_S = 5.0

# How long rank 0 waits for the other processes to join the group (they import torch and load the run).
JOIN_TIMEOUT = timedelta(minutes=10)


def share(ids: Sequence[T], rank: int, world: int) -> list[T]:
    """Rank ``rank``'s share of ``ids`` among ``world`` processes: ``ids[rank::world]``.

    Round-robin, as the official ``Subset(range(rank, N, world))``: neighbouring ids (often of similar
    size and cost) go to different ranks, and the shares differ by at most one id.
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in a world of {world}")
    return list(ids[rank::world])


@dataclass
class JobSummary:
    """What one per-id job did, over all its processes (rank 0) or in this process (other ranks)."""

    desc: str
    written: int
    skipped: int  # present before the job started (not redone without --overwrite)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, the one-line error)
    seconds: float = 0.0
    processes: int = 1
    not_done: int = 0  # ids of a rank that stopped before finishing its share

    def line(self) -> str:
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        procs = f", {self.processes} processes" if self.processes > 1 else ""
        out = (
            f"{self.desc}: {self.written} written, {self.skipped} skipped, {len(self.failed)} failed "
            f"in {self.seconds:.1f} s ({rate:.2f} images/s{procs})"
        )
        return out + (f", {self.not_done} not done" if self.not_done else "")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _threads_per_process(processes: int) -> int:
    """Torch threads of each local worker: OMP_NUM_THREADS if set (as torchrun), else a share of this
    machine's cores (at least one): N processes with every core each spin against each other
    (BENCHMARKS.md, make demo budget)."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    return int(given) if given.isdigit() and int(given) > 0 else max(1, (os.cpu_count() or 1) // processes)


def _without_workers(argv: Sequence[str]) -> list[str]:
    """``argv`` without its ``--workers N`` (a worker runs the command once, as its rank)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            out.append(arg)
    return out


@dataclass
class Processes:
    """This process's place among the processes of one command."""

    rank: int
    world: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _start_ranks(workers: int, argv: Sequence[str], port: int, threads: int) -> list[subprocess.Popen]:
    """Ranks 1 .. ``workers - 1`` of a ``--workers`` job: ``python -m wsss.cli *argv`` (without ``--workers``)
    with torchrun's environment, ``threads`` torch threads each, and this process named as their starter
    (they end with it: ``utils.procs.die_with_starter``)."""
    children = []
    for r in range(1, workers):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(r),
            "LOCAL_RANK": str(r),
            "WORLD_SIZE": str(workers),
            "LOCAL_WORLD_SIZE": str(workers),
            "OMP_NUM_THREADS": str(threads),
            PARENT_ENV: str(os.getpid()),
        }
        children.append(subprocess.Popen([sys.executable, "-m", "wsss.cli", *_without_workers(argv)], env=env))
    _CHILDREN[:] = children
    return children


def _end_ranks(children: list[subprocess.Popen], stop: bool) -> None:
    """Wait for the started ranks (``stop``: this process failed, so they are terminated first). A rank blocked
    in a collective whose peer left never sees SIGTERM: a short grace, then SIGKILL."""
    for child in children:
        if stop:
            child.terminate()
        try:
            child.wait(timeout=STOP_GRACE_S if stop else 60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    _CHILDREN.clear()


@contextlib.contextmanager
def job_processes(workers: int = 0, argv: Sequence[str] = ()) -> Iterator[Processes]:
    """The processes of one per-id command; this process's rank among them.

    Under torchrun (WORLD_SIZE > 1 in the environment) this process joins torchrun's group. Else, with
    ``workers`` > 1, it starts ``workers - 1`` copies of ``python -m wsss.cli *argv`` with torchrun's
    environment (ranks 1 ..), each with its share of the cores as torch threads, and joins them as
    rank 0. Otherwise it is the only process. On a machine with GPUs each process uses
    ``cuda:LOCAL_RANK`` (modulo the GPU count) as its default CUDA device. On exit the group is left,
    the workers are waited for (or stopped, if this process fails) and the thread count and CUDA device
    are restored.
    """
    if workers < 0:
        raise UsageError(f"--workers must be 0 or more, got {workers}")
    die_with_starter()  # a rank started by `--workers N` (its parent's signals stop it, or its death)
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    local = env_world == 1 and workers > 1
    port, per = (_free_port(), _threads_per_process(workers)) if local else (0, 0)
    children = _start_ranks(workers, argv, port, per) if local else []
    import torch
    import torch.distributed as dist

    from wsss.core.distributed import is_distributed

    threads, cuda_device = torch.get_num_threads(), torch.cuda.current_device() if torch.cuda.is_available() else None
    joined = False
    ok = False
    try:
        if env_world > 1:
            if workers > 1:
                warnings.warn(
                    ConfigWarning(f"--workers {workers} is ignored under torchrun (WORLD_SIZE {env_world})"),
                    stacklevel=3,
                )
            procs = Processes(int(os.environ["RANK"]), env_world, int(os.environ.get("LOCAL_RANK", "0")))
            if not is_distributed():
                dist.init_process_group("gloo", timeout=JOIN_TIMEOUT)
                joined = True
        elif workers > 1:
            torch.set_num_threads(per)
            dist.init_process_group(
                "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=workers, timeout=JOIN_TIMEOUT
            )
            joined = True
            procs = Processes(0, workers, 0)
        else:
            procs = Processes(0, 1, 0)
        if procs.world > 1 and torch.cuda.is_available():
            torch.cuda.set_device(procs.local_rank % torch.cuda.device_count())
        yield procs
        ok = True
    finally:
        if joined and is_distributed():
            dist.destroy_process_group()
        _end_ranks(children, stop=not ok)
        torch.set_num_threads(threads)
        if cuda_device is not None:
            torch.cuda.set_device(cuda_device)


def shared_todo(list_todo: Callable[[], list[str]]) -> list[str]:
    """The ids still to write, listed by rank 0 (which also removes the temporary files a killed run
    left: no other rank writes yet) and sent to every rank, so that the shares cover the list exactly
    even when a fast rank starts writing while a slow one would still be listing."""
    import torch.distributed as dist

    from wsss.core.distributed import rank, world_size

    if world_size() == 1:
        return list_todo()
    box: list[Any] = [list_todo() if rank() == 0 else None]  # every rank's slot holds rank 0's list after this
    dist.broadcast_object_list(box, src=0)
    return list(box[0])


def _job_store() -> dist.TCPStore | None:
    """A counter store for one job, served by rank 0 (its address sent over the group)."""
    import torch.distributed as dist

    from wsss.core.distributed import rank, world_size

    if world_size() == 1:
        return None
    host = os.environ.get("MASTER_ADDR", "127.0.0.1")
    server = dist.TCPStore(host, 0, world_size(), True, wait_for_workers=False) if rank() == 0 else None
    box: list[Any] = [server.port if server is not None else None]  # rank 0's port on every rank after this
    dist.broadcast_object_list(box, src=0)
    return server if server is not None else dist.TCPStore(host, int(box[0]), world_size(), False)


def _dead_worker() -> str | None:
    for r, child in enumerate(_CHILDREN, start=1):
        code = child.poll()
        if code is not None and code != 0:
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            return f"worker {r} (pid {child.pid}) stopped with {how}"
    return None


def _gather_job(store: Any, world: int, summary: JobSummary, bar: Any, total: int) -> None:
    """Rank 0: wait until every rank has finished (or one died), keeping the bar at the job's count, then
    complete ``summary`` with the whole job's written, failed and not-done ids."""
    stopped = None
    while store.add("finished", 0) < world and stopped is None:
        bar.update(store.add("done", 0) - bar.n)
        stopped = _dead_worker()
        time.sleep(0.1)
    done = store.add("done", 0)
    bar.update(done - bar.n)
    failed = []
    for r in range(world):
        if store.check([f"failed/{r}"]):
            failed += [tuple(x) for x in json.loads(store.get(f"failed/{r}"))]
    summary.failed = failed
    summary.written = done - len(failed)
    summary.not_done = total - done


def _raise_unfinished(summary: JobSummary, desc: str) -> None:
    """DataError when a rank stopped before its share was done, or when ids failed (after the summary line)."""
    if summary.not_done:
        why = _dead_worker() or "a process stopped"
        raise DataError(
            f"{desc}: {why} before finishing its share; {summary.not_done} ids are not written, "
            "rerun the same command to finish them"
        )
    if summary.failed:
        id, message = summary.failed[0]
        raise DataError(
            f"{desc}: {len(summary.failed)} ids failed (first {id}: {message}); "
            "the others are written, rerun the same command after fixing them"
        )


def run_ids(
    todo: Sequence[str],
    process: Callable[[list[str]], Iterator[tuple[str, str | None]]],
    *,
    desc: str,
    skipped: int = 0,
    progress: bool = True,
    threads: int = 0,
) -> JobSummary:
    """Run this rank's share of ``todo`` through ``process`` and summarise the job.

    ``threads``: torch's intra-op threads while ``process`` runs, the run's ``run.threads`` (0: as found), put back
    after: the per-photo commands honour it as ``wsss train`` does (before, they ran on torch's default of every
    core whatever the run said; several jobs on one machine then oversubscribed its cores).

    ``process(ids)`` yields ``(id, None)`` when an id's outputs are written, ``(id, message)`` when a
    user error (e.g. an unreadable image) stopped that id; the other ids go on. Rank 0 shows one
    progress bar for the whole job (every rank's ids, counted in a store it serves), waits for every
    rank and returns the job's summary; it prints the summary line (with images/s) unless
    ``progress`` is off, and raises :class:`DataError` naming the failed ids, or a worker that stopped
    before finishing, after the summary. The other ranks return their own counts.
    """
    import torch

    from wsss.core.distributed import rank, world_size
    from wsss.utils.progress import progress_bar

    me, world = rank(), world_size()
    store = _job_store()
    mine = share(list(todo), me, world)
    bar = progress_bar(total=len(todo), desc=desc, disable=not progress or me != 0)
    failed: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    found = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        for id, error in process(mine):
            if error is not None:
                failed.append((id, error))
            if store is None:
                bar.update(1)
            else:
                done = store.add("done", 1)
                if me == 0:
                    bar.update(done - bar.n)
    finally:
        torch.set_num_threads(found)
    summary = JobSummary(desc, len(mine) - len(failed), skipped, failed, 0.0, world)
    if store is not None:
        store.set(f"failed/{me}", json.dumps(failed))
        store.add("finished", 1)
        if me != 0:
            summary.seconds = time.perf_counter() - t0
            return summary
        _gather_job(store, world, summary, bar, len(todo))
    bar.close()
    summary.seconds = time.perf_counter() - t0
    if progress or summary.failed or summary.not_done:
        print(summary.line(), file=sys.stderr)
    _raise_unfinished(summary, desc)
    return summary
