"""The toolkit's user-error types: bad data, bad config, missing or unfitting files, a diverged run.

``wsss`` commands print these as one ``error: ...`` line with a non-zero exit; any other exception is
a bug and shows its traceback. This module is a leaf (it imports nothing from wsss), so every layer,
``wsss.utils`` included, may raise these.
"""

from __future__ import annotations

import signal


class WSSSError(Exception):
    """Base of the user errors: the message names the file or the setting and the problem. ``exit_code``: the
    ``wsss`` program's exit status for it (1; 2 for a config, 3 for a training that diverged), so a script or a
    scheduler tells them apart without reading the message."""

    exit_code: int = 1


class DataError(WSSSError):
    """Bad input data: the message names the file and the problem."""


class ConfigError(WSSSError, ValueError):
    """A config file or override that does not fit the schema."""

    exit_code = 2


class UsageError(WSSSError, ValueError):
    """A value that a command, an option or a setting does not accept (``ConfigError``: a config that
    does not fit the schema)."""


class MissingFileError(WSSSError, FileNotFoundError):
    """A file or directory the command needs is not there (a run without config.yaml, a checkpoint...)."""


class OutputError(WSSSError, OSError):
    """An output that cannot be written: a full disk, a read-only or foreign folder (the message names the
    path; what was finished before stays, as every output is written atomically)."""


class WeightLoadError(WSSSError, RuntimeError):
    """A weight or checkpoint file that cannot be read, or whose keys do not fit the model."""


class UnsafeCheckpointError(WeightLoadError):
    """A checkpoint or weight file whose unpickling needs more than tensors and the numpy types a wsss
    checkpoint holds (core/safe_load.py): refused, since unpickling it could run code."""


class TrainingDiverged(WSSSError, RuntimeError):
    """A non-finite loss: the message names the iteration and the loss terms. Exit 3: an outcome of the
    settings rather than a mistake in them (a sweep records it and goes on, ``experiments/real_route.py``)."""

    exit_code = 3


class Terminated(KeyboardInterrupt):  # noqa: N818 - a stop request, not an error
    """SIGTERM (``kill``, ``docker stop``, SLURM's preemption, Kubernetes) taken as Ctrl-C: ``wsss train``
    finishes its step and saves ``last.pt``, per-id jobs stop their workers, and ``wsss`` exits 143 (128 + 15)
    instead of 130."""


def signal_interrupt(signum: int) -> KeyboardInterrupt:
    """The KeyboardInterrupt a stop signal raises in a command (:class:`Terminated` for SIGTERM, 15), marked with
    ``signum``: ``wsss.cli.main`` called as a library (a test) re-raises only such an interrupt, which someone
    outside sent (``make test``'s Ctrl-C), and returns 130 for one its caller raised."""
    e = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
    e.signum = signum  # type: ignore[attr-defined]
    return e


class ConfigWarning(UserWarning):
    """A legal setting that is likely not what the user meant (``wsss`` prints it as one ``warning:``
    line and goes on)."""


class ResultWarning(UserWarning):
    """An output that is legal but likely useless (a model whose masks all name one class): one ``warning:`` line,
    as a ``ConfigWarning``."""


# What ``wsss`` reports as one line: the toolkit's own errors, and a missing file named by the OS.
USER_ERRORS: tuple[type[BaseException], ...] = (WSSSError, FileNotFoundError)
