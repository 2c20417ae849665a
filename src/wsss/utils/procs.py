"""Child processes that end with their parent (issue 42): a CRF worker or a ``--workers`` rank left
running after its parent was killed keeps writing and holding memory, reparented to init.

On Linux the kernel sends a child a chosen signal when the thread that started it ends
(``prctl(PR_SET_PDEATHSIG)``, kept across ``exec``); elsewhere :func:`die_with_parent` does nothing and
the parent's own cleanup (SIGTERM taken as Ctrl-C, ``wsss.cli``) is what stops its children.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

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
