"""torchrun with 2 processes (gloo, CPU): training, the SeCo all-gathers, checkpoints, evaluation,
and agreement with a 1-process run of the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, tiny_overrides


def torchrun(*args: str, nproc: int = 2) -> None:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "wsss.cli",
        *args,
    ]
    # faulthandler: a worker that aborts (SIGABRT, "terminate called without an active exception", seen
    # rarely in CI at the end of a finished run) prints every thread's Python stack, so the log says where
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-6000:]


def losses(run, key):
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in records if key in r}


def train_with_one_and_two_processes(synth_root, tmp_path, over: dict[str, object]):
    """The tiny CAM baseline trained by 1 and by 2 processes with the same global batch: their run folders."""
    one, two = tmp_path / "one", tmp_path / "two"
    for run, nproc in ((one, 1), (two, 2)):
        torchrun(
            "train",
            str(REPO / "configs/cam/synthetic_cpu.yaml"),
            *tiny_overrides(synth_root, run, **over),
            "--quiet",
            "--skip-check",
            nproc=nproc,
        )
    return one, two


def test_two_processes_match_one_with_the_same_global_batch(synth_root, tmp_path):
    over = {"loss.start_iters": "{seg: 100}", "train.max_iters": 4, "train.eval_iters": 4}
    one, two = train_with_one_and_two_processes(synth_root, tmp_path, over)
    a, b = losses(one, "loss/cls"), losses(two, "loss/cls")
    assert sorted(a) == sorted(b) == [2, 4]
    for step in a:  # same images per step, gradients averaged over processes: equal up to float error
        assert a[step] == pytest.approx(b[step], rel=1e-4, abs=1e-5)
    va, vb = losses(one, "val"), losses(two, "val")  # distributed evaluation sums the matrices
    assert va[4]["cam_miou"] == pytest.approx(vb[4]["cam_miou"], abs=0.5)
    assert (two / "checkpoints/last.pt").is_file()


def test_seco_gathers_keys_from_every_process(synth_root, tmp_path):
    run = tmp_path / "seco"
    over = tiny_overrides(
        synth_root,
        run,
        **{
            "options.num_patches": 2,
            "options.patch_size": 16,
            "options.queue_size": 64,
            "options.proj_hidden_dim": 16,
            "options.update_prototype": 1,
            "loss.start_iters": "{lil: 1, lig: 1, seg: 2, reg: 2}",
            "train.max_iters": 3,
            "train.eval_iters": 3,
        },
    )
    torchrun("train", str(REPO / "configs/seco/synthetic_cpu.yaml"), *over, "--quiet", "--skip-check")
    state = torch.load(run / "checkpoints/last.pt", weights_only=False)
    # 3 steps x global batch 4 x (2 + 2) keys, gathered from both processes into one ring buffer
    assert int(state["model"]["queue_ptr"]) == (3 * 4 * 4) % 64
    assert len(state["rng"]) == 2  # each process's RNG state, for an exact resume
    assert "val" in json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])


def test_ctrl_c_under_torchrun_saves_the_step_and_resumes(synth_root, tmp_path):
    """A terminal Ctrl-C reaches torchrun and both workers (one process group); the agent forwards it
    again. Every worker finishes its step, rank 0 saves last.pt, and the same command resumes from it."""
    import os
    import signal
    import time

    run = tmp_path / "run"
    over = tiny_overrides(
        synth_root,
        run,
        **{"train.max_iters": 100000, "train.eval_iters": 100000, "train.ckpt_iters": 100000, "train.log_iters": 1},
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "wsss.cli",
        "train",
        str(REPO / "configs/cam/synthetic_cpu.yaml"),
        *over,
        "--quiet",
        "--skip-check",
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    metrics, t0 = run / "metrics.jsonl", time.time()
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
        assert proc.poll() is None and time.time() - t0 < 300, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    step = torch.load(run / "checkpoints/last.pt", weights_only=False)["step"]
    assert step >= 2 and f"saved {run / 'checkpoints/last.pt'} at step {step}" in err
    assert err.count("interrupted; finished outputs are kept") == 2  # both workers stopped cleanly
    resumed = [o for o in over if not o.startswith("train.max_iters")] + [f"train.max_iters={step + 2}"]
    torchrun("train", str(REPO / "configs/cam/synthetic_cpu.yaml"), *resumed, "--skip-check", "--allow-config-change")
    assert torch.load(run / "checkpoints/last.pt", weights_only=False)["step"] == step + 2


def test_the_cams_mask_term_under_two_processes_matches_one(synth_root, tmp_path):
    # data.true_masks on a classifier (Method.mask_term): the term's own forward inside the DDP forward; every
    # synthetic photo has a mask, so each process averages over as many masked photos as the other and the two
    # processes' mean is the one process's (the tiny ViT has no BatchNorm, whose batch statistics would differ)
    over = {"loss.start_iters": "{seg: 100}", "train.max_iters": 4, "train.eval_iters": 100, "data.true_masks": "auto"}
    one, two = train_with_one_and_two_processes(synth_root, tmp_path, over)
    a, b = losses(one, "loss/mask"), losses(two, "loss/mask")
    assert sorted(a) == sorted(b) == [2, 4] and a[2] > 0
    for step in a:  # step 4's term is after three steps of averaged gradients: equal up to float error, as above
        assert a[step] == pytest.approx(b[step], rel=1e-4, abs=1e-5)
