"""Writing files: atomically (a temporary name in the same folder, then ``os.replace``), with the modes a plain
``open()`` gives, and with a full disk or an unwritable folder reported as one ``OutputError`` naming the file.

The bottom of the toolkit (``wsss.core``): the checkpoint and config writers use it, and every output of
``wsss.utils.io`` and above goes through :func:`atomic_write`. Reading has one rule here: a transient error (a
network filesystem's hiccup) is tried again (:func:`retry_transient`) by the readers of images, masks and CAMs.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

from wsss.core.errors import OutputError

T = TypeVar("T")

# The suffix of the temporary files wsss writes (``.<name>.<random>.wsss.tmp``), and the only ones that
# :func:`remove_stale_temps` removes: a user's own ``.notes.tmp`` in an output folder is not ours.
TEMP_SUFFIX = ".wsss.tmp"


def is_temp_file(name: str) -> bool:
    """Whether the file name ``name`` is one of wsss's temporary files (:data:`TEMP_SUFFIX`)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def _umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux), else by setting and
    restoring it."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# OS errors that say the output cannot be written (not a bug): full disk or quota, read-only file
# system, no permission. ``wsss`` reports them as one line naming the path (``OutputError``).
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def output_error(path: str | os.PathLike, error: OSError) -> OutputError:
    """The ``OutputError`` for writing ``path`` failing with ``error`` (``strerror`` kept, e.g. "No space
    left on device"; a short write, which has no errno, is said to be one)."""
    return OutputError(f"{path}: cannot write ({write_error_text(error)})")


def write_error_text(error: OSError) -> str:
    """Why a write failed, in words: the OS's (``strerror``, e.g. "No space left on device"), or for a short
    write, which has none, what it was and its likely cause."""
    if _short_write(error):
        return f"{error}: a short write; is the disk full?"
    return str(error.strerror or error)


def write_os_error(error: BaseException) -> OSError | None:
    """The OS error behind a failed write, if it is one of ``_WRITE_ERRNOS`` or a short write: ``error`` itself or
    one it was raised from or during (``torch.save`` on a full disk raises "RuntimeError: [enforce fail ...]
    unexpected pos" while handling the OSError of the short write)."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and not isinstance(e, OutputError) and (e.errno in _WRITE_ERRNOS or _short_write(e)):
            return e
        e = e.__cause__ or e.__context__
    return None


def _short_write(error: BaseException) -> bool:
    """Whether ``error`` is a write that stopped short without an errno: numpy's ``tofile`` (``np.save`` of
    an array to a real file, ``wsss predict --save-probs``) on a full disk raises "OSError: 28672 requested
    and 1984 written", which neither names the file nor says why."""
    return (
        isinstance(error, OSError)
        and not isinstance(error, OutputError)
        and error.errno is None
        and re.fullmatch(r"\d+ requested and \d+ written", str(error)) is not None
    )


def check_output_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path if a file can be written there as far as names go; ``OutputError`` when it is an
    existing folder (``wsss eval --json DIR``), checked before the work whose result it is."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give the name of a file to write (e.g. {path / 'metrics.json'})")
    if not path.parent.is_dir():
        _check_folders_above(path)
    return path


def _check_folders_above(path: Path) -> None:
    """OutputError when a folder that ``path`` needs is an existing file (``--out a.onnx/x.onnx``)."""
    for above in path.parents:
        if above.is_dir():
            return
        if above.exists() or above.is_symlink():
            raise OutputError(f"{path}: cannot write: {above} is a file, not a folder")


def check_output_apart(out: str | os.PathLike, inputs: Iterable[str | os.PathLike], flag: str = "--out") -> Path:
    """``out`` as a Path when it is none of ``inputs`` and lies inside none of them; ``OutputError`` naming both
    otherwise. ``inputs``: the files and folders a command reads or must keep (a run's checkpoints and config,
    ``utils.runlock.run_own_files``; the photos, the masks), so that no output replaces one. Compared resolved (a
    symlink, ``..``; a hard link is safe, as the atomic write replaces the link, not the file). Call it before the
    work whose output it is."""
    out = Path(out)
    where = out.resolve()
    for item in inputs:
        item = Path(item)  # one not there yet counts too: a run's metrics.jsonl that its training will write
        if where == item.resolve():
            raise OutputError(
                f"{out}: {flag} names {item}, an input of this command or a file of the run; choose another path"
            )
        if item.is_dir() and where.is_relative_to(item.resolve()):
            raise OutputError(
                f"{out}: {flag} lies in {item}, a folder of this command's inputs or of the run's own "
                "files; choose another path"
            )
    return out


def check_output_folder(path: str | os.PathLike, names: str) -> Path:
    """``path`` as a Path if a folder can be made or written there as far as names go; ``OutputError`` when it is an
    existing file (``--out afile.txt``), checked before the work whose outputs go there. ``names``: what the folder
    is for, e.g. "a folder for the grids"."""
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not path.is_dir():
        raise OutputError(f"{path}: is a file; --out names {names}")
    return path


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; rename it over ``path`` only if the block succeeds.

    The file gets the mode a plain ``open(path, "w")`` would give (0666 minus the umask), not the
    0600 of ``mkstemp``'s private temporary file.

    A full disk or an unwritable folder raises ``OutputError`` naming ``path`` (also when the writer,
    e.g. ``torch.save``, raised its own error while handling the OS error).
    """
    path = check_output_file(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as e:  # the folder cannot be made or written: the user's path named, never the temporary's
        raise output_error(path, e) from e
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        cause = write_os_error(e) if isinstance(e, Exception) else None
        if cause is not None:
            raise output_error(path, cause) from e
        raise


def write_text_if_changed(path: str | os.PathLike, text: str) -> bool:
    """Write ``text`` at ``path`` atomically unless the file holds it already (its time kept: a resume that
    changes nothing leaves a run's files as they were); whether it wrote."""
    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size == len(text.encode()) and path.read_text() == text:
            return False
    except (OSError, UnicodeDecodeError):  # unreadable: written anew
        pass
    with atomic_write(path, "w") as f:
        f.write(text)
    return True


# Read errors that the same read may not meet again: a network filesystem's hiccup (NFS, SMB, FUSE mounts of cloud
# buckets), a disk that timed out. One of them stopped a training of hours at one image; a reader
# tries such a read READ_TRIES times, READ_PAUSE_S apart (then 4 times longer), before it fails.
TRANSIENT_READ_ERRNOS = {errno.EIO, errno.EAGAIN, errno.ETIMEDOUT, errno.ESTALE, errno.EINTR, errno.ECONNRESET}
READ_TRIES = 3
READ_PAUSE_S = 0.05


def transient_read_error(error: BaseException) -> bool:
    """Whether ``error``, or the error it was raised from, is an OSError of ``TRANSIENT_READ_ERRNOS``."""
    cause = error if isinstance(error, OSError) and error.errno is not None else error.__cause__
    return isinstance(cause, OSError) and cause.errno in TRANSIENT_READ_ERRNOS


def retry_transient(read: Callable[[], T]) -> T:
    """``read()``, tried again after a transient read error (``transient_read_error``) up to ``READ_TRIES`` times in
    all; the last error is raised as it is."""
    for attempt in range(READ_TRIES):
        try:
            return read()
        except Exception as e:
            if attempt == READ_TRIES - 1 or not transient_read_error(e):
                raise
            time.sleep(READ_PAUSE_S * 4**attempt)
    raise AssertionError("unreachable")  # the loop returns or raises


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Publish ``src`` at ``dst`` atomically: a hard link where the file system allows one, else a copy (through a
    temporary file of wsss's, :data:`TEMP_SUFFIX`)."""
    import shutil

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}{TEMP_SUFFIX}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _temp_prefix(path: Path) -> str:
    """``.<name>.<pid>.``: the start of :func:`atomic_write`'s temporary file for ``path``; the pid tells a
    dead writer's leftover (:func:`remove_dead_temps`) from a live one's."""
    return f".{path.name}.{os.getpid()}."


def remove_dead_temps(path: str | os.PathLike) -> int:
    """Delete the temporary files that an :func:`atomic_write` of ``path`` left beside it when its process was
    killed (SIGKILL runs no cleanup): those of ``path``'s name whose writer's pid is gone. A writer of a single
    file calls it before writing that file again; a live writer's temporary stays. Returns how many went."""
    path = Path(path)
    if not path.parent.is_dir():
        return 0
    gone = 0
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*{TEMP_SUFFIX}"):
        pid = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
        if tmp.is_file() and pid.isdigit() and not pid_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                gone += 1
    return gone


def pid_alive(pid: int) -> bool:
    """Whether a process of id ``pid`` exists on this machine (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(directory: str | os.PathLike) -> int:
    """Delete the temporary files :func:`atomic_write` leaves in ``directory`` when its process is killed
    between creating and renaming one (SIGKILL runs no ``except``). Call it only where one process owns
    the directory, before that process writes again; returns how many were removed. Only wsss's own
    (:data:`TEMP_SUFFIX`): another ``.*.tmp`` is someone else's file."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    stale = [p for p in directory.glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for p in stale:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return len(stale)


def move_aside(path: str | os.PathLike) -> Path | None:
    """Rename ``path`` (a file or a folder) to ``<name>.1`` beside it, or ``.2``, ... the first name free, and
    return the new path; None when there is no ``path``. For a file of an earlier job that a new one would
    mix with its own (a fresh training's ``metrics.jsonl``): kept, never deleted."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return None
    n = 1
    while (aside := path.with_name(f"{path.name}.{n}")).exists() or aside.is_symlink():
        n += 1
    try:
        os.rename(path, aside)
    except OSError as e:
        if e.errno in _WRITE_ERRNOS:
            raise output_error(aside, e) from e
        raise
    return aside
