"""What `wsss train` does with an existing run: same settings resume (and log the same loss averages
as an uninterrupted run), other settings are refused unless allowed (then recorded); the run stores
resolved input paths; Ctrl-C saves a checkpoint and exits 130; command-line details."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import wsss
from conftest import REPO, tiny_overrides
from wsss.cli import main
from wsss.core.config import load_config
from wsss.core.errors import ConfigError
from wsss.engine.trainer import Trainer

CONFIG = REPO / "configs/cam/synthetic_cpu.yaml"


def _losses(run: Path) -> dict[int, dict[str, float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: {k: v for k, v in r.items() if k.startswith("loss/")} for r in records if "loss/loss" in r}


def test_logged_loss_after_resume_is_the_uninterrupted_runs(synth_root, tmp_path):
    # log every 2 steps, checkpoint at 3: the window of step 4 straddles the resume
    over = {"train.max_iters": 6, "train.log_iters": 2, "train.ckpt_iters": 3, "train.eval_iters": 100}
    Trainer(load_config(CONFIG, tiny_overrides(synth_root, tmp_path / "straight", **over)), progress=False).train()
    cfg = load_config(CONFIG, tiny_overrides(synth_root, tmp_path / "resumed", **over))
    Trainer(cfg, progress=False).train(until=3)
    out = Trainer(cfg, progress=False).train()
    assert out["resumed"] and out["step"] == 6
    a, b = _losses(tmp_path / "straight"), _losses(tmp_path / "resumed")
    assert sorted(a) == sorted(b) == [2, 4, 6]
    assert a == b  # the same floats, not just close


def _cli_train(root: Path, run: Path, *extra: str, **over) -> int:
    base = {"train.max_iters": 2, "train.eval_iters": 100, "train.ckpt_iters": 2}
    base.update(over)
    return main(["train", str(CONFIG), *tiny_overrides(root, run, **base), "--quiet", "--skip-check", *extra])


def test_resume_with_changed_settings_is_refused_then_recorded(synth_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert _cli_train(synth_root, run) == 0
    saved = (run / "config.yaml").read_text()
    capsys.readouterr()
    assert _cli_train(synth_root, run, **{"train.lr": 1e-3, "cam.bkg_thre": 0.3}) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "train.lr" in err and "cam.bkg_thre" in err and "--allow-config-change" in err
    assert (run / "config.yaml").read_text() == saved  # untouched
    # execution-only settings may change freely; so may the same settings typed differently
    assert _cli_train(synth_root, run, **{"data.num_workers": 1}) == 0
    assert not (run / "config_changes.jsonl").exists()
    # explicitly allowed: trained on, and the change is recorded in the run
    capsys.readouterr()
    assert _cli_train(synth_root, run, "--allow-config-change", **{"train.max_iters": 3, "train.lr": 1e-3}) == 0
    err = capsys.readouterr().err
    assert f"resumed from {run / 'checkpoints/last.pt'} at step 2" in err and "pretrained weights none" in err
    record = json.loads((run / "config_changes.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 2
    assert record["changes"]["train.max_iters"] == {"old": 2, "new": 3}
    assert record["changes"]["train.lr"]["new"] == pytest.approx(1e-3)
    assert torch.load(run / "checkpoints/last.pt", weights_only=False)["step"] == 3


def test_run_stores_the_resolved_data_root(synth_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(synth_root.parent)
    run = tmp_path / "run"
    main(
        [
            "train",
            str(CONFIG),
            *tiny_overrides(Path(synth_root.name), run, **{"train.max_iters": 1}),
            "--quiet",
            "--skip-check",
        ]
    )
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["data"]["root"] == str(synth_root.resolve())
    monkeypatch.chdir(tmp_path)  # another directory: the run still finds its data
    assert main(["cam", str(run), "--split", "val", "--quiet"]) == 0
    # a relative path that does not exist says what it was resolved to
    capsys.readouterr()
    assert main(["check-data", "no/such/root"]) == 1
    assert str(tmp_path / "no/such/root") in capsys.readouterr().out


def test_predict_without_seg_head_is_one_line(synth_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert _cli_train(synth_root, run, **{"model.decoder": "none", "loss.weights": "{cls: 1.0, aux: 1.0}"}) == 0
    capsys.readouterr()
    assert main(["predict", str(run), "--split", "val", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "segmentation head" in err


def test_flags_may_follow_or_surround_overrides():
    from wsss.cli import parse_args

    a = parse_args(["train", "c.yaml", "a.b=1", "--quiet", "c.d=2", "--skip-check", "e.f=3"])
    assert a.overrides == ["a.b=1", "c.d=2", "e.f=3"] and a.quiet and a.skip_check
    a = parse_args(["train", "c.yaml", "--quiet", "a.b=1"])
    assert a.overrides == ["a.b=1"] and a.quiet
    with pytest.raises(SystemExit):
        parse_args(["train", "c.yaml", "a.b=1", "--no-such-flag"])


@pytest.mark.skipif(os.name == "nt", reason="SIGINT semantics")
def test_ctrl_c_saves_a_checkpoint_and_exits_130(synth_root, tmp_path):
    run = tmp_path / "run"
    over = {"train.max_iters": 400, "train.ckpt_iters": 1000, "train.eval_iters": 1000, "train.log_iters": 1}
    args = [
        sys.executable,
        "-m",
        "wsss.cli",
        "train",
        str(CONFIG),
        *tiny_overrides(synth_root, run, **over),
        "--quiet",
        "--skip-check",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(wsss.__file__).parents[1])}  # this checkout's package
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    t0 = time.time()
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
        assert proc.poll() is None and time.time() - t0 < 300
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    step = torch.load(run / "checkpoints/last.pt", weights_only=False)["step"]
    assert 2 <= step < 400
    assert f"saved {run / 'checkpoints/last.pt'} at step {step}" in err
    assert not list((run / "checkpoints").glob(".*.tmp"))


def test_a_dataset_without_a_val_split_trains_without_validation(synth_root, tmp_path, capsys):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(synth_root, root)
    (root / "ImageSets/Segmentation/val.txt").unlink()
    run = tmp_path / "run"
    over = tiny_overrides(root, run, **{"train.max_iters": 2, "train.eval_iters": 1})
    assert main(["train", str(CONFIG), *over, "--quiet"]) == 0  # check-data included
    assert "training without validation" in capsys.readouterr().err
    assert (run / "checkpoints/last.pt").is_file() and not (run / "checkpoints/best.pt").exists()


@pytest.mark.parametrize("saved_max_iters", [20000, 4])
def test_an_epochs_run_resumes_whether_its_config_holds_max_iters_resolved_or_not(tmp_path, saved_max_iters):
    """train.epochs decides max_iters: the trainer saves it resolved (4), the SC-CAM driver unresolved
    (the default): neither is a change; a changed train.epochs is."""
    from wsss.core.config import check_config_change, save_config

    run = tmp_path / "run"
    (run / "round_0/checkpoints").mkdir(parents=True)
    (run / "round_0/checkpoints/last.pt").write_bytes(b"")
    over = [f"run.dir={run}", "data.root=/data", "train.epochs=2"]
    save_config(load_config(CONFIG, [*over, f"train.max_iters={saved_max_iters}"]), run / "config.yaml")
    assert check_config_change(load_config(CONFIG, over)) == {}
    with pytest.raises(ConfigError, match="train.epochs: 2.* -> 3"):
        check_config_change(load_config(CONFIG, [*over[:2], "train.epochs=3"]))


def test_a_run_whose_start_weights_are_gone_resumes_from_its_checkpoint(synth_root, tmp_path):
    # a DeepLab stage started from a classifier run (model.pretrained=RUN) that was moved while the stage was
    # stopped: the stage's own last.pt holds every weight (strictly loaded on resume), so it resumes with a
    # warning, and logs the same losses as a run that never lost its start
    import shutil

    from wsss.core.errors import ConfigWarning, WeightLoadError

    over = {"train.max_iters": 6, "train.log_iters": 2, "train.ckpt_iters": 3, "train.eval_iters": 100}
    start = tmp_path / "start"
    Trainer(load_config(CONFIG, tiny_overrides(synth_root, start, **{"train.max_iters": 2})), progress=False).train()
    moved = tmp_path / "moved_start"
    shutil.copytree(start, moved)
    straight = load_config(
        CONFIG, tiny_overrides(synth_root, tmp_path / "straight", **over, **{"model.pretrained": start})
    )
    Trainer(straight, progress=False).train()
    cfg = load_config(CONFIG, tiny_overrides(synth_root, tmp_path / "resumed", **over, **{"model.pretrained": moved}))
    Trainer(cfg, progress=False).train(until=3)
    shutil.rmtree(moved)
    gone = r"model.pretrained .*moved_start is gone; .*resumed/checkpoints/last.pt holds every weight"
    with pytest.warns(ConfigWarning, match=gone):
        out = Trainer(cfg, progress=False).train()
    assert out["resumed"] and out["step"] == 6
    assert _losses(tmp_path / "straight") == _losses(tmp_path / "resumed")  # the same floats, not just close
    assert f"pretrained: {moved}" in (tmp_path / "resumed/config.yaml").read_text()  # the run still names its start
    # a run with nothing to resume from still needs its start: one error naming it
    fresh = load_config(CONFIG, tiny_overrides(synth_root, tmp_path / "fresh", **over, **{"model.pretrained": moved}))
    with pytest.raises(WeightLoadError, match="moved_start: pretrained weight file not found"):
        Trainer(fresh, progress=False)


def test_a_resume_with_nothing_to_do_leaves_the_config_and_the_log_as_they_were(synth_root, tmp_path):
    run = tmp_path / "run"
    assert _cli_train(synth_root, run, **{"train.log_iters": 1}) == 0
    files = [run / "config.yaml", run / "metrics.jsonl"]
    for f in files:
        os.utime(f, ns=(1, 1))  # long ago: a rewrite would show
    assert _cli_train(synth_root, run, **{"train.log_iters": 1}) == 0
    assert [f.stat().st_mtime_ns for f in files] == [1, 1]
