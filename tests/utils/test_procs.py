"""Loader workers and stop signals (``wsss.utils.procs``): a worker forked while the job is being stopped takes the
stop only once its own handler is set (the intermittent SIGTERM-to-the-job failure)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from wsss.utils.procs import leave_stops_to_parent, stops_held_for_children

pytestmark = pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")


def _late_worker(queue: multiprocessing.Queue) -> None:
    """A worker whose init runs late: the stop reaches it before its handler exists."""
    blocked = signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    queue.put("started")
    time.sleep(1.0)  # the parent's SIGTERM arrives meanwhile
    leave_stops_to_parent()  # its handler, then the pending stop: the grace period begins, the worker goes on
    queue.put((blocked, signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, [])))


def _run_worker(held: bool) -> tuple[int | None, list]:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_late_worker, args=(queue,))
    if held:
        with stops_held_for_children():
            proc.start()
    else:
        proc.start()
    got = [queue.get(timeout=30)]
    os.kill(proc.pid, signal.SIGTERM)
    proc.join(timeout=30)
    while not queue.empty():
        got.append(queue.get(timeout=5))
    return proc.exitcode, got


def test_a_worker_started_with_stops_held_takes_a_stop_only_through_its_own_handler():
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    code, got = _run_worker(held=True)
    assert code == 0 and got == ["started", (True, False)]  # blocked from its fork until its handler; alive after
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before  # the parent's mask is restored


def test_without_the_hold_the_stop_ends_a_worker_before_its_handler():
    # the failure the hold prevents: the same worker, the same signal, default handling before its init ran
    code, got = _run_worker(held=False)
    assert code == -signal.SIGTERM and got == ["started"]
