"""`wsss cam | pseudo --refine crf | predict` over 2 processes (torchrun with gloo, and `--workers 2`)
write byte-identical files to a 1-process run; a worker killed mid-job loses only its unfinished ids."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, tiny_overrides
from wsss.cli import main
from wsss.utils.runlock import JOB_LOCK_FILE

CONFIG = str(REPO / "configs/cam/synthetic_cpu.yaml")
# (command, output folders compared): every per-id command with the CRF refiner, the slowest one
JOBS = [
    (["cam"], ["cams/val", "cam_labels/val"]),
    (["pseudo", "--refine", "crf"], ["pseudo/val"]),
    (["predict"], ["predictions/val"]),
]


def _files(run: Path, folders: list[str]) -> dict[str, bytes]:
    """The folders' files and bytes, but for each job's lock, which holds its job's pid and time."""
    return {
        f"{d}/{p.name}": p.read_bytes() for d in folders for p in sorted((run / d).iterdir()) if p.name != JOB_LOCK_FILE
    }


def _copy_run(trained: Path, to: Path) -> Path:
    """The trained run (config and checkpoints) without any inference output."""
    to.mkdir(parents=True)
    shutil.copy(trained / "config.yaml", to / "config.yaml")
    shutil.copytree(trained / "checkpoints", to / "checkpoints")
    return to


@contextlib.contextmanager
def _threads(n: int):
    """The reference run with the threads of each process of a 2-process run on this 2-core machine
    (torchrun's OMP_NUM_THREADS=1, `--workers 2`: the cores shared out): a convolution's float sums
    depend on the thread count, and byte identity is promised for the same arithmetic, not across it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, bytes]]:
    """A tiny run on 12 val images, and the files of a 1-process cam, pseudo --refine crf and predict."""
    from wsss.data import generate_synthetic

    base = tmp_path_factory.mktemp("sharded")
    root = base / "data"
    generate_synthetic(root, n_train=8, n_val=12, size=48, seed=7, verbose=False)
    run = base / "run"
    assert (
        main(
            [
                "train",
                CONFIG,
                *tiny_overrides(root, run, **{"train.max_iters": 2, "train.eval_iters": 100}),
                "--quiet",
                "--skip-check",
            ]
        )
        == 0
    )
    one = _copy_run(run, base / "one")
    with _threads(1):
        for args, _ in JOBS:
            assert main([*args[:1], str(one), "--split", "val", *args[1:], "--quiet"]) == 0
    return run, root, _files(one, [f for _, fs in JOBS for f in fs])


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "wsss", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the reference's threads, whatever the caller's environment
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)


def test_torchrun_two_processes_write_the_files_of_one(trained, tmp_path):
    run, _, expected = trained
    two = _copy_run(run, tmp_path / "two")
    for args, _ in JOBS:
        done = _torchrun(args[0], str(two), "--split", "val", *args[1:])
        assert done.returncode == 0, done.stderr[-3000:]
        # rank 0 alone prints the result line and the job's summary (both ranks' ids)
        assert len(done.stdout.splitlines()) == 1, done.stdout
        assert "12 written, 0 skipped, 0 failed" in done.stderr and "2 processes" in done.stderr, done.stderr[-2000:]
    assert _files(two, [f for _, fs in JOBS for f in fs]) == expected
    # cams, seeds, pseudo labels, predictions of the 12 ids, and each folder's settings stamp and photos' records
    # (runs/stamps.py)
    assert len(expected) == 12 * 4 + 4 + 4


def test_two_local_workers_write_the_files_of_one_and_skip_what_exists(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # each worker's threads, those of the reference (any machine)
    run, _, expected = trained
    two = _copy_run(run, tmp_path / "workers")
    for args, _ in JOBS:
        pool = ["--crf-workers", "1"] if args[0] == "pseudo" else []  # the CRFs in each worker's CRF pool
        assert main([args[0], str(two), "--split", "val", *args[1:], "--workers", "2", *pool]) == 0
    assert _files(two, [f for _, fs in JOBS for f in fs]) == expected
    capsys.readouterr()
    assert main(["cam", str(two), "--split", "val", "--workers", "2"]) == 0  # nothing left to do
    assert "cam val: 0 written, 12 skipped, 0 failed" in capsys.readouterr().err


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_killed_worker_loses_only_its_ids_and_a_rerun_finishes_the_same_files(trained, tmp_path, monkeypatch):
    from wsss.data import generate_synthetic

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # each worker's threads, those of the reference (any machine)
    run, _, _ = trained
    root = tmp_path / "data"  # enough images, at scales slow enough, for the kill to land mid-job
    generate_synthetic(root, n_train=0, n_val=40, size=48, seed=8, verbose=False)
    cam = ["cam", "--split", "val", "--data-root", str(root), "--scales", "1.0,2.0,3.0", "--quiet"]
    one, killed = _copy_run(run, tmp_path / "one"), _copy_run(run, tmp_path / "killed")
    args = [sys.executable, "-m", "wsss", cam[0], str(killed), *cam[1:], "--workers", "2"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seeds, t0 = killed / "cam_labels/val", time.time()
    while not (seeds.is_dir() and any(seeds.glob("*.png"))):
        assert proc.poll() is None and time.time() - t0 < 300, proc.communicate()[1][-3000:]
        time.sleep(0.02)
    (worker,) = _children(proc.pid)
    os.kill(worker, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-3000:]
    assert "worker 1" in err and "stopped with signal 9" in err and "rerun the same command" in err, err[-3000:]
    ids = (root / "ImageSets/Segmentation/val.txt").read_text().split()
    written = {p.stem for p in seeds.glob("*.png")}
    assert set(ids[::2]) <= written and 0 < len(written) < 40  # rank 0 finished its share, rank 1 did not
    assert main([cam[0], str(killed), *cam[1:], "--workers", "2"]) == 0
    with _threads(1):
        assert main([cam[0], str(one), *cam[1:]]) == 0
    folders = ["cams/val", "cam_labels/val"]
    assert _files(killed, folders) == _files(one, folders)
    assert len(_files(one, folders)) == 2 * 40 + 2 + 2  # and the two folders' settings stamps and photos' records


def test_viz_ids_over_two_workers_draws_the_grids_of_one(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # each worker's threads, those of the reference (any machine)
    run, root, _ = trained
    ids = (root / "ImageSets/Segmentation/val.txt").read_text().split()[:5]
    one, two = _copy_run(run, tmp_path / "one"), _copy_run(run, tmp_path / "two")
    viz = ["--split", "val", "--ids", ",".join(ids), "--quiet"]
    with _threads(1):
        assert main(["viz", str(one), *viz]) == 0
    capsys.readouterr()
    assert main(["viz", str(two), *viz, "--workers", "2"]) == 0
    # rank 0 prints the grids it drew (ids 0, 2, 4); the worker prints its own on its stdout
    assert [Path(p).stem for p in capsys.readouterr().out.split()] == ids[::2]
    assert _files(two, ["viz"]) == _files(one, ["viz"]) and len(_files(one, ["viz"])) == 5
