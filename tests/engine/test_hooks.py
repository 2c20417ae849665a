"""The loop's hooks: a custom hook sees every event in order, extends the defaults through the public
``build_trainer``, can carry state through a checkpoint, and the per-epoch LR rule is a hook."""

from pathlib import Path

import pytest

from conftest import REPO, tiny_overrides
from wsss.core.checkpoint import load_checkpoint
from wsss.core.config import load_config
from wsss.engine.defaults import HookBase, build_trainer
from wsss.engine.hooks import EpochLRRule, MetricsLogger, PeriodicCheckpointer, PeriodicValidation

CONFIG = REPO / "configs/cam/synthetic_cpu.yaml"


class Recorder(HookBase):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def before_train(self):
        self.events.append(("before_train", self.trainer.step))

    def after_train(self):
        self.events.append(("after_train", self.trainer.step))

    def before_step(self):
        self.events.append(("before_step", self.trainer.step))

    def after_step(self):
        # the default hooks ran first: the step's log line and checkpoint exist already
        self.events.append(("after_step", self.trainer.step))

    def before_epoch(self, epoch):
        self.events.append(("before_epoch", epoch))

    def write(self, record):
        self.events.append(("write", record["step"], "val" in record))

    def state_dict(self):
        return {"n_events": len(self.events)}

    def load_state_dict(self, state):
        self.events.append(("resumed", self.trainer.step, state.get("n_events")))


def _cfg(root, run_dir, **extra):
    return load_config(CONFIG, tiny_overrides(root, run_dir, **{"data.val_max_images": 1, **extra}))


def test_custom_hook_sees_every_event_in_order_after_the_defaults(synth_root, tmp_path):
    rec = Recorder()
    cfg = _cfg(synth_root, tmp_path / "run", **{"train.max_iters": 4, "train.batch_size": 8})
    trainer = build_trainer(cfg, progress=False, hooks=[rec])
    kinds = [type(h) for h in trainer.hooks]
    assert kinds[: len(kinds) - 1] == [type(h) for h in trainer.build_hooks()] and trainer.hooks[-1] is rec
    out = trainer.train()
    assert out["step"] == 4
    # log every 2 steps, validation and checkpoint every 3 and at the end (4); 24 images / 8 = 3 steps an epoch
    assert rec.events == [
        ("before_train", 0),
        ("before_step", 0),
        ("before_epoch", 0),
        ("after_step", 1),
        ("before_step", 1),
        ("write", 2, False),
        ("after_step", 2),
        ("before_step", 2),
        ("write", 3, True),
        ("after_step", 3),
        ("before_step", 3),
        ("before_epoch", 1),
        ("write", 4, False),
        ("write", 4, True),
        ("after_step", 4),
        ("after_train", 4),
    ]


def test_hook_state_rides_in_the_checkpoint_and_comes_back_on_resume(synth_root, tmp_path):
    run = tmp_path / "run"
    first = Recorder()
    build_trainer(_cfg(synth_root, run), progress=False, hooks=[first]).train(until=3)
    saved = load_checkpoint(run / "checkpoints/last.pt")["hooks"]["Recorder"]["n_events"]
    # saved by a hook before these: the checkpoint is written before the step's validation
    assert first.events[saved:] == [("write", 3, True), ("after_step", 3), ("after_train", 3)]

    second = Recorder()
    trainer = build_trainer(_cfg(synth_root, run), progress=False)
    trainer.register_hooks([second])  # the other public way in
    assert trainer.train()["resumed"]
    assert second.events[0] == ("resumed", 3, saved)
    assert second.events[1:3] == [("before_train", 3), ("before_step", 3)]


def test_a_crash_in_validation_keeps_the_steps_checkpoint(synth_root, tmp_path, monkeypatch):
    """The checkpoint hook runs before validation: validation failing at step 3 leaves last.pt at step 3."""
    import wsss.engine.trainer as trainer_module

    def broken(*args, **kwargs):
        raise RuntimeError("validation failed")

    monkeypatch.setattr(trainer_module, "validate", broken)
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="validation failed"):
        build_trainer(_cfg(synth_root, run), progress=False).train()
    assert load_checkpoint(run / "checkpoints/last.pt")["step"] == 3


def test_after_train_runs_when_a_step_raises(synth_root, tmp_path):
    rec = Recorder()
    trainer = build_trainer(_cfg(synth_root, tmp_path / "run"), progress=False, hooks=[rec])

    def boom(*args):
        raise RuntimeError("boom")

    trainer.method.training_step = boom
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train()
    assert rec.events[-1] == ("after_train", 0)
    assert next(h for h in trainer.hooks if isinstance(h, MetricsLogger)).bar is None  # the progress bar was closed


def test_register_hooks_refuses_what_is_not_a_hook(synth_root, tmp_path):
    trainer = build_trainer(_cfg(synth_root, tmp_path / "run"), progress=False)
    with pytest.raises(TypeError, match="HookBase"):
        trainer.register_hooks([object()])


def test_epoch_lr_rule_scales_every_group_from_the_method_factor(synth_root, tmp_path):
    trainer = build_trainer(_cfg(synth_root, tmp_path / "run"), progress=False)
    assert {PeriodicValidation, PeriodicCheckpointer, EpochLRRule} <= {type(h) for h in trainer.hooks}
    before = [g["base_lr"] for g in trainer.optimizer.param_groups]
    rule = next(h for h in trainer.hooks if isinstance(h, EpochLRRule))
    rule.before_epoch(3)  # the CAM baseline has no rule (lr_factor None): nothing changes
    assert [g["base_lr"] for g in trainer.optimizer.param_groups] == before

    trainer.method.lr_factor = lambda epoch: 0.1**epoch
    rule.before_epoch(2)
    options = trainer.method.param_group_options()
    mult = trainer.optimizer.lr_mult()
    for g in trainer.optimizer.param_groups:
        assert g["base_lr"] == pytest.approx(trainer.cfg.train.lr * options[g["name"]]["lr_mult"] * 0.01)
        assert g["lr"] == pytest.approx(g["base_lr"] * mult)


def test_a_repeated_sigint_within_the_window_is_the_same_ctrl_c():
    """torchrun's agent forwards the terminal's SIGINT to workers that already got it: the pair is one
    Ctrl-C (the step finishes and is saved); a later SIGINT stops at once."""
    import signal

    hook = PeriodicCheckpointer(lambda name: None, period=1, max_iter=1, path=Path("last.pt"), progress=False)
    hook._previous = {signal.SIGINT: signal.default_int_handler}
    hook._on_signal(signal.SIGINT, None)
    hook._on_signal(signal.SIGINT, None)  # forwarded copy: no KeyboardInterrupt
    assert hook.interrupted
    hook._first_signal -= hook.REPEAT_WINDOW_S
    previous = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt):
            hook._on_signal(signal.SIGINT, None)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_loss_that_grows_a_hundredfold_is_warned_of_once_and_a_resume_keeps_its_start(capsys):
    # a diverging training can stay finite to its end: the non-finite error never comes, the warning does
    from wsss.engine.hooks import DivergenceWarning
    from wsss.engine.train_loop import TrainerBase

    trainer = TrainerBase()
    watch = DivergenceWarning()
    trainer.register_hooks([watch])
    for step, loss in ((8, 4.0), (16, 300.0), (24, float("nan")), (32, 399.0)):
        trainer.log({"step": step, "loss/loss": loss})
    assert capsys.readouterr().err == ""
    trainer.log({"step": 40, "loss/loss": 401.0})
    trainer.log({"step": 48, "loss/loss": 1e6})
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "iteration 40 (401) is over 100 times the first logged (4)" in err
    resumed = DivergenceWarning()
    resumed.load_state_dict({"first": 4.0})  # the checkpoint's state, before the warning
    TrainerBase().register_hooks([resumed])
    resumed.write({"step": 56, "loss/loss": 500.0})
    assert "iteration 56" in capsys.readouterr().err and watch.state_dict() == {"first": 4.0, "warned": True}
    assert DivergenceWarning().state_dict() == {}  # nothing logged: nothing in the checkpoint
