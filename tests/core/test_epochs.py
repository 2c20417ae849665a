"""train.epochs: the training length from the size of the training split and the global batch; the
iteration keys (max_iters without epochs, warmup / log / eval / ckpt intervals) keep their meaning."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import REPO, tiny_overrides
from wsss.core.config import iterations_per_epoch, load_config, resolve_epochs
from wsss.core.errors import ConfigError
from wsss.engine.trainer import Trainer
from wsss.methods.sccam import plan_round

CAM_PRESET = REPO / "configs" / "cam" / "synthetic_cpu.yaml"


def test_resolve_epochs_counts_drop_last_batches():
    assert iterations_per_epoch(70, 8) == 8  # 70 // 8, the last 6 images are dropped as by the stream
    assert iterations_per_epoch(5, 8) == 1
    cfg = load_config(None, ["train.batch_size=8", "train.epochs=12", "train.max_iters=5"])
    out = resolve_epochs(cfg, 70)
    assert out.train.max_iters == 96 and out.train.epochs == 12
    assert cfg.train.max_iters == 5  # the caller's config is left alone
    assert resolve_epochs(cfg, 140).train.max_iters == 204  # grows with the data
    assert resolve_epochs(load_config(None, ["train.batch_size=8", "train.epochs=0.5"]), 70).train.max_iters == 4
    plain = load_config(None, ["train.max_iters=5"])
    assert resolve_epochs(plain, 70) is plain and plain.train.max_iters == 5  # no epochs: max_iters as given
    with pytest.raises(ConfigError, match="train.epochs must be a positive number"):
        resolve_epochs(load_config(None, ["train.epochs=0"]), 70)


def test_trainer_runs_the_epochs_and_keeps_iteration_intervals(synth_root, tmp_path):
    # 24 training images, batch 4: 6 steps an epoch; 1.5 epochs = 9 steps. max_iters=6 is ignored;
    # log every 2, eval every 4, ckpt every 4 steps (iterations), and both again at the end (step 9).
    run = tmp_path / "run"
    overrides = tiny_overrides(synth_root, run, **{"train.epochs": 1.5, "train.eval_iters": 4, "train.ckpt_iters": 4})
    cfg = load_config(CAM_PRESET, overrides)
    trainer = Trainer(cfg, progress=False)
    assert trainer.cfg.train.max_iters == 9 and trainer.optimizer.max_iter == 9
    assert cfg.train.max_iters == 6  # the given config is not mutated
    trainer.train()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss/loss" in r] == [2, 4, 6, 8, 9]
    assert [r["step"] for r in records if "val" in r] == [4, 8, 9]
    # warmup_iters=2 stays two iterations, and the poly decay runs to the resolved 9
    assert trainer.optimizer.warmup_iter == 2
    assert trainer.optimizer.lr_mult(1) == pytest.approx(0.5, abs=1e-5)  # half-way up the ramp
    assert trainer.optimizer.lr_mult(2) == pytest.approx((1 - 2 / 9) ** 0.9)
    assert trainer.optimizer.lr_mult(8) == pytest.approx((1 - 8 / 9) ** 0.9)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 1.5 and saved["train"]["max_iters"] == 9  # the run says what it ran

    # the resolved length is what a resume continues to (no extra steps, same config)
    again = Trainer(load_config(CAM_PRESET, overrides), progress=False)
    assert again.train()["step"] == 9


def test_sccam_rounds_keep_their_own_epochs_and_use_train_epochs_otherwise():
    base = ["method=sccam", "train.batch_size=4", "train.max_iters=3", "train.epochs=2"]
    own = load_config(None, [*base, "options={round0_epochs: 3, schedule_epochs: 5, snapshot_epochs: [4]}"])
    plan = plan_round(own, 1, 24)  # 6 steps an epoch
    assert (plan.cfg.train.max_iters, plan.stop, plan.cfg.train.epochs) == (30, 24, None)
    generic = load_config(None, [*base, "options={round0_epochs: null, schedule_epochs: null, snapshot_epochs: []}"])
    assert (plan_round(generic, 0, 24).cfg.train.max_iters, plan_round(generic, 0, 24).stop) == (12, 12)
