"""Kill -9 a training run and a prediction job midway; the resumed jobs finish the same work."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from conftest import REPO, tiny_overrides
from wsss.runs.stamps import SOURCES_FILE, STAMP_FILE
from wsss.utils.io import read_label_png
from wsss.utils.runlock import JOB_LOCK_FILE

CONFIG = str(REPO / "configs/cam/synthetic_cpu.yaml")


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "wsss.cli", *args]


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    t0 = time.time()
    while not ready():
        assert proc.poll() is None, "the job ended before it could be killed"
        assert time.time() - t0 < timeout
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_during_training_then_resume_matches_uninterrupted(synth_root, tmp_path):
    over = {"train.max_iters": 24, "train.ckpt_iters": 4, "train.eval_iters": 100, "train.log_iters": 4}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(
        _cmd("train", CONFIG, *tiny_overrides(synth_root, straight, **over), "--quiet", "--skip-check"),
        check=True,
        cwd=REPO,
    )
    args = _cmd("train", CONFIG, *tiny_overrides(synth_root, killed, **over), "--quiet", "--skip-check")
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed / "checkpoints/last.pt"
    _kill_when(proc, last.is_file)
    step_at_kill = torch.load(last, weights_only=False)["step"]
    assert 0 < step_at_kill < 24
    subprocess.run(args, check=True, cwd=REPO)  # same command: resumes from last.pt
    a = torch.load(straight / "checkpoints/last.pt", weights_only=False)
    b = torch.load(last, weights_only=False)
    assert a["step"] == b["step"] == 24
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    log = [line for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert len(log) == len((straight / "metrics.jsonl").read_text().splitlines())  # no duplicated steps


def test_sigkill_during_predict_then_resume_gives_every_mask(tmp_path):
    from wsss.data import generate_synthetic

    root = tmp_path / "data"
    generate_synthetic(root, n_train=8, n_val=120, size=64, seed=5, verbose=False)
    run = tmp_path / "run"
    over = {"train.max_iters": 2, "train.eval_iters": 100, "train.batch_size": 4}
    subprocess.run(
        _cmd("train", CONFIG, *tiny_overrides(root, run, **over), "--quiet", "--skip-check"), check=True, cwd=REPO
    )
    out = run / "predictions/val"
    args = _cmd("predict", str(run), "--split", "val", "--quiet", "--scales", "1.0,1.5,2.0")
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(proc, lambda: out.is_dir() and len(list(out.glob("*.png"))) >= 10)
    done_before = len(list(out.glob("*.png")))
    assert done_before < 120
    subprocess.run(args, check=True, cwd=REPO)
    ids = (root / "ImageSets/Segmentation/val.txt").read_text().split()
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(ids)
    hidden = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert hidden == sorted([STAMP_FILE, SOURCES_FILE, JOB_LOCK_FILE])  # no temporary leftovers
    resumed = {i: read_label_png(out / f"{i}.png") for i in ids}
    # every mask is complete and the same as a fresh, uninterrupted prediction
    subprocess.run(args + ["--overwrite"], check=True, cwd=REPO)
    for i in ids:
        fresh = read_label_png(out / f"{i}.png")
        assert fresh.shape == (64, 64) and int(fresh.max()) < 7
        assert np.array_equal(resumed[i], fresh), i


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    from wsss.core.files import atomic_write

    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    try:
        with atomic_write(target) as f:
            f.write(b"partial")
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert target.read_bytes() == b"old"
    assert [p.name for p in Path(tmp_path).iterdir()] == ["x.bin"]


def test_resumed_writers_remove_the_temporary_files_a_kill_left(tmp_path):
    """A SIGKILL between atomic_write's mkstemp and its rename leaves `.<name>.<rand>.tmp` (no except runs);
    the next cam / pseudo / predict into that folder deletes it before writing (the deterministic half of the
    SIGKILL test above, whose kill lands in that window only sometimes)."""
    from types import SimpleNamespace

    from wsss.core.files import atomic_write, remove_stale_temps
    from wsss.runs.jobs import _todo
    from wsss.runs.stamps import photo_record

    for id in "ab":
        (tmp_path / f"{id}.jpg").write_bytes(b"photo")
    ds = SimpleNamespace(ids=["a", "b"], image_path=lambda id: tmp_path / f"{id}.jpg")  # what _todo reads of a dataset
    out = tmp_path / "predictions/val"
    with atomic_write(out / "a.png") as f:
        f.write(b"done")
    with atomic_write(out / SOURCES_FILE, "w") as f:  # a.png names the photo it was made of: done
        json.dump({"a": photo_record(tmp_path / "a.jpg")}, f)
    stale = out / ".b.png.x1y2z3.wsss.tmp"
    stale.write_bytes(b"half")
    (out / ".keep").write_bytes(b"")  # a hidden file that is not ours stays
    (out / ".notes.tmp").write_bytes(b"mine")  # a temporary-looking file that is not ours stays too
    assert _todo(ds, out, ".png", overwrite=False) == ["b"]
    assert not stale.exists() and (out / "a.png").read_bytes() == b"done" and (out / ".keep").exists()
    assert (out / ".notes.tmp").read_bytes() == b"mine"
    assert remove_stale_temps(tmp_path / "missing") == 0
