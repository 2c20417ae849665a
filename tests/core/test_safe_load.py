"""core/safe_load.py: the restricted .npy unpickler (cls_labels.npy and legacy pickled files) and
weights_only checkpoint loading refuse anything that could run code; real files still load."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch

from crafted import Marker, crafted_checkpoint, crafted_cls_labels, numpy1_npy
from wsss.core.checkpoint import load_checkpoint, save_checkpoint
from wsss.core.errors import DataError, UnsafeCheckpointError
from wsss.core.safe_load import load_torch_file, read_npy
from wsss.data.voc import load_cls_labels, read_cls_labels_file


def test_the_crafted_files_do_run_code_when_read_the_old_way(tmp_path):
    """The attack is real: full unpickling of either file creates the marker."""
    marker = tmp_path / "marker"
    np.load(crafted_cls_labels(tmp_path / "cls_labels.npy", marker), allow_pickle=True)
    assert marker.is_file()
    marker.unlink()
    torch.load(crafted_checkpoint(tmp_path / "last.pt", marker), weights_only=False)
    assert marker.is_file()


# ---- cls_labels.npy and other .npy -----------------------------------------------------------------


@pytest.mark.parametrize("style", ["numpy2", "numpy1"])
def test_real_cls_labels_formats_still_load(tmp_path, style):
    table = {"2007_000032": np.eye(20, dtype=np.float32)[0], "2007_000039": np.eye(20, dtype=np.float32)[19]}
    path = tmp_path / "cls_labels.npy"
    if style == "numpy2":
        np.save(path, table, allow_pickle=True)  # what np.save writes today (numpy._core, protocol 4)
        assert b"numpy._core.multiarray" in path.read_bytes()
    else:
        numpy1_npy(path, table)
        assert np.load(path, allow_pickle=True).item().keys() == table.keys()  # numpy itself reads it
    back = read_cls_labels_file(path)
    assert back.keys() == table.keys()
    for k, v in table.items():
        assert back[k].dtype == np.float32 and np.array_equal(back[k], v)
    loaded = load_cls_labels(tmp_path, 21)
    assert np.array_equal(loaded["2007_000039"], table["2007_000039"])


def test_plain_arrays_and_numpy_scalars_read(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(6, dtype=np.float16).reshape(2, 3))
    assert read_npy(tmp_path / "a.npy").tolist() == [[0, 1, 2], [3, 4, 5]]
    np.save(tmp_path / "d.npy", {np.str_("k"): np.float32(1.5), "l": [1, 2]}, allow_pickle=True)
    assert read_npy(tmp_path / "d.npy") == {"k": 1.5, "l": [1, 2]}


@pytest.mark.parametrize("payload", ["marker", "eval", "os.system"])
def test_read_npy_refuses_any_other_global(tmp_path, payload):
    marker = tmp_path / "marker"
    evil = {
        "marker": Marker(marker),
        "eval": type("E", (), {"__reduce__": lambda self: (eval, (f"open({str(marker)!r}, 'w')",))})(),
        "os.system": type("S", (), {"__reduce__": lambda self: (__import__("os").system, (f"touch {marker}",))})(),
    }[payload]
    path = tmp_path / "cls_labels.npy"
    np.save(path, {"a": evil}, allow_pickle=True)
    with pytest.raises(DataError) as e:
        read_cls_labels_file(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: refused") and "\n" not in msg and "could run code" in msg
    assert not marker.exists()


# ---- checkpoints ------------------------------------------------------------------------------------


def test_checkpoints_load_with_weights_only_and_refuse_more(tmp_path):
    import random

    rng = {"numpy": np.random.get_state(), "python": random.getstate(), "torch": torch.get_rng_state()}
    state = {"step": 3, "model": {"w": torch.ones(2)}, "rng": [rng], "att": {1: np.ones((2, 2), np.uint8)}}
    save_checkpoint(state, tmp_path / "ok.pt")
    back = load_checkpoint(tmp_path / "ok.pt")
    assert back["step"] == 3 and np.array_equal(back["rng"][0]["numpy"][1], np.random.get_state()[1])

    # a checkpoint saved under numpy 1.x names numpy.core.multiarray._reconstruct (legacy torch format:
    # one pickle stream, so the module path can be rewritten in place)
    buf = io.BytesIO()
    torch.save(state, buf, _use_new_zipfile_serialization=False)
    old = buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"numpy.core.multiarray\n_reconstruct" in old
    (tmp_path / "np1.pt").write_bytes(old)
    assert np.array_equal(load_checkpoint(tmp_path / "np1.pt")["rng"][0]["numpy"][1], state["rng"][0]["numpy"][1])

    marker = tmp_path / "marker"
    with pytest.raises(UnsafeCheckpointError, match=r"ev\.pt: refused to load this checkpoint: it needs "):
        load_checkpoint(crafted_checkpoint(tmp_path / "ev.pt", marker))
    assert not marker.exists()
    # allowed exactly: a float64 numpy array (no wsss checkpoint holds one) is refused, and says why
    torch.save({"x": np.zeros(2)}, tmp_path / "f64.pt")
    with pytest.raises(UnsafeCheckpointError, match="Float64DType"):
        load_torch_file(tmp_path / "f64.pt")
    # the allowlist was scoped to the call
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "ok.pt", weights_only=True)
