"""The engine: loss staging, the resumable sampler, training end to end, resume, NaN guard."""

import gc
import json
import weakref
from pathlib import Path

import pytest
import torch

from conftest import REPO, tiny_overrides
from wsss.core.config import load_config
from wsss.core.errors import TrainingDiverged
from wsss.engine.trainer import EpochSampler, Trainer, active_terms

CONFIG = REPO / "configs/cam/synthetic_cpu.yaml"


def test_active_terms_follow_start_iters():
    cfg = load_config(
        None,
        ["loss.weights={cls: 1.0, lil: 0.5, seg: 0.1, off: 0.0}", "loss.start_iters={lil: 1000, seg: 2000}"],
    )
    assert active_terms(cfg, 0) == {"cls"}
    assert active_terms(cfg, 1000) == {"cls"}  # "n_iter <= 1000" is still the first stage (seco.md#staging)
    assert active_terms(cfg, 1001) == {"cls", "lil"}
    assert active_terms(cfg, 2001) == {"cls", "lil", "seg"}


def test_epoch_sampler_is_seeded_and_resumable():
    full = list(EpochSampler(10, seed=1, epoch=2))
    assert sorted(full) == list(range(10))
    assert list(EpochSampler(10, seed=1, epoch=2, offset=4)) == full[4:]
    assert list(EpochSampler(10, seed=1, epoch=3)) != full


def _train(root, run_dir, until=None, **extra):
    cfg = load_config(CONFIG, tiny_overrides(root, run_dir, **extra))
    trainer = Trainer(cfg, progress=False)
    out = trainer.train(until=until)
    return trainer, out


def test_training_writes_run_dir_and_resume_is_exact(synth_root, tmp_path):
    straight, out = _train(synth_root, tmp_path / "straight")
    run = tmp_path / "straight"
    assert out["step"] == 6
    assert (run / "config.yaml").is_file()
    assert (run / "checkpoints/last.pt").is_file() and (run / "checkpoints/best.pt").is_file()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r["step"] for r in records if "loss/loss" in r]
    assert logged == [2, 4, 6]
    assert "loss/seg" in records[-2] or "loss/seg" in records[-1]  # seg switched on after step 2
    vals = [r for r in records if "val" in r]
    assert [r["step"] for r in vals] == [3, 6]
    assert 0.0 <= vals[-1]["val"]["seg_miou"] <= 100.0

    # the same run stopped at 3 then resumed must reach the same weights
    _train(synth_root, tmp_path / "resumed", until=3)
    resumed, out2 = _train(synth_root, tmp_path / "resumed")
    assert out2["resumed"] and out2["step"] == 6
    a, b = straight.method.state_dict(), resumed.method.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # metrics after the checkpoint are not duplicated
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed/metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)


def test_nan_loss_stops_with_iteration_and_terms(synth_root, tmp_path):
    cfg = load_config(CONFIG, tiny_overrides(synth_root, tmp_path / "nan"))
    trainer = Trainer(cfg, progress=False)
    real = trainer.method.training_step

    def poisoned(batch, step, active):
        terms = real(batch, step, active)
        if step == 4:
            terms["cls"] = terms["cls"] * float("nan")
        return terms

    trainer.method.training_step = poisoned
    with pytest.raises(TrainingDiverged, match=r"iteration 4: cls=nan, aux=[0-9.]+") as err:
        trainer.train()
    # the checkpoint is named, not vouched for (a finite loss may already have been diverging), with the remedies
    assert str(Path(cfg.run.dir) / "checkpoints/last.pt") in str(err.value) and "good" not in str(err.value)
    assert "train.grad_clip" in str(err.value) and "metrics.jsonl" in str(err.value)
    ckpt = torch.load(Path(cfg.run.dir) / "checkpoints/last.pt", weights_only=False)
    assert ckpt["step"] == 3  # the last good checkpoint is kept


def test_a_diverged_training_exits_3_with_its_error_line(synth_root, tmp_path, capsys):
    """``wsss train`` ends a diverged training with exit 3 (``TrainingDiverged.exit_code``), apart from a bad
    config (2) and the other user errors (1): a sweep (experiments/real_route.py) records it as an outcome by the
    status, not by the message's wording. A loss weight past float32's range makes the weighted loss infinite at
    once (the terms the message names are unweighted)."""
    from wsss.cli import main

    over = tiny_overrides(synth_root, tmp_path / "inf", **{"train.max_iters": 2, "loss.weights.cls": 1e39})
    code = main(["train", str(CONFIG), *over, "--quiet", "--skip-check"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert code == 3 and len(errors) == 1 and errors[0].startswith("error: non-finite loss at iteration 0: cls=")


def test_trainer_gives_the_thread_count_back_and_the_cli_keeps_run_threads(synth_root, tmp_path):
    """A trainer used as a library trains with run.threads and restores the process's thread count when
    train() ends (it used to leave it changed: later float32 reductions then split differently); the CLI
    keeps run.threads for the whole command."""
    from wsss.cli import main

    torch.set_num_threads(2)  # the autouse fixture restores the suite's count after the test
    seen = []
    cfg = load_config(CONFIG, tiny_overrides(synth_root, tmp_path / "lib", **{"run.threads": 1, "train.max_iters": 2}))
    trainer = Trainer(cfg, progress=False)
    trainer.method.on_train_start = lambda ctx: seen.append(torch.get_num_threads())  # inside train()
    trainer.train()
    assert seen == [1] and torch.get_num_threads() == 2
    args = tiny_overrides(synth_root, tmp_path / "cli", **{"run.threads": 1, "train.max_iters": 2})
    assert main(["train", str(CONFIG), *args, "--quiet", "--skip-check"]) == 0
    assert torch.get_num_threads() == 1


def test_a_subclass_overrides_one_builder_and_keeps_the_others(synth_root, tmp_path):
    """detectron2-style builders: what a run trains (build_model), on what (build_train_loader) and with what
    (build_optimizer) come from overridable classmethods that ``Trainer.__init__`` calls."""
    calls = []

    class HalfLR(Trainer):
        @classmethod
        def build_model(cls, cfg, class_names):
            calls.append(("model", len(class_names)))
            return super().build_model(cfg, class_names)

        @classmethod
        def build_train_loader(cls, cfg, train_set, method):
            calls.append(("loader", len(train_set)))
            return super().build_train_loader(cfg, train_set, method)

        @classmethod
        def build_optimizer(cls, cfg, method):
            cfg.train.lr = cfg.train.lr / 2
            optimizer = super().build_optimizer(cfg, method)
            calls.append(("optimizer", optimizer))
            return optimizer

    cfg = load_config(CONFIG, tiny_overrides(synth_root, tmp_path / "sub", **{"train.max_iters": 2}))
    base_lr = cfg.train.lr
    trainer = HalfLR(cfg, progress=False)
    assert [c[0] for c in calls] == ["model", "loader", "optimizer"]
    assert calls[0][1] == trainer.train_set.num_classes and calls[1][1] == len(trainer.train_set)
    assert trainer.optimizer is calls[2][1] and trainer.cfg.train.lr == base_lr / 2
    assert trainer.train()["step"] == 2


@pytest.mark.parametrize("clip", [None, 1e-3])
def test_grad_clip_bounds_the_norm_the_optimiser_steps_with(synth_root, tmp_path, clip):
    """``train.grad_clip``: the optimiser steps with gradients of total norm at most the clip (the remedy that
    TrainingDiverged names); without it, the gradients as computed."""
    settings = {"train.max_iters": 2, "train.grad_clip": clip or "null"}
    overrides = tiny_overrides(synth_root, tmp_path / "clip", **settings)
    trainer = Trainer(load_config(CONFIG, overrides), progress=False)
    norms: list[float] = []
    step = trainer.optimizer.step

    def recording_step(*args, **kwargs):
        grads = [p.grad.double() for g in trainer.optimizer.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.sqrt(sum((x**2).sum() for x in grads))))
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    trainer.train()
    assert len(norms) == 2
    if clip is None:
        assert min(norms) > 1e-2  # the tiny model's gradients are far above the clip of the other case
    else:  # clip_grad_norm_ scales by clip / (norm + 1e-6): at most the clip, up to float32 rounding
        assert max(norms) <= clip * (1 + 1e-5) and min(norms) > 0.5 * clip


def test_a_finished_trainer_is_freed_without_the_cycle_collector(synth_root, tmp_path):
    """No reference cycle through the hooks (train_loop.py): a hook given a trainer's method held the
    trainer, whose hook list holds the hook. Under torchrun that cycle kept the DDP model and its gloo
    process group alive past ``destroy_process_group``, to be freed at interpreter teardown (a suspected
    cause of the rare abort of a finished worker, "terminate called without an active exception")."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # only reference counting may free it
    try:
        trainer, _ = _train(synth_root, tmp_path / "run", **{"train.max_iters": 2, "train.eval_iters": 2})
        gone, model = weakref.ref(trainer), weakref.ref(trainer.model)
        del trainer
        assert gone() is None and model() is None
    finally:
        if was_enabled:
            gc.enable()


@pytest.mark.parametrize(("gpu_here", "hint"), [(False, False), (True, True)])
def test_the_start_line_names_the_device_and_a_gpu_the_config_leaves_idle(
    synth_root, tmp_path, capsys, monkeypatch, gpu_here, hint
):
    """The real_cpu presets pin run.device=cpu (their figures are the CPU's): on a machine with a GPU the start line
    says it trains on the CPU and how to use the GPU (seen on an H200: a preset trained on its CPU, unsaid)."""
    monkeypatch.setattr("wsss.engine.trainer.cuda_available", lambda: gpu_here)
    over = {"run.device": "cpu", "train.max_iters": 1, "train.eval_iters": 100}
    Trainer(load_config(CONFIG, tiny_overrides(synth_root, tmp_path / "run", **over)), progress=False).train()
    line = next(x for x in capsys.readouterr().err.splitlines() if x.startswith("train "))
    assert (
        "of 1; on cpu" + (" (run.device=cpu; a GPU is here: run.device=cuda trains on it)" if hint else "") + "; lr "
    ) in line


def test_the_start_line_prints_the_lr_schedule(synth_root, tmp_path, capsys):
    """The lr the training will follow, after its device (a step schedule that did not follow a longer
    training was unsaid); a poly schedule says its warm-up and where it ends. RCA's steps: test_rca_schedule.py."""
    over = {"train.max_iters": 6, "train.warmup_iters": 2, "train.eval_iters": 100}
    Trainer(load_config(CONFIG, tiny_overrides(synth_root, tmp_path / "run", **over)), progress=False).train(until=0)
    line = next(x for x in capsys.readouterr().err.splitlines() if x.startswith("train "))
    assert line.endswith("; lr 0.0005, warm-up 2 iterations, poly decay (power 0.9) to 0 at iteration 6"), line


def test_lr_schedule_text_names_each_step_once():
    from wsss.engine.hooks import lr_schedule_text

    class Steps:
        def lr_factor(self, epoch: int) -> float | None:
            return 0.1 ** ((epoch >= 16) + (epoch >= 22))

    assert lr_schedule_text(Steps(), 1e-3, 24) == "lr 0.001 until epoch 16, 0.0001 until 22, 1e-05 to 24"
    assert lr_schedule_text(Steps(), 1e-3, 17.5) == "lr 0.001 until epoch 16, 0.0001 to 17.5"
    assert lr_schedule_text(Steps(), 1e-3, 10) == "lr 0.001"
