"""Child processes that end with their parent: a CRF worker or a ``--workers`` rank left
running after its parent was killed keeps writing and holding memory, reparented to init.

On Linux the kernel sends a child a chosen signal when the thread that started it ends
(``prctl(PR_SET_PDEATHSIG)``, kept across ``exec``); elsewhere :func:`die_with_parent` does nothing and
the parent's own cleanup (SIGTERM taken as Ctrl-C, ``wsss.cli``) is what stops its children.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Iterator

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(sig: int = signal.SIGKILL, parent: int | None = None) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent ends (Linux; elsewhere nothing).

    Meant for a child's first code (a pool's ``initializer``; a started command, :func:`die_with_starter`).
    ``parent``: the pid the child was started by; if the parent already ended before the
    request was made (the child now belongs to another process), this process ends at once.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl in this libc: the parent's cleanup still stops the child
        return
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), sig)


PARENT_ENV = "WSSS_PARENT_PID"  # set by a process that starts ``python -m wsss.cli`` as its child


def die_with_starter() -> None:
    """In a command started by another wsss process (``--workers N``: its environment names the starter in
    ``WSSS_PARENT_PID``): end with it (:func:`die_with_parent`); otherwise nothing."""
    parent = os.environ.get(PARENT_ENV, "")
    if parent.isdigit():
        die_with_parent(signal.SIGKILL, int(parent))


LOADER_STOP_GRACE_S = 30.0  # how long a loader worker signalled with its job outlives the signal, at most


def leave_stops_to_parent(worker_id: int = 0) -> None:
    """A DataLoader ``worker_init_fn``: SIGTERM or SIGINT does not end the worker at once. SLURM's preemption
    and a terminal's Ctrl-C signal every process of the job; a loader worker that died of it stopped the
    training with "DataLoader worker exited unexpectedly" before its step was saved. The
    worker goes on serving for ``LOADER_STOP_GRACE_S`` (the main process finishes its step, saves, and ends
    its workers itself); a second signal (the main process's ``terminate()``) ends it at once."""
    stopping = []

    def on_stop(signum: int, frame: object) -> None:
        if stopping:
            os._exit(128 + signum)
        stopping.append(signum)
        timer = threading.Timer(LOADER_STOP_GRACE_S, os._exit, args=(128 + signum,))
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    if hasattr(signal, "pthread_sigmask"):  # started under stops_held_for_children: a stop sent meanwhile lands now
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


@contextlib.contextmanager
def stops_held_for_children() -> Iterator[None]:
    """Start loader workers inside this: SIGTERM and SIGINT are blocked in the calling (main) thread meanwhile, so
    a worker forked from it starts with them blocked and takes a stop only once :func:`leave_stops_to_parent` has
    set its own handler. Before, a stop that reached a worker between its fork and its ``worker_init_fn`` ran the
    parent's handler there, the worker quit, and the training stopped with "DataLoader worker exited unexpectedly"
    instead of saving its step (an intermittent failure of the SIGTERM-to-the-job test: workers are started anew
    each epoch). The main process still takes a stop sent meanwhile: another of its threads, or this one once the
    block ends, runs its handler."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
