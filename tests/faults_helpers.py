"""What the fault tests (tests/e2e/test_faults*.py) share: a copy of the synthetic dataset, a run folder with an
untrained checkpoint (no training needed), and the CLI called in process with its one error line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from conftest import REPO, tiny_overrides
from wsss.cli import main
from wsss.core.checkpoint import save_checkpoint
from wsss.core.config import load_config, save_config
from wsss.methods import build_method

CONFIG = REPO / "configs/cam/synthetic_cpu.yaml"


def copy_dataset(synth_root: Path, tmp_path: Path) -> Path:
    """A copy of the session's synthetic dataset that a test may damage."""
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    return root


def classes_of(root: Path) -> list[str]:
    return (root / "classes.txt").read_text().split("\n")[:-1]


def write_checkpoint(cfg, path: Path, names: list[str]) -> None:  # noqa: ANN001 (a Config)
    """An honest, untrained checkpoint of ``cfg``'s model with the classes ``names``."""
    method = build_method(cfg, names)
    state = {
        "step": 1,
        "model": method.state_dict(),
        "num_classes": len(names),
        "class_names": names,
        "rng": [{"numpy": np.random.get_state(), "torch": torch.get_rng_state()}],
    }
    save_checkpoint(state, path)


def make_run_dir(data: Path, tmp_path: Path) -> Path:
    """A run folder (config.yaml + an untrained last.pt that fits the dataset)."""
    run = tmp_path / "run"
    cfg = load_config(CONFIG, tiny_overrides(data, run))
    run.mkdir()
    save_config(cfg, run / "config.yaml")
    write_checkpoint(cfg, run / "checkpoints" / "last.pt", classes_of(data))
    return run


def cli(capsys, *argv: object) -> tuple[int, str]:  # noqa: ANN001 (pytest's capsys)
    """``wsss ARGV`` in process: (exit code, stdout + stderr)."""
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, (out.out + out.err).strip()


def one_error_line(out: str) -> str:
    """The output's ``error:`` line; asserts there is exactly one and no traceback."""
    assert "Traceback" not in out, out
    errors = [ln for ln in out.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, out
    return errors[0]
