"""Crafted files for the tests that untrusted files run no code: a pickle whose loading
creates a marker file, in a cls_labels.npy or a checkpoint, and the numpy 1.x .npy format of PSA."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch


class Marker:
    """Unpickling this object creates the file ``path`` (what a malicious pickle would do instead)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def crafted_cls_labels(path: Path, marker: Path) -> Path:
    """A cls_labels.npy in the PSA format whose unpickling creates ``marker``."""
    np.save(path, {"train_00000": np.zeros(5, np.float32), "x": Marker(marker)}, allow_pickle=True)
    return path


def crafted_checkpoint(path: Path, marker: Path, state: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**(state or {}), "evil": Marker(marker)}, path)
    return path


def numpy1_npy(path: Path, obj: object) -> Path:
    """``np.save(obj, allow_pickle=True)`` as numpy 1.x on Python 3 wrote it for PSA: pickle protocol 2
    (bytes as ``_codecs.encode``) and the ``numpy.core.multiarray`` module path."""
    arr = np.empty((), dtype=object)
    arr[()] = obj
    payload = pickle.dumps(arr, protocol=2).replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in payload and b"c_codecs\nencode\n" in payload
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    path.write_bytes(buf.getvalue() + payload)
    return path
