"""torchrun with 2 processes (gloo, CPU): training, the SeCo all-gathers, checkpoints, evaluation,
and agreement with a 1-process run of the same global batch."""

import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO, tiny_overrides


def torchrun(*args: str, nproc: int = 2) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "wsss.cli", *args]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def losses(run, key):
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in records if key in r}


def test_two_processes_match_one_with_the_same_global_batch(synth_root, tmp_path):
    over = {"loss.start_iters": "{seg: 100}", "train.max_iters": 4, "train.eval_iters": 4}
    one, two = tmp_path / "one", tmp_path / "two"
    torchrun("train", str(REPO / "configs/cam/synthetic_cpu.yaml"), *tiny_overrides(synth_root, one, **over),
             "--quiet", "--skip-check", nproc=1)  # fmt: skip
    torchrun("train", str(REPO / "configs/cam/synthetic_cpu.yaml"), *tiny_overrides(synth_root, two, **over),
             "--quiet", "--skip-check")  # fmt: skip
    a, b = losses(one, "loss/cls"), losses(two, "loss/cls")
    assert sorted(a) == sorted(b) == [2, 4]
    for step in a:  # same images per step, gradients averaged over processes: equal up to float error
        assert a[step] == pytest.approx(b[step], rel=1e-4, abs=1e-5)
    va, vb = losses(one, "val"), losses(two, "val")  # distributed evaluation sums the matrices
    assert va[4]["cam_miou"] == pytest.approx(vb[4]["cam_miou"], abs=0.5)
    assert (two / "checkpoints/last.pt").is_file()


def test_seco_gathers_keys_from_every_process(synth_root, tmp_path):
    run = tmp_path / "seco"
    over = tiny_overrides(synth_root, run, **{
        "options.num_patches": 2, "options.patch_size": 16, "options.queue_size": 64,
        "options.proj_hidden_dim": 16, "options.update_prototype": 1,
        "loss.start_iters": "{lil: 1, lig: 1, seg: 2, reg: 2}", "train.max_iters": 3, "train.eval_iters": 3,
    })  # fmt: skip
    torchrun("train", str(REPO / "configs/seco/synthetic_cpu.yaml"), *over, "--quiet", "--skip-check")
    state = torch.load(run / "checkpoints/last.pt", weights_only=False)
    # 3 steps x global batch 4 x (2 + 2) keys, gathered from both processes into one ring buffer
    assert int(state["model"]["queue_ptr"]) == (3 * 4 * 4) % 64
    assert len(state["rng"]) == 2  # each process's RNG state, for an exact resume
    assert "val" in json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
