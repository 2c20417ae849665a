"""Faults and odd inputs of the third trial (issue 58, items 9-17) and of its helper's own trial: each command
either works or stops with one ``error:`` line naming the file, never a traceback, and loses nothing it finished.
Tiny data (the session's synthetic set, copied), seconds per case."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, tiny_overrides
from wsss.cli import main
from wsss.core.checkpoint import save_checkpoint
from wsss.core.config import load_config, save_config
from wsss.data import VOCDataset
from wsss.methods import build_method
from wsss.utils.io import read_label_png, save_labelled_cam

CONFIG = REPO / "configs/cam/synthetic_cpu.yaml"


@pytest.fixture
def data(synth_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    return root


def _classes(root: Path) -> list[str]:
    return (root / "classes.txt").read_text().split("\n")[:-1]


@pytest.fixture
def run_dir(data, tmp_path):
    """A run folder (config.yaml + an untrained last.pt that fits the dataset), no training needed."""
    run = tmp_path / "run"
    cfg = load_config(CONFIG, tiny_overrides(data, run))
    run.mkdir()
    save_config(cfg, run / "config.yaml")
    names = _classes(data)
    method = build_method(cfg, names)
    state = {"step": 1, "model": method.state_dict(), "num_classes": len(names), "class_names": names,
             "rng": [{"numpy": np.random.get_state(), "torch": torch.get_rng_state()}]}  # fmt: skip
    save_checkpoint(state, run / "checkpoints" / "last.pt")
    return run


def _cli(capsys, *argv: object) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, (out.out + out.err).strip()


def _one_error_line(out: str) -> str:
    """The output's ``error:`` line; asserts there is exactly one and no traceback."""
    assert "Traceback" not in out, out
    errors = [ln for ln in out.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, out
    return errors[0]


def _cams_from_masks(run: Path, data: Path, split: str) -> list[str]:
    """CAM files of ``split`` made from its masks (no network pass): one map per labelled class."""
    ds = VOCDataset(data, split)
    for id in ds.ids:
        keys = np.flatnonzero(ds.labels(id) > 0.5)
        mask = read_label_png(data / "SegmentationClass" / f"{id}.png")
        save_labelled_cam(run / "cams" / split, id, keys, np.stack([mask == k + 1 for k in keys]).astype(np.float32))
    return ds.ids


# ---- 13: a broken CAM file ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", ["empty", "half"])
def test_a_truncated_cam_file_in_pseudo_is_named(run_dir, data, capsys, cut):
    ids = _cams_from_masks(run_dir, data, "val")
    bad = run_dir / "cams" / "val" / f"{ids[2]}.npz"
    blob = bad.read_bytes()
    bad.write_bytes(b"" if cut == "empty" else blob[: len(blob) // 2])  # a copy cut off, a full disk
    rc, out = _cli(capsys, "pseudo", run_dir, "--split", "val", "--refine", "none", "--quiet")
    assert "Traceback" not in out and "BadZipFile" not in out.split(str(bad))[0], out
    assert f"{bad}: cannot read CAM file" in out
    written = {p.stem for p in (run_dir / "pseudo" / "val").glob("*.png")}
    assert written == set(ids) - {ids[2]}  # the other ids are labelled
    assert rc != 0
