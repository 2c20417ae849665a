"""A pipeline's steps as several processes (pipelines/gpus.py), with gloo on the CPU: a training as 2 torchrun
processes, then a per-photo step sharded over 2 processes, whose files equal one process's."""

from __future__ import annotations

import signal
import sys

import numpy as np
import pytest

from conftest import REPO, tiny_overrides
from wsss.core.errors import DataError
from wsss.pipelines import gpus


@pytest.mark.slow
def test_a_training_runs_as_two_torchrun_processes_and_its_cams_shard_over_two(
    synth_root, tmp_path, monkeypatch, one_thread
):
    from wsss.runs.jobs import run_cam
    from wsss.runs.run import load_run

    monkeypatch.chdir(REPO)  # the children import the package as this process does
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # each process's threads those of the one-process reference
    run = tmp_path / "run"
    over = tiny_overrides(
        synth_root, run, **{"train.max_iters": 2, "train.eval_iters": 100, "loss.start_iters": "{seg: 100}"}
    )
    gpus.train_processes(2, [str(REPO / "configs/cam/synthetic_cpu.yaml"), *over, "--quiet", "--skip-check"])
    assert (run / "checkpoints" / "last.pt").is_file()
    argv = ["cam", str(run), "--split", "val", "--quiet", "--device", "cpu"]
    with gpus.sharded(2, argv) as procs:
        assert procs.world == 2 and procs.rank == 0
        run_cam(load_run(run, device="cpu"), "val", progress=False)
    two = {p.name: dict(np.load(p)) for p in sorted((run / "cams" / "val").glob("*.npz"))}
    assert len(two) == 8  # every val photo, each written by one of the two ranks
    run_cam(load_run(run, device="cpu"), "val", progress=False, overwrite=True)  # one process
    for name, arrays in two.items():
        with np.load(run / "cams" / "val" / name) as one:
            assert sorted(one) == sorted(arrays) and all(np.array_equal(one[k], arrays[k]) for k in arrays), name
    with pytest.raises(DataError, match="failed"):
        gpus.train_processes(2, [str(REPO / "configs/cam/synthetic_cpu.yaml"), "data.root=/nowhere", "--quiet"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_torchrun_launcher_ends_with_the_route(monkeypatch):
    """The launcher is started with the kernel's parent-death signal set to SIGTERM (utils.procs): a route killed
    outright does not leave a training running. The stand-in launcher reports its parent-death signal and fails, so
    its output comes back in the error."""
    probe = (
        "import ctypes; v = ctypes.c_int(); ctypes.CDLL(None).prctl(2, ctypes.byref(v), 0, 0, 0); "
        "print('pdeathsig', v.value); raise SystemExit(3)"
    )  # prctl(PR_GET_PDEATHSIG)
    monkeypatch.setattr(gpus, "torchrun_argv", lambda n, argv: [sys.executable, "-c", probe])
    with pytest.raises(DataError, match=f"pdeathsig {int(signal.SIGTERM)}"):
        gpus.train_processes(2, ["x.yaml"])
