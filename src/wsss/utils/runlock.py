"""One writer per run directory (``RUN/.lock``, held by the process that trains the run) and per output folder of
a per-id job (``.job.lock``, below).

Two ``wsss train`` on one ``run.dir`` would both append to ``metrics.jsonl``, both write TensorBoard
files and overwrite each other's checkpoints. The lock is an advisory ``flock`` on
``RUN/.lock``, which also holds the holder's pid and host for the message: the kernel drops the lock
when its process ends, however it ends, so a lock left by a killed run is stale by construction and the
next run takes it. The file itself is left in place (removing it would let a third process lock a new
file while a second one still waits on the old one), emptied when its holder lets go: a file that still names
a holder once the lock is taken is a killed process's, and its taker says so in one line. Where ``fcntl`` is
missing (Windows) the pid in the file is checked instead.

The output folder of a per-id job (``wsss cam | pseudo | predict``, and ``--images ... --out``) is held the same
way for the whole job, in its own :data:`JOB_LOCK_FILE` (not ``.lock``, which marks a run): the job reads the
folder's settings stamp and then writes under it, and a second job between the two would stamp the folder with its
settings over the first one's outputs, or the reverse.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from wsss.core.errors import ConfigWarning, UsageError
from wsss.core.files import output_error, pid_alive

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"
JOB_LOCK_FILE = ".job.lock"  # a per-id job's output folder (module docstring)


def _holder(path: Path) -> tuple[str, str]:
    """(the holder's command, 'pid 1234 on host, since ...; PATH') from the lock file ``path``; ('another
    process', PATH) if it cannot be read."""
    try:
        fields = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    except OSError:
        return "another process", str(path)
    pid, host, since = fields.get("pid", "?"), fields.get("host", "?"), fields.get("since", "?")
    # no command in a file an earlier wsss wrote
    return fields.get("command", "another process"), f"pid {pid} on {host}, since {since}; {path}"


def is_run_dir(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a run: it holds the lock file of a training (``wsss train`` leaves it in place), or
    a checkpoint (``checkpoints/*.pt``, a round's ``round_*/checkpoints/*.pt``, or one of ``wsss import``)."""
    folder = Path(folder)
    if (folder / LOCK_FILE).is_file():
        return True
    patterns = ("checkpoints/*.pt", "round_*/checkpoints/*.pt")
    return any(p.is_file() for pattern in patterns for p in folder.glob(pattern))


# A run's own files and folders (docs/run-directory.md) that no command's output may replace or land in
RUN_OWN_NAMES = ("config.yaml", "config_changes.jsonl", "metrics.jsonl", "fold_score.json", LOCK_FILE)


def run_own_files(run_dir: str | os.PathLike) -> list[Path]:
    """The files of the run ``run_dir`` that only training writes (:data:`RUN_OWN_NAMES`) and its checkpoint folders
    (``checkpoints``, a round's ``round_*/checkpoints``): the inputs an output must stay apart from
    (``core.files.check_output_apart``)."""
    run_dir = Path(run_dir)
    return [
        *(run_dir / name for name in RUN_OWN_NAMES),
        *sorted(run_dir.glob("checkpoints*")),
        *sorted(run_dir.glob("round_*/checkpoints*")),
    ]


def check_run_dir(run_dir: str | os.PathLike, overwrite: bool = False) -> None:
    """UsageError for a ``run.dir`` that is a non-empty folder but not a run (:func:`is_run_dir`), unless
    ``overwrite``: a training writes ``config.yaml`` and ``metrics.jsonl`` there, over files of the same names
    that are someone else's (a folder of notes lost its config.yaml)."""
    run_dir = Path(run_dir)
    if overwrite or not run_dir.is_dir() or is_run_dir(run_dir):
        return
    entries = sorted(p.name for p in run_dir.iterdir())
    if entries:
        shown = ", ".join(entries[:4]) + (f" (and {len(entries) - 4} more)" if len(entries) > 4 else "")
        raise UsageError(
            f"{run_dir}: run.dir is a folder that holds files ({shown}) but no run (no {LOCK_FILE}, no checkpoint); "
            "choose another run.dir, or pass --overwrite to train into it (its config.yaml is replaced)"
        )


def run_dir_lock(
    run_dir: str | os.PathLike, command: str = "wsss train", option: str = "run.dir"
) -> contextlib.AbstractContextManager[Path]:
    """Hold ``RUN/.lock`` for the block; UsageError naming the holder's command and pid if another live process
    holds it (and ``option``, the setting that names the folder, to change). The run directory is created if
    needed (an unwritable one is an ``OutputError``)."""
    return _held(
        Path(run_dir),
        LOCK_FILE,
        command,
        lambda who, where: (
            f"{run_dir}: the run is in use by {who} ({where}); wait for it to finish or stop it, or "
            f"use another {option}"
        ),
    )


def job_folder_lock(folder: str | os.PathLike, command: str) -> contextlib.AbstractContextManager[Path]:
    """Hold ``FOLDER/.job.lock`` for the block (the output folder of a per-id job ``command``, module docstring);
    UsageError naming the holder if another live process holds it. The folder is created if needed, and removed
    again, with the folders made for it, when the block wrote nothing into it."""
    return _held(
        Path(folder),
        JOB_LOCK_FILE,
        command,
        lambda who, where: (
            f"{folder}: {who} is writing into this folder ({where}); wait for it to finish or stop "
            "it, or write elsewhere"
        ),
    )


UNPACK_LOCK_FILE = ".unpacking.lock"  # in an archive's temporary folder while it is unpacked (data/fetch.py)


def unpack_lock(tmp: str | os.PathLike, command: str) -> contextlib.AbstractContextManager[Path]:
    """Hold :data:`UNPACK_LOCK_FILE` in ``tmp``, the temporary folder an archive is unpacked into, for the block: the
    folder is in use, not a killed unpacking's (:func:`check_unpacking`). It goes with the folder."""
    return _held(Path(tmp), UNPACK_LOCK_FILE, command, lambda who, where: f"{tmp}: in use by {who} ({where})")


def check_unpacking(tmp: str | os.PathLike, dest: str | os.PathLike) -> None:
    """UsageError naming ``dest`` and the holder when a live process holds ``tmp``'s :func:`unpack_lock` (a second
    unpacking into ``dest`` would remove its folder as a killed one's); nothing otherwise (no lock file, a
    killed holder's, or no ``fcntl``)."""
    path = Path(tmp) / UNPACK_LOCK_FILE
    if fcntl is None or not path.is_file():
        return
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        who, where = _holder(path)
        raise UsageError(
            f"{dest}: {who} is unpacking into this folder ({where}); wait for it to finish or stop it"
        ) from None
    finally:
        os.close(fd)


@contextlib.contextmanager
def _held(folder: Path, lock_file: str, command: str, refusal: Callable[[str, str], str]) -> Iterator[Path]:
    """Hold ``folder/lock_file`` (``command``: this process's, for another's message); ``refusal(who, where)``: the
    message when a live process holds it (:func:`_holder`)."""
    path = folder / lock_file
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # folders this call creates
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise output_error(path, e) from e
    held = False
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UsageError(refusal(*_holder(path))) from None
        else:  # pragma: no cover - Windows: the pid in the file decides
            fields = dict(ln.split("=", 1) for ln in path.read_text().splitlines() if "=" in ln)
            pid = int(fields.get("pid", "0") or 0)
            if pid and pid != os.getpid() and pid_alive(pid):
                raise UsageError(refusal(*_holder(path)))
        _say_taken_over(path)
        info = (
            f"pid={os.getpid()}\nhost={socket.gethostname()}\nsince={time.strftime('%Y-%m-%dT%H:%M:%S')}\n"
            f"command={command}\n"
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        held = True
        yield path
    finally:
        if held:  # let go, however the block ended: an empty file names no holder (a killed one's stays named)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
        if created and [p.name for p in folder.iterdir()] == [lock_file]:
            # a job that stopped before writing anything (bad data, bad settings) leaves no folder behind
            with contextlib.suppress(OSError):
                path.unlink()
                for made in created:
                    made.rmdir()
        os.close(fd)  # closing the descriptor releases the flock


def _say_taken_over(path: Path) -> None:
    """One line when the lock ``path``, just taken, still names a holder: a process that ended without letting go
    (killed), whose lock this process now holds."""
    try:
        named = "pid=" in path.read_text()
    except OSError:
        return
    if named:
        who, where = _holder(path)
        warnings.warn(
            ConfigWarning(
                f"{path.parent}: taken over the lock of {who} ({where}), which ended without letting it go (killed)"
            ),
            stacklevel=4,
        )
