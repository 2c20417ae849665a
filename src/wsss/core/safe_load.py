"""Reading files that may come from strangers without running their code.

A pickle can call any importable function while it is read, so a ``cls_labels.npy`` from a dataset
download or a ``last.pt`` from someone else's ``runs/`` folder could run code on ``wsss check-data``
or ``wsss predict``. Every pickle-capable file the toolkit reads (images, PNG masks and plain ``.npz``
arrays have no pickle) goes through one of two readers here:

- :func:`read_npy`: a ``.npy`` file. Plain arrays are read with ``allow_pickle=False``; an object
  array (the PSA / ToCo ``cls_labels.npy`` format: ``np.save`` of a dict) is unpickled by
  :class:`NpyUnpickler`, which builds only numpy arrays, dtypes and scalars (under numpy 2's
  ``numpy._core`` and numpy 1's ``numpy.core`` module paths) and refuses any other global.
- :func:`load_torch_file`: ``torch.load(weights_only=True)`` with exactly the extra numpy types that
  a wsss checkpoint holds (uint32 and uint8 numpy arrays: RNG states, RCA's attention), allowed for
  that call only.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from wsss.core.errors import DataError, UnsafeCheckpointError


class RefusedPickle(pickle.UnpicklingError):
    """A pickle that refers to something outside the allowed globals."""


# The functions numpy pickles refer to, taken from numpy itself (whatever its version calls them).
_RECONSTRUCT = np.zeros(0).__reduce__()[0]
_SCALAR = np.float32(0).__reduce__()[0]
_NUMPY_MODULES = ("numpy._core.multiarray", "numpy.core.multiarray")  # numpy >= 2, numpy 1.x


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as a protocol-2 pickle uses it to spell bytes (latin-1 only: no codec lookup)."""
    if encoding.lower().replace("-", "").replace("_", "") != "latin1" or not isinstance(text, str):
        raise RefusedPickle(f"it calls _codecs.encode with encoding {encoding!r}, which no numpy array needs")
    return text.encode("latin1")


# (module, name) -> object: all an np.save'd array of arrays needs. ``_codecs.encode`` is how a
# protocol-2 pickle (PSA's own cls_labels.npy) spells bytes.
NPY_PICKLE_GLOBALS: dict[tuple[str, str], Any] = {
    **{(m, "_reconstruct"): _RECONSTRUCT for m in _NUMPY_MODULES},
    **{(m, "scalar"): _SCALAR for m in _NUMPY_MODULES},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
}


class NpyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays (also object arrays of dicts, lists, str and numbers) and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return NPY_PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedPickle(f"it refers to {module}.{name}, which no numpy array needs") from None


def read_npy(path: str | os.PathLike, what: str = "array file") -> Any:
    """The content of a ``.npy`` file without running code from it: a plain array, or for a pickled
    object array its content (``np.save(dict)`` gives back the dict). DataError naming the file if it
    is unreadable or its pickle asks for anything but numpy arrays (``what`` describes the file)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            # a 3.0 header differs from 2.0 only in being utf-8 (non-ASCII field names): none here
            fmt = np.lib.format
            shape, _, dtype = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(f)
            if not dtype.hasobject:
                f.seek(0)
                return np.load(f, allow_pickle=False)
            obj = NpyUnpickler(f, encoding="latin1").load()  # latin1: numpy's own choice for py2 pickles
    except RefusedPickle as e:
        raise DataError(f"{path}: refused to read this {what}: {e} (reading it could run code)") from e
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, TypeError, AttributeError) as e:
        raise DataError(f"{path}: cannot read {what} ({type(e).__name__}: {e})") from e
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == () and shape == ():
        return obj.item()
    return obj


def read_npz(path: str | os.PathLike, names: tuple[str, ...], what: str = "array file") -> dict[str, np.ndarray]:
    """The named arrays of an ``.npz`` (``allow_pickle=False``); DataError naming the file if one is missing. A
    transient read error is tried again (``core.files.retry_transient``)."""
    from wsss.core.files import retry_transient

    return retry_transient(lambda: _read_npz(Path(path), names, what))


def _read_npz(path: Path, names: tuple[str, ...], what: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [n for n in names if n not in z.files]
            if missing:
                raise DataError(f"{path}: not a {what}: no array {', '.join(missing)} (has {', '.join(z.files)})")
            return {n: z[n] for n in names}
    except DataError:
        raise
    # a truncated or cut-off .npz (a killed copy, a full disk) is a broken zip archive: zipfile's and zlib's
    # errors are not OSErrors, and without the file's name the traceback said only "File is not a zip file"
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{path}: cannot read {what} ({type(e).__name__}: {e})") from e


# ---- torch checkpoints --------------------------------------------------------------------------


def checkpoint_safe_globals() -> list[Any]:
    """The extra types ``torch.load(weights_only=True)`` must build for a wsss run checkpoint: numpy
    arrays of two dtypes, the numpy RNG state ``('MT19937', uint32 array, int, int, float)`` of every
    process and RCA's accumulated attention maps (uint8, methods/rca/). Module paths of numpy 2 and
    numpy 1.x both map to the running numpy's functions."""
    return [
        *[(_RECONSTRUCT, f"{m}._reconstruct") for m in _NUMPY_MODULES],
        np.ndarray,
        np.dtype,
        # a dtype is rebuilt with setstate, so its class must be allowed: these two and no other
        type(np.dtype(np.uint32)),
        type(np.dtype(np.uint8)),
    ]


def _check_torch_format(path: Path, what: str) -> None:
    """WeightLoadError naming ``path`` when it is not a file ``torch.save`` writes (a zip archive; a pickle
    or a tar archive in PyTorch's legacy formats): ``torch.load`` of a text file says "pop from empty
    list". An empty or unreadable file is left to the caller's own message."""
    from wsss.core.errors import WeightLoadError

    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return
    if not head or head.startswith(b"PK\x03\x04") or head[:1] == b"\x80" or head[257:262] == b"ustar":
        return
    try:
        text = head[:60].decode("utf-8")
        kind = f"a text file (it starts {text.splitlines()[0][:40]!r})" if text.strip() else "blank"
    except UnicodeDecodeError:
        kind = f"of another format (it starts {head[:8]!r})"
    raise WeightLoadError(f"{path}: not a {what} saved by PyTorch (a zip archive or a pickle): it is {kind}")


def load_torch_file(
    path: str | os.PathLike, what: str = "checkpoint", map_location: Any = "cpu", *, opened: BinaryIO | None = None
) -> Any:
    """``torch.load(path, weights_only=True)`` allowing only :func:`checkpoint_safe_globals`, for this
    call. UnsafeCheckpointError naming the file and the refused global if it needs more; other read
    failures propagate (callers add the file name). ``opened``: ``path`` already open, read from its start (the
    bytes the caller hashed, whatever replaces the file meanwhile)."""
    import torch

    path = Path(path)
    _check_torch_format(path, what)
    try:
        with torch.serialization.safe_globals(checkpoint_safe_globals()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Detected pickle protocol")  # a plain pickle: refused below in one line
            return torch.load(path if opened is None else opened, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if re.search(r"Unsupported operand \d+", text):  # an opcode that torch.save never writes
            raise UnsafeCheckpointError(
                f"{path}: refused to load this {what}: it is a plain pickle, not a file of torch.save, and may hold "
                "Python objects other than tensors, which could run code when read; give a .pt / .pth written by "
                "torch.save or a .safetensors file"
            ) from None
        m = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"`add_safe_globals`,? but got <class '([\w.]+)'>", text)
        if m is None:  # not a refusal: a corrupt file
            raise
        need = m.group(1)
        raise UnsafeCheckpointError(
            f"{path}: refused to load this {what}: it needs {need}, which no weights or wsss checkpoint hold "
            "(tensors, numbers, strings and uint8 / uint32 numpy arrays are allowed); unpickling it could run code"
        ) from e
