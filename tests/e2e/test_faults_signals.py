"""Signals of the second fault trial: SIGTERM is what ``kill``, Docker, SLURM and Kubernetes send.
``wsss train`` takes it as Ctrl-C (finish the step, save ``last.pt``, exit non-zero), alone and under
torchrun; the processes a command starts (CRF pools, ``--workers`` ranks) end with it. Real processes,
tiny data, one thread each."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, tiny_overrides

CONFIG = str(REPO / "configs/cam/synthetic_cpu.yaml")
# faulthandler: a command that aborts at exit (SIGABRT, "terminate called without an active exception": seen once in
# CI after a SIGTERM had been handled, the step saved and 143 returned) prints its threads' Python stacks to stderr
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
LONG = {"train.max_iters": 100000, "train.eval_iters": 100000, "train.ckpt_iters": 100000, "train.log_iters": 1}


def _start(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=REPO, env=ENV, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    t0 = time.time()
    while not ready():
        assert proc.poll() is None and time.time() - t0 < timeout, proc.communicate()[1][-3000:]
        time.sleep(0.05)


def _logged_steps(run: Path, n: int):
    metrics = run / "metrics.jsonl"
    return lambda: metrics.is_file() and metrics.read_text().count("\n") >= n


def test_sigterm_during_train_saves_the_step_and_exits_143(synth_root, tmp_path):
    run = tmp_path / "run"
    proc = _start(
        [
            sys.executable,
            "-m",
            "wsss.cli",
            "train",
            CONFIG,
            *tiny_overrides(synth_root, run, **LONG),
            "--quiet",
            "--skip-check",
            "run.threads=1",
        ]
    )
    _wait_for(proc, _logged_steps(run, 2))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    step = torch.load(run / "checkpoints/last.pt", weights_only=False)["step"]
    assert step >= 2 and f"saved {run / 'checkpoints/last.pt'} at step {step}" in err
    assert "terminated (SIGTERM); finished outputs are kept" in err and "Traceback" not in err


def test_sigterm_to_the_whole_job_with_loader_workers_saves_the_step(synth_root, tmp_path):
    """SLURM's preemption signals every process of the job, the DataLoader workers too: a worker that died of
    it used to stop the training ("DataLoader worker exited unexpectedly") before the step was saved."""
    run = tmp_path / "run"
    over = tiny_overrides(synth_root, run, **LONG, **{"data.num_workers": 2})
    proc = _start(
        [sys.executable, "-m", "wsss.cli", "train", CONFIG, *over, "--quiet", "--skip-check", "run.threads=1"]
    )
    _wait_for(proc, _logged_steps(run, 2))
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    step = torch.load(run / "checkpoints/last.pt", weights_only=False)["step"]
    assert f"saved {run / 'checkpoints/last.pt'} at step {step}" in err and "Traceback" not in err


def test_sigterm_to_every_rank_under_torchrun_saves_the_step(synth_root, tmp_path):
    """SLURM's preemption: SIGTERM to the agent and to every worker of the job (the process group)."""
    run = tmp_path / "run"
    proc = _start(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "wsss.cli",
            "train",
            CONFIG,
            *tiny_overrides(synth_root, run, **LONG),
            "--quiet",
            "--skip-check",
        ]
    )
    _wait_for(proc, _logged_steps(run, 2))
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    step = torch.load(run / "checkpoints/last.pt", weights_only=False)["step"]
    assert step >= 2 and f"saved {run / 'checkpoints/last.pt'} at step {step}" in err, err[-3000:]
    assert err.count("terminated (SIGTERM); finished outputs are kept") == 2, err[-3000:]  # both ranks, cleanly
    assert 'File "' + str(REPO / "src") not in err, err[-3000:]  # no traceback in wsss (the agent shows its own)


# ---- 7: children end with their parent ---------------------------------------------------------------


def _children(pid: int) -> set[int]:
    """The pids whose parent is ``pid`` (Linux /proc)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(entry.name))
    return out


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":  # a zombie has ended (it waits for init to reap it)
            alive.add(pid)
    return alive


def _sigterm_leaves_no_child(cmd: list[str], n_children: int, log: Path) -> None:
    """Start ``cmd``, SIGTERM it once it has ``n_children`` children at work, and assert that none of its
    children outlives it by more than a few seconds (a survivor is SIGKILLed, not left to the next test)."""
    with open(log, "w") as out:  # a file, not a pipe: a surviving child would hold a pipe open
        proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, start_new_session=True, stdout=out, stderr=out)
    kids: set[int] = set()
    try:
        _wait_for(proc, lambda: len(_children(proc.pid)) >= n_children)
        time.sleep(1.0)  # the children have started their work
        kids = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        assert proc.returncode != 0, f"the command finished before the signal: {log.read_text()[-2000:]}"
        deadline = time.time() + 10
        while _alive(kids) and time.time() < deadline:
            time.sleep(0.1)
        left = _alive(kids)
        assert not left, f"{len(left)} of {len(kids)} children outlived their parent: {log.read_text()[-2000:]}"
    finally:
        for pid in _alive(kids | _children(proc.pid)):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()


@pytest.fixture
def trained(synth_root, tmp_path):
    from wsss.core.checkpoint import save_checkpoint
    from wsss.core.config import load_config, save_config
    from wsss.methods import build_method

    run = tmp_path / "run"
    cfg = load_config(CONFIG, tiny_overrides(synth_root, run, **{"infer.crf.iters": 3000}))  # a slow CRF
    run.mkdir()
    save_config(cfg, run / "config.yaml")
    names = (synth_root / "classes.txt").read_text().split("\n")[:-1]
    state = {"step": 1, "model": build_method(cfg, names).state_dict(), "num_classes": len(names), "class_names": names}
    save_checkpoint(state, run / "checkpoints" / "last.pt")
    return run


def test_sigterm_to_predict_ends_its_crf_workers(trained, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "wsss.cli",
        "predict",
        str(trained),
        "--split",
        "train",
        "--crf",
        "--crf-workers",
        "2",
        "--quiet",
    ]
    _sigterm_leaves_no_child(cmd, 2, tmp_path / "log")


def test_sigterm_to_cam_with_workers_ends_its_ranks(trained, tmp_path):
    # twelve passes at 16x (1024 px) per image: many seconds of work per rank, so the signal finds the ranks at
    # work (with less, under a loaded test session the CAMs could end within the second the test waits, and a
    # finished command exits 0)
    scales = ["--scales", ",".join(["16"] * 12)]
    cmd = [
        sys.executable,
        "-m",
        "wsss.cli",
        "cam",
        str(trained),
        "--split",
        "train",
        "--workers",
        "2",
        *scales,
        "--quiet",
    ]
    _sigterm_leaves_no_child(cmd, 1, tmp_path / "log")


# ---- the program's exit ------------------------------------------------------------------------------

TEARDOWN_ABORTS = """
import atexit, os, sys, threading, time
from wsss.cli import main

class AbortsAtTeardown:
    def __del__(self):
        os.abort()

keep = AbortsAtTeardown()
atexit.register(lambda: print("atexit handler ran", file=sys.stderr))
threading.Thread(target=lambda: (time.sleep(0.5), print("thread finished", file=sys.stderr))).start()
print("buffered before the command", end="")
sys.argv = ["wsss", *sys.argv[1:]]
sys.exit(main())
"""


def test_the_program_ends_with_its_commands_code_whatever_the_teardown_would_do(synth_root):
    """The aborts above (SIGABRT with the step saved and the exit message printed, no Python frame in any thread)
    came from the interpreter's teardown after the command had finished. The program ends without that teardown
    (``wsss.cli._leave_process``); the stand-in here is a finaliser that aborts at teardown. What the interpreter
    does first still happens: a non-daemon thread finishes, the atexit handlers run, buffered output is flushed."""
    proc = subprocess.run(
        [sys.executable, "-c", TEARDOWN_ABORTS, "check-data", str(synth_root)],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("buffered before the command"), proc.stdout[-3000:]
    assert "thread finished" in proc.stderr and "atexit handler ran" in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.index("thread finished") < proc.stderr.index("atexit handler ran")  # the interpreter's order
    # a user error still ends with its own code, by the same exit
    proc = subprocess.run(
        [sys.executable, "-c", TEARDOWN_ABORTS, "check-data", str(REPO / "no-such-root")],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and "dataset root not found" in proc.stdout, proc.stdout[-3000:]
    assert "atexit handler ran" in proc.stderr, proc.stderr[-3000:]
