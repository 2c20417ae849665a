"""The ``wsss`` program: the parser of every command, and :func:`main`, which runs one with its errors, signals
and exit."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from wsss.cli.data import add_check_data, add_data, add_prepare, add_synth
from wsss.cli.export import add_export
from wsss.cli.infer import add_cam, add_predict, add_pseudo, add_sweep_bkg, add_tag
from wsss.cli.results import add_eval, add_report, add_viz
from wsss.cli.route import add_route
from wsss.cli.train import add_config, add_import, add_train
from wsss.cli_common import Parser, take_overrides

EPILOG = "Docs: README.md and the manual in docs/ (make docs builds it). Each command has --help."


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command: one ``add_<command>`` each; the choices come from the registries,
    read when first needed (:class:`LazyChoices`)."""
    from wsss import __version__

    p = Parser(
        prog="wsss",
        description="Weakly supervised semantic segmentation from image-level labels.",
        epilog=EPILOG,
    )
    p.add_argument("--version", action="version", version=f"wsss {__version__}", help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        add_synth,
        add_check_data,
        add_train,
        add_cam,
        add_sweep_bkg,
        add_pseudo,
        add_predict,
        add_route,
        add_import,
        add_tag,
        add_eval,
        add_report,
        add_viz,
        add_prepare,
        add_data,
        add_export,
        add_config,
    ):
        add(sub)
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a command line; the ``key=value`` overrides of a command that takes them (``train``, ``import``,
    ``config show`` and every command that reads a run) may come before, between or after its flags
    (``cli_common.take_overrides``)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    extra = take_overrides(args, extra, argv)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _show_warning_line(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """``ConfigWarning``, ``ResultWarning``: one ``warning:`` line on stderr; other warnings keep Python's format."""
    from wsss.core.errors import ConfigWarning, ResultWarning

    if issubclass(category, (ConfigWarning, ResultWarning)):
        print(f"warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _error_text(e: BaseException) -> str:
    """A user error's message. One raised in a DataLoader worker (a bad pseudo label met mid-training) comes
    back re-raised with the worker's whole traceback as its message (torch's ExceptionWrapper): the last
    line of that is the error's own, e.g. ``wsss.core.errors.DataError: FILE: ...``."""
    text = str(e)
    first = text.split("\n", 1)[0]
    if first.startswith("Caught ") and "in DataLoader worker process" in first:
        last = text.rstrip().splitlines()[-1]
        return re.sub(r"^[\w.]+: ", "", last, count=1)
    return text


@contextlib.contextmanager
def _signals_as_interrupts() -> Iterator[None]:
    """SIGTERM raises :class:`~wsss.core.errors.Terminated` (a KeyboardInterrupt) while a command runs, and
    SIGINT KeyboardInterrupt, as Python's own handler does: the command's cleanup runs (its worker processes and
    CRF pools are stopped, ``wsss train`` saves ``last.pt``: ``engine.hooks.PeriodicCheckpointer``). Both are
    marked as a signal's (``signal_interrupt``), for :func:`main` to tell them from an interrupt its caller
    raised. A SIGINT that is ignored (a background job) or handled by someone else stays so; the handlers
    found are put back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: Any) -> None:
        from wsss.core.errors import signal_interrupt

        raise signal_interrupt(signum)

    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, on_signal)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. A user error (bad data, bad config, a missing file: ``wsss.core.errors``) is one
    ``error:`` line and a non-zero exit (``WSSSError.exit_code``: 2 for a config error, 3 for a training that
    diverged, else 1); anything else is a bug and shows its traceback.

    Ctrl-C (SIGINT) or SIGTERM: the command stops cleanly and returns 130 or 143, as the program (``argv``
    None: the ``wsss`` script, ``python -m wsss``, torchrun's ranks). Called with ``argv`` as a library, by a
    test for one, the interrupt is raised again after the same cleanup: a signal sent to a test session (Ctrl-C
    or a CI's SIGTERM to pytest) stops the session instead of failing one test and going on with the next. An
    interrupt the caller raised itself (no signal) still returns 130. As the program, it does not return: the
    process ends with the command's code (:func:`_leave_process`)."""
    program = argv is None
    code = _run_command(list(sys.argv[1:] if argv is None else argv), program)
    if program:
        _leave_process(code)
    return code


def _run_command(argv: list[str], program: bool) -> int:
    from wsss.core.errors import USER_ERRORS

    args = parse_args(argv)
    args.argv = argv  # what `--workers N` starts again in each worker
    finished = False
    try:
        with warnings.catch_warnings(), _signals_as_interrupts():
            warnings.showwarning = _show_warning_line
            code = args.fn(args)
            finished = True
            return code
    except USER_ERRORS as e:
        print(f"error: {_error_text(e)}", file=sys.stderr)
        return getattr(e, "exit_code", 1)  # FileNotFoundError, the one user error outside WSSSError: 1
    except KeyboardInterrupt as e:
        from wsss.core.errors import Terminated

        what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"{what}; finished outputs are kept, rerun the same command to continue", file=sys.stderr)
        if not program and getattr(e, "signum", None) is not None:
            raise  # a signal to the caller's process: the caller (pytest) stops too
        return 128 + (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)
    except (OSError, RuntimeError) as e:
        from wsss.core.files import write_error_text, write_os_error

        cause = write_os_error(e)  # a full disk or an unwritable folder outside core.files.atomic_write
        if cause is None:
            raise
        print(
            f"error: {cause.filename or 'output'}: cannot write ({write_error_text(cause)}); finished outputs are kept",
            file=sys.stderr,
        )
        return 1
    finally:
        if "torch" in sys.modules:  # a command that never imported torch has no process group to leave
            from wsss.core.distributed import shutdown

            shutdown(finished)


def _leave_process(code: int) -> NoReturn:
    """End the ``wsss`` program once its command has returned: its outputs are written, its children ended, its
    last message printed. Python's own exit work that matters runs first, in the order the interpreter runs it
    (non-daemon threads joined, ``atexit`` handlers: logging's flush, multiprocessing's children, standard
    streams flushed); the interpreter's teardown and the C++ static destructors after it are skipped, as
    multiprocessing's own children skip them (``os._exit`` after its exit function). A finished command aborted
    in CI, past that teardown's start as far as the evidence goes (its C++ cause is not identified), with its
    step saved and its exit message printed ("terminate called without an active exception", SIGABRT, no
    Python frame in any thread: after a SIGTERM with loader workers, stop 65; after 2-process runs,
    ``core.distributed.shutdown``): the exit code was the abort's, not the command's."""
    import atexit

    for t in threading.enumerate():
        if t is not threading.current_thread() and not t.daemon:
            t.join()
    atexit._run_exitfuncs()  # what Py_FinalizeEx runs before tearing the interpreter down
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken pipe: nothing more can be said on it
            stream.flush()
    os._exit(code)
