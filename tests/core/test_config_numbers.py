"""Config numbers and override errors: YAML 1.2 floats (``1e-3``) everywhere configs are read, and a
typo in a command-line override blamed on the override, with the full dotted key suggested."""

import pytest

from wsss.core.config import load_config
from wsss.core.errors import ConfigError


def test_scientific_notation_in_yaml_and_overrides(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("train:\n  lr: 1e-3\n  warmup_ratio: 1E-6\n  weight_decay: 5.0e-4\n")
    cfg = load_config(cfg_file)
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.train.warmup_ratio == pytest.approx(1e-6)
    assert cfg.train.weight_decay == pytest.approx(5e-4)
    cfg = load_config(cfg_file, ["train.lr=2e-4", "train.grad_clip=1e1", "loss.weights={cls: 1, seg: 1e-1}"])
    assert cfg.train.lr == pytest.approx(2e-4)
    assert cfg.train.grad_clip == pytest.approx(10.0)
    assert cfg.loss.weights["seg"] == pytest.approx(0.1)


def test_yaml_loader_keeps_strings_and_ints():
    from wsss.core.config import yaml_load

    data = yaml_load("a: 1e3x\nb: 12\nc: '1e-3'\nd: e5\ne: 1_000\nf: .5\ng: -2e-2\n")
    assert data == {"a": "1e3x", "b": 12, "c": "1e-3", "d": "e5", "e": 1000, "f": 0.5, "g": -0.02}


def test_override_typo_is_blamed_on_the_override_with_the_dotted_key(tmp_path):
    cfg_file = tmp_path / "preset.yaml"
    cfg_file.write_text("train:\n  max_iters: 10\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg_file, ["train.max_iter=5"])
    msg = str(e.value)
    assert "override 'train.max_iter=5'" in msg
    assert "did you mean 'train.max_iters'" in msg
    assert str(cfg_file) not in msg
    with pytest.raises(ConfigError) as e:
        load_config(cfg_file, ["train.lr=fast"])
    assert "override 'train.lr=fast'" in str(e.value) and str(cfg_file) not in str(e.value)


def test_yaml_typo_is_blamed_on_the_file_with_the_dotted_key(tmp_path):
    cfg_file = tmp_path / "preset.yaml"
    cfg_file.write_text("cam:\n  par:\n    num_iters: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg_file, ["train.max_iters=5"])
    msg = str(e.value)
    assert msg.startswith(f"{cfg_file}: ") and "did you mean 'cam.par.num_iter'" in msg
    assert "override" not in msg
