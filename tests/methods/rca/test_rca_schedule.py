"""RCA's learning-rate steps (``options.lr_decay_epochs``, docs/methods/rca.md#training): in epochs or as fractions
of the training (the real_cpu preset's, which follow ``train.epochs``), the refusal of a training whose last step falls
before half of it, and the schedule in the training's start line."""

from __future__ import annotations

import pytest

from conftest import REPO
from wsss.cli import main
from wsss.core.config import from_dict, load_config
from wsss.core.errors import ConfigError
from wsss.engine.trainer import Trainer
from wsss.methods import build_method, placeholder_classes
from wsss.methods.rca import RCAOptions, check_lr_decay, lr_decay_fractions

SYNTHETIC = REPO / "configs" / "rca" / "synthetic_cpu.yaml"
REAL_CPU = REPO / "configs" / "rca" / "real_cpu.yaml"
# a network small enough to build in a moment (the schedule does not depend on it)
TINY_NET = {
    "model.backbone": "vgg16_dilated",
    "model.backbone_kwargs": "{width: 0.0625}",
    "model.pretrained": "null",
    "options.head_dim": 8,
    "options.queue_len": 8,
    "options.num_centroids": 2,
}


def _method(preset, **over: object):
    cfg = load_config(preset, [f"{k}={v}" for k, v in {**TINY_NET, **over}.items()])
    return build_method(cfg, placeholder_classes(4))


def _factors(method, epochs: int) -> list[float]:
    return [method.lr_factor(e) for e in range(epochs)]


def test_the_real_cpu_preset_steps_follow_the_training_length():
    """The preset's fractions (2/3, 11/12) are its old epochs 8 and 11 at 12 epochs, and 16 and 22 at 24: the steps
    of the documented 24-epoch route, without restating them."""
    assert load_config(REAL_CPU).options["lr_decay_epochs"] == [0.6667, 0.9167]
    method = _method(REAL_CPU)
    method.set_training_length(12)
    assert _factors(method, 12) == pytest.approx([1.0] * 8 + [0.1] * 3 + [0.01])
    method.set_training_length(24)
    assert _factors(method, 24) == pytest.approx([1.0] * 16 + [0.1] * 6 + [0.01] * 2)


def test_epochs_stay_epochs_and_a_step_past_the_end_is_never_reached():
    method = _method(SYNTHETIC, **{"options.lr_decay_epochs": "[7, 9]"})
    method.set_training_length(10)
    assert _factors(method, 10) == pytest.approx([1.0] * 7 + [0.1] * 2 + [0.01])
    method.set_training_length(0.5)  # a training shorter than an epoch: no step (a fraction's step is >= epoch 1)
    assert method.lr_factor(0) == 1.0
    fractions = _method(SYNTHETIC, **{"options.lr_decay_epochs": "[0.6667, 0.9167]"})
    fractions.set_training_length(0.5)
    assert fractions.lr_factor(0) == 1.0


def test_the_fraction_form_needs_the_training_length_first():
    method = _method(SYNTHETIC, **{"options.lr_decay_epochs": "[0.5]"})
    with pytest.raises(RuntimeError, match="set_training_length"):
        method.lr_factor(0)


def test_a_training_whose_last_step_falls_before_half_is_refused_in_one_line():
    """The issue's case: train.epochs=24 with the 12-epoch steps [8, 11] ran 13 epochs at a hundredth of the lr."""
    method = _method(REAL_CPU, **{"options.lr_decay_epochs": "[8, 11]"})
    with pytest.raises(ConfigError) as e:
        method.set_training_length(24)
    text = str(e.value)
    assert "\n" not in text
    assert text.startswith(
        "options.lr_decay_epochs [8, 11]: the last lr step (epoch 11) falls before half of this "
        "training's 24 epochs, so 13 of them run at lr 0.0001"
    )
    assert "options.lr_decay_epochs=[16, 22]" in text and "[0.67, 0.92]" in text
    assert text.endswith("or set options.allow_early_decay=true")
    allowed = _method(REAL_CPU, **{"options.lr_decay_epochs": "[8, 11]", "options.allow_early_decay": "true"})
    allowed.set_training_length(24)  # asked for: trained as given
    assert allowed.lr_factor(23) == pytest.approx(0.01)
    with pytest.raises(
        ConfigError,
        match=r"^options.lr_decay_epochs \[0.2, 0.4\]: the last lr step \(at 0.4 of the "
        r"training, epoch 10\) falls before half",
    ):
        _method(REAL_CPU, **{"options.lr_decay_epochs": "[0.2, 0.4]"}).set_training_length(24)


def test_the_paper_presets_keep_their_own_early_steps():
    """RCA's official schedule steps at epochs 5 and 10 of 30 (the Options default, not restated in the presets):
    the paper presets say they allow it."""
    for name in ("voc", "voc_corrected", "coco"):
        stated = load_config(REPO / "configs" / "rca" / f"{name}.yaml").options
        options = from_dict(RCAOptions, stated, "options")
        assert list(options.lr_decay_epochs) == [5, 10] and options.allow_early_decay is True, name
    with pytest.raises(ConfigError, match="epoch 10"):
        check_lr_decay([5, 10], [5, 10], 30, 0.1, 1e-3)


@pytest.mark.parametrize(
    ("steps", "message"),
    [([0.5, 8], "mixes fractions of the training"), ([8.5], "8.5 is neither an epoch"), ([-1], "-1 is neither")],
)
def test_a_step_list_in_no_one_form_is_refused(steps, message):
    with pytest.raises(ConfigError, match=rf"^options.lr_decay_epochs .*{message}"):
        lr_decay_fractions(steps)
    with pytest.raises(ConfigError, match=message):
        _method(SYNTHETIC, **{"options.lr_decay_epochs": str(steps)})


def _train_overrides(root, run_dir, **extra: object) -> list[str]:
    over = {
        **TINY_NET,
        "data.root": str(root),
        "run.dir": str(run_dir),
        "data.crop_size": 64,
        "data.num_workers": 0,
        "train.batch_size": 4,
        **extra,
    }
    return [f"{k}={v}" for k, v in over.items()]


def test_the_start_line_prints_the_schedule(synth_root, tmp_path, capsys):
    """24 training images, batch 4: 6 iterations an epoch; 12 epochs with the fraction steps."""
    cfg = load_config(REAL_CPU, _train_overrides(synth_root, tmp_path / "run", **{"train.epochs": 12}))
    Trainer(cfg, progress=False).train(until=0)  # the start line, no step
    line = next(x for x in capsys.readouterr().err.splitlines() if x.startswith("train "))
    assert line.endswith("; lr 0.01 until epoch 8, 0.001 until 11, 0.0001 to 12"), line


def test_a_refused_schedule_writes_nothing(synth_root, tmp_path, capsys):
    run = tmp_path / "run"
    args = _train_overrides(synth_root, run, **{"train.epochs": 24, "options.lr_decay_epochs": "[8, 11]"})
    assert main(["train", str(REAL_CPU), *args, "--skip-check", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: options.lr_decay_epochs [8, 11]: the last lr step (epoch 11) falls before half")
    assert not run.exists()
