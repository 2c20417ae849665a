"""TensorBoard logging: the same losses, learning rates and validation metrics as metrics.jsonl, no duplicated
steps after a resume, and a run that never fails when tensorboard is missing or switched off."""

import json
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import REPO, tiny_overrides
from wsss.core.config import load_config
from wsss.engine.hooks import TensorBoardWriter
from wsss.engine.trainer import Trainer

CONFIG = REPO / "configs/cam/synthetic_cpu.yaml"


def _train(root, run_dir, until=None, **extra):
    cfg = load_config(CONFIG, tiny_overrides(root, run_dir, **{"data.val_max_images": 2, **extra}))
    trainer = Trainer(cfg, progress=False)
    return trainer, trainer.train(until=until)


def _scalars(run_dir):
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_mirrors_metrics_jsonl_and_resume_does_not_duplicate(synth_root, tmp_path):
    run = tmp_path / "run"
    _train(synth_root, run, until=5)  # killed at 5: step 4 was logged after the last checkpoint (3)
    trainer, out = _train(synth_root, run)  # resumed to 6
    assert out["resumed"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    tb = _scalars(run)

    train = [r for r in records if "loss/loss" in r]
    assert [s for s, _ in tb["loss/loss"]] == [r["step"] for r in train] == [2, 4, 6]  # each step once
    for key in [k for k in train[-1] if k.startswith("loss/")]:
        got = dict(tb[key])
        for r in train:
            if key in r:
                assert got[r["step"]] == pytest.approx(r[key], rel=1e-6)
    assert dict(tb["train/sec_per_iter"])[6] == pytest.approx(train[-1]["sec_per_iter"], rel=1e-6)

    # every parameter group's learning rate, by name; the backbone's is the one metrics.jsonl records
    groups = [g["name"] for g in trainer.optimizer.param_groups]
    assert {f"lr/{g}" for g in groups} <= set(tb)
    for r in train:
        assert dict(tb[f"lr/{groups[0]}"])[r["step"]] == pytest.approx(r["lr"], rel=1e-6)
    head = [g for g in trainer.optimizer.param_groups if g["name"] == "head"][0]
    assert dict(tb["lr/head"])[6] == pytest.approx(head["lr"], rel=1e-6)
    assert dict(tb["lr/head"])[6] != pytest.approx(dict(tb[f"lr/{groups[0]}"])[6])  # 10x head multiplier

    vals = [r for r in records if "val" in r]
    assert [s for s, _ in tb["val/cam_miou"]] == [r["step"] for r in vals] == [3, 6]
    for r in vals:
        for k, v in r["val"].items():
            assert dict(tb[f"val/{k}"])[r["step"]] == pytest.approx(v, rel=1e-6)


def test_missing_tensorboard_or_switched_off_never_fails(synth_root, tmp_path, monkeypatch):
    _, out = _train(synth_root, tmp_path / "off", **{"run.tensorboard": "false", "train.max_iters": 2})
    assert out["step"] == 2 and not (tmp_path / "off/tensorboard").exists()

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` now raises ImportError
    _, out = _train(synth_root, tmp_path / "missing", **{"train.max_iters": 2})
    assert out["step"] == 2 and not (tmp_path / "missing/tensorboard").exists()
    lines = (tmp_path / "missing/metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines if "loss/loss" in line] == [2]


def test_a_failing_writer_stops_tensorboard_but_not_the_run(synth_root, tmp_path, capsys):
    cfg = load_config(
        CONFIG, tiny_overrides(synth_root, tmp_path / "broken", **{"train.max_iters": 4, "data.val_max_images": 1})
    )
    trainer = Trainer(cfg, progress=False)

    class Broken:
        closed = False

        def add_scalar(self, *args):
            raise OSError("disk full")

        def close(self):
            Broken.closed = True

    tb = next(h for h in trainer.hooks if isinstance(h, TensorBoardWriter))
    tb.open = lambda: setattr(tb, "writer", Broken())
    out = trainer.train()
    assert out["step"] == 4 and Broken.closed and tb.writer is None
    assert "TensorBoard logging stopped (disk full)" in capsys.readouterr().out
    steps = [json.loads(line)["step"] for line in (tmp_path / "broken/metrics.jsonl").read_text().splitlines()]
    assert 4 in steps  # metrics.jsonl kept everything


def test_a_resumed_writer_waits_until_its_event_file_sorts_after_the_others(tmp_path, monkeypatch):
    """TensorBoard reads event files in name order; within one second ``...<pid>.10`` sorts before ``...<pid>.9``,
    so a resume's purge was read before the steps it drops (this module's first test, seen once in `make test`).
    The resumed writer waits for the next second; the clock and the sleep are the test's own here."""
    from wsss.engine import hooks

    slept = []
    monkeypatch.setattr(hooks.time, "time", lambda: 1000.25)
    monkeypatch.setattr(hooks.time, "sleep", slept.append)
    hooks.wait_past_event_files(tmp_path)
    assert slept == []  # no event file yet: no wait
    (tmp_path / "events.out.tfevents.0000001000.vm.10808.9").touch()
    hooks.wait_past_event_files(tmp_path)
    assert slept == [0.75]  # until second 1001
    slept.clear()
    (tmp_path / "events.out.tfevents.0000005000.vm.10808.10").touch()  # a clock set back: no hour-long wait
    hooks.wait_past_event_files(tmp_path)
    assert slept == []
