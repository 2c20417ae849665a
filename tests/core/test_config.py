import pytest

from conftest import REPO
from wsss.core.config import Config, from_dict, load_config, save_config
from wsss.core.errors import ConfigError
from wsss.methods import get_method_class


def test_defaults_and_dotted_overrides():
    cfg = load_config(None, ["train.max_iters=7", "cam.scales=[1.0, 0.5]", "model.pretrained=null", "run.dir=x/y"])
    assert cfg.train.max_iters == 7
    assert cfg.cam.scales == (1.0, 0.5)
    assert cfg.model.pretrained is None
    assert cfg.run.dir == "x/y"
    assert cfg.train.lr == pytest.approx(6e-5)  # untouched default


def test_unknown_key_suggests_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.max_iter'.*did you mean 'train.max_iters'"):
        load_config(None, ["train.max_iter=5"])
    with pytest.raises(ConfigError, match="unknown config key 'tarin'"):
        load_config(None, ["tarin.lr=1"])


def test_type_errors_are_named():
    with pytest.raises(ConfigError, match="train.max_iters: expected an integer"):
        load_config(None, ["train.max_iters=abc"])
    with pytest.raises(ConfigError, match="data.scale_range: expected 2 values"):
        load_config(None, ["data.scale_range=[1, 2, 3]"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(None, ["train.max_iters"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)


def test_resolved_config_round_trip(tmp_path):
    cfg = load_config(REPO / "configs/cam/synthetic_cpu.yaml", ["train.max_iters=3"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert isinstance(again, Config)


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_is_valid(path):
    cfg = load_config(path)
    cls = get_method_class(cfg.method)
    from_dict(cls.Options, cfg.options, "options")  # method options validate too


def test_a_folder_that_is_not_a_run_is_named_with_what_to_do(tmp_path, capsys):
    import pytest

    from wsss.cli import main
    from wsss.core.config import load_run_config, save_config
    from wsss.core.errors import MissingFileError

    with pytest.raises(MissingFileError, match=r"config.yaml: not a run directory \(no config.yaml\); pass x"):
        load_run_config(tmp_path, "; pass x")
    for argv in (
        ["cam", str(tmp_path), "--split", "val"],
        ["report", str(tmp_path)],
        ["export", "voc-test", str(tmp_path)],
    ):
        assert main(argv) == 1
        assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'config.yaml'}: not a run directory")
    save_config(load_config(None, ["train.lr=0.5"]), tmp_path / "config.yaml")
    assert load_run_config(tmp_path).train.lr == 0.5
