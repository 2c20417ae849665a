"""The CUDA paths, run for real on a GPU: every method trains under autocast (bf16, fp16 with its gradient
scaler) and resumes; its checkpoint loads on a CPU-only machine; a first step on the GPU computes what the CPU
computes; a CUDA run reduces its CPU flags and sums in the same process group as NCCL's CUDA tensors; CAMs,
pseudo labels and predictions (with the CRF) on the GPU match the CPU's; `sweep-bkg` counts there what it counts on
the CPU.

CI has no GPU, so these are skipped there; `dev/device_check.sh` runs them on a lent GPU machine (BENCHMARKS.md,
"The CUDA paths on an H200"). ``WSSS_TEST_GPU=cpu`` (``make test-gpu-standin``, which .ci/run runs) runs them with
the CPU standing in for the GPU, to keep the tests themselves working on machines without one (autocast is then off:
the trainer keeps the CPU in fp32)."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image

from conftest import REPO, tiny_overrides
from tiny_methods import NAMES, tiny_config
from wsss.cli import main
from wsss.core.distributed import all_gather_cat, all_gather_objects, all_reduce_sum, process_group_backend
from wsss.engine.defaults import build_trainer, load_trained_method

GPU = os.environ.get("WSSS_TEST_GPU", "cuda")
pytestmark = pytest.mark.skipif(
    GPU == "cuda" and not torch.cuda.is_available(),
    reason="no CUDA device here (dev/device_check.sh runs these on a GPU machine)",
)


@pytest.fixture
def no_tf32():
    """Full float32 in cuDNN's convolutions for a comparison with the CPU (PyTorch's default lets them use
    TF32, a 10-bit mantissa: a difference of about 1e-3 that says nothing about our code); restored after."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def logged_losses(run: Path) -> dict[int, dict[str, float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: {k: v for k, v in r.items() if k.startswith("loss/")} for r in records if "loss/loss" in r}


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
@pytest.mark.parametrize("name", NAMES)
def test_every_method_trains_on_the_gpu_under_autocast_and_loads_on_the_cpu(name, amp, synth_root, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(name, synth_root, run, **{"run.device": GPU, "run.amp": amp})
    first = build_trainer(cfg, progress=False).train(until=1)
    trainer = build_trainer(cfg, progress=False)
    assert next(trainer.method.parameters()).device.type == torch.device(GPU).type
    second = trainer.train()  # resumed from step 1 (the checkpoint holds the GPU's RNG and the scaler's states)
    assert (first["step"], first["resumed"], second["step"], second["resumed"]) == (1, False, 2, True)
    losses = logged_losses(run)
    assert sorted(losses) == [1, 2] and all(np.isfinite(v) for step in losses.values() for v in step.values())
    # what a user with no GPU does with a run trained on one: the checkpoint's tensors land on the CPU
    trained = load_trained_method(run, device="cpu")
    params = list(trained.method.parameters())
    assert params and all(p.device.type == "cpu" and torch.isfinite(p).all() for p in params)


# Every loss term at a late step (all of them active), from the same weights and batch, both made on the CPU from
# the seed, and the same CPU random draws (SeCo's patch crops...): the GPU's terms must be the CPU's up to float32
# rounding in another summation order. Dropout draws its masks from the device's own generator (SC-CAM's and
# ExCEL's Dropout2d moved their terms by 6.5 % and 5.1 %), so it is switched off on both sides. Measured on an H200
# (dev/device_check.sh, full float32): at most 1.9e-7 over the other methods' terms (SeCo's LIL); 1e-5 is 50x that,
# and a term computed on another input, in half precision or on the GPU's own random draws is off by 1e-3 or more.
TERMS_RTOL = 1e-5


def _loss_terms(name: str, device: str, root: Path, run: Path) -> dict[str, float]:
    torch.manual_seed(0)
    trainer = build_trainer(tiny_config(name, root, run, **{"run.device": device}), progress=False)
    method = trainer.method
    method.train()
    for m in method.modules():  # the device's own random masks (the note above)
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.eval()
    method.on_train_start(trainer.context())
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in next(trainer.stream)[0].items()}
    torch.manual_seed(1)
    terms = method.training_step(batch, 10**6, set(trainer.cfg.loss.weights))
    return {k: float(v.detach()) for k, v in terms.items()}


@pytest.mark.parametrize("name", NAMES)
def test_every_loss_term_on_the_gpu_computes_what_the_cpu_computes(name, synth_root, tmp_path, no_tf32):
    cpu = _loss_terms(name, "cpu", synth_root, tmp_path / "cpu")
    gpu = _loss_terms(name, GPU, synth_root, tmp_path / "gpu")
    assert set(cpu) == set(gpu) and cpu
    rel = {k: abs(cpu[k] - gpu[k]) / max(abs(cpu[k]), 1e-6) for k in cpu}
    print(f"loss terms relative difference {name}: {json.dumps(rel)}")  # dev/device_check.sh collects these
    assert max(rel.values()) <= TERMS_RTOL, (cpu, gpu)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_gpu_run_reduces_cpu_and_gpu_tensors_in_one_process_group(synth_root, tmp_path, monkeypatch):
    """Under torchrun a CUDA run joins one group for both kinds of tensor (``process_group_backend``): its
    CPU flags, loss sums and confusion matrices, and SeCo's CUDA all-gathers. One process (one GPU here):
    NCCL refuses two ranks on one device, but a group of one runs every collective through its backend."""
    for k, v in {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
    }.items():
        monkeypatch.setenv(k, v)
    dist.init_process_group(process_group_backend(GPU != "cpu"), rank=0, world_size=1)
    try:
        assert all_reduce_sum(torch.tensor([1.0, 2.0])).tolist() == [1.0, 2.0]  # a CPU tensor: gloo
        gathered = all_gather_cat(torch.arange(3.0, device=GPU))  # a GPU tensor: NCCL
        assert gathered.device.type == torch.device(GPU).type and gathered.tolist() == [0.0, 1.0, 2.0]
        assert all_gather_objects({"rank": 0}) == [{"rank": 0}]
        for name in ("cam", "seco"):  # seco: its queue and prototypes gather CUDA keys
            over = {"run.device": GPU, "data.val_split": "val", "train.eval_iters": 2}
            result = build_trainer(tiny_config(name, synth_root, tmp_path / name, **over), progress=False).train()
            assert result["step"] == 2 and result["val"]["n_images"] == 2  # a validation reduced its matrix
    finally:
        dist.destroy_process_group()


# CAMs are saved as float16 (cams/*.npz): the GPU's and the CPU's may round to neighbouring float16 values,
# 2^-11 relative, on maps normalised to [0, 1]; measured on an H200: 4.9e-4 at most, one such step. 2e-3 absolute
# is four steps. A label differs only where a pixel's scores tie within that: at most 1 in 1000 pixels (measured:
# none of the 8 photos' pixels differed).
CAM_ATOL, LABEL_AGREEMENT = 2e-3, 0.999


def test_cams_pseudo_labels_and_predictions_on_the_gpu_match_the_cpu(synth_root, tmp_path, no_tf32):
    run = tmp_path / "run"
    train = ["train", str(REPO / "configs/cam/synthetic_cpu.yaml"), *tiny_overrides(synth_root, run), "--quiet"]
    assert main([*train, "run.device=cpu"]) == 0
    folders = {
        "cams": "cams/val",
        "cam_labels": "cam_labels/val",
        "pseudo": "pseudo/val",
        "predictions": "predictions_crf/val",
    }
    for side, dev in (("cpu", "cpu"), ("gpu", GPU)):
        common = [str(run), "--split", "val", "--device", dev, "--overwrite", "--quiet"]
        assert main(["cam", *common]) == 0
        assert main(["pseudo", *common]) == 0
        assert main(["predict", *common, "--crf"]) == 0
        for key, sub in folders.items():
            shutil.copytree(run / sub, tmp_path / side / key)
    cpu, gpu = tmp_path / "cpu", tmp_path / "gpu"
    ids = sorted(p.stem for p in (cpu / "cams").glob("*.npz"))
    assert len(ids) == 8
    worst = 0.0
    for i in ids:
        a, b = np.load(cpu / "cams" / f"{i}.npz"), np.load(gpu / "cams" / f"{i}.npz")
        assert a["keys"].tolist() == b["keys"].tolist()
        worst = max(worst, float(np.abs(a["cam"].astype(np.float32) - b["cam"].astype(np.float32)).max()))
    print(f"CAM max abs difference gpu-cpu: {worst}")
    assert worst <= CAM_ATOL
    for key in ("cam_labels", "pseudo", "predictions"):
        same = total = 0
        for i in ids:
            a, b = (np.asarray(Image.open(d / key / f"{i}.png")) for d in (cpu, gpu))
            same, total = same + int((a == b).sum()), total + a.size
        print(f"{key} pixel agreement gpu-cpu: {same / total}")
        assert same / total >= LABEL_AGREEMENT, key


def test_sweep_bkg_counts_on_the_gpu_what_the_cpu_counts():
    """`wsss sweep-bkg` counts on the run's device: the same integer counts, every level, both forms of
    a CAM (every class's map, the file's classes only), ties, zeros, negative values and ignore pixels included."""
    from wsss.evaluation.bkg_sweep import LevelHistogram

    rng = np.random.default_rng(0)
    levels = [-0.1, 0.0, 0.05, 0.3, 0.7]
    sides = {dev: [LevelHistogram(levels, 8, dev), LevelHistogram(levels, 8, dev)] for dev in ("cpu", GPU)}
    for _ in range(4):
        cam = rng.random((7, 33, 41)).astype(np.float16).astype(np.float32)
        cam[rng.random(cam.shape) < 0.2] = np.float32(0.3)
        cam[rng.random(cam.shape) < 0.05] = np.float32(-0.25)
        classes = np.flatnonzero(rng.random(7) < 0.5)
        cam[np.setdiff1d(np.arange(7), classes)] = 0.0
        labels = (rng.random(7) < 0.7).astype(np.float32)
        gt = rng.integers(0, 8, size=(33, 41)).astype(np.uint8)
        gt[rng.random(gt.shape) < 0.1] = 255
        for full, labelled in sides.values():
            full.add(cam, labels, gt)
            labelled.add(cam[classes], labels, gt, classes)
    for cpu, gpu in zip(sides["cpu"], sides[GPU]):
        assert cpu.counts().sum() > 0
        np.testing.assert_array_equal(gpu.counts(), cpu.counts())  # counts: equal, not close
