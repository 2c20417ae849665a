"""A damaged or unsafe file given as CLIP weights (``--clip``, ``wsss import clip_es``): one error line naming the
file, never a traceback nor PyTorch's advice to load it with ``weights_only=False``."""

from __future__ import annotations

import collections
import pickle
import sys

import pytest
import torch

from conftest import REPO
from faults_helpers import cli, one_error_line
from wsss.core.errors import UnsafeCheckpointError, WeightLoadError
from wsss.models.clip_files import read_clip_file, read_safetensors


@pytest.fixture
def truncated(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    whole = tmp_path / "whole.safetensors"
    safetensors.save_file({"visual.proj": torch.zeros(64, 32), "positional_embedding": torch.zeros(77, 64)}, whole)
    data = whole.read_bytes()
    cut = tmp_path / "clip.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    return cut


def import_args(tmp_path, clip) -> list[str]:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "classes.txt").write_text("background\ncat\n")
    return [
        "import",
        "clip_es",
        str(clip),
        "--config",
        str(REPO / "configs/clip_es/voc.yaml"),
        "--out",
        str(tmp_path / "run"),
        f"data.root={tmp_path / 'data'}",
        "run.device=cpu",
    ]


def test_a_truncated_safetensors_file_is_one_line_naming_it(truncated, tmp_path, capsys, monkeypatch):
    with pytest.raises(WeightLoadError, match=rf"^{truncated}: cannot read this .safetensors file \("):
        read_clip_file(truncated)
    rc, out = cli(capsys, *import_args(tmp_path, truncated))
    assert rc == 1 and f"{truncated}: cannot read this .safetensors file" in one_error_line(out)
    assert not (tmp_path / "run").exists()
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)  # the own reader, without the package
    with pytest.raises(WeightLoadError, match=rf"^{truncated}: cannot read this .safetensors file \("):
        read_safetensors(truncated)
    truncated.write_bytes((1 << 60).to_bytes(8, "little") + b"{}")  # a header length beyond the file
    with pytest.raises(WeightLoadError, match="header length .* is beyond the end of the file"):
        read_safetensors(truncated)


@pytest.mark.parametrize("protocol", [4, 5])
def test_a_plain_pickle_is_refused_in_one_line_without_the_unsafe_advice(tmp_path, capsys, protocol):
    path = tmp_path / "clip.pt"
    with open(path, "wb") as f:
        pickle.dump(collections.OrderedDict(positional_embedding=torch.zeros(2)), f, protocol=protocol)
    with pytest.raises(UnsafeCheckpointError) as e:
        read_clip_file(path)
    text = str(e.value)
    assert text.startswith(f"{path}: refused") and "\n" not in text and "weights_only" not in text
    assert "could run code" in text and "torch.save" in text and ".safetensors" in text
    rc, out = cli(capsys, *import_args(tmp_path, path))
    line = one_error_line(out)
    assert rc == 1 and "weights_only" not in out and "Detected pickle protocol" not in out and "refused" in line
