"""One name per concept: a renamed config key keeps loading under its former spelling (``config_aliases``);
RCA's ``options.proxy_*_thr`` are now ``proxy_*_thre``, as ToCo's ``cam.*_thre``."""

import dataclasses
from typing import ClassVar

import pytest

from conftest import REPO
from wsss.cam.proxy_labels import ProxyParams
from wsss.core.config import from_dict, load_config
from wsss.core.errors import ConfigError
from wsss.methods.rca import RCAOptions


@dataclasses.dataclass
class Renamed:
    level_thre: float = 0.5
    config_aliases: ClassVar[dict[str, str]] = {"level_thr": "level_thre"}


def test_a_former_key_loads_into_its_field_and_both_at_once_is_an_error():
    assert from_dict(Renamed, {"level_thr": 0.3}).level_thre == 0.3
    assert from_dict(Renamed, {"level_thre": 0.2}).level_thre == 0.2
    with pytest.raises(ConfigError, match=r"'x.level_thr' is the former name of 'level_thre'"):
        from_dict(Renamed, {"level_thr": 0.3, "level_thre": 0.2}, "x")
    with pytest.raises(ConfigError, match="unknown config key 'level_th'"):
        from_dict(Renamed, {"level_th": 0.3})
    assert "config_aliases" not in dataclasses.asdict(Renamed())  # not a key of the saved config


def test_rca_former_threshold_keys_still_load(tmp_path):
    old = {"options.proxy_att_thr": 0.6, "options.proxy_bg_thr": 40.0, "options.proxy_cam_bg_thr": 0.3}
    cfg = load_config(REPO / "configs/rca/synthetic_cpu.yaml", [f"{k}={v}" for k, v in old.items()])
    opts = from_dict(RCAOptions, cfg.options, "options")
    assert (opts.proxy_att_thre, opts.proxy_bg_thre, opts.proxy_cam_bg_thre) == (0.6, 40.0, 0.3)
    p = ProxyParams.from_options(opts)
    assert (p.att_thre, p.bg_thre, p.cam_bg_thre) == (0.6, 40.0, 0.3)
    # a YAML written with the former names (an old preset or run's config.yaml) loads too
    yaml_file = tmp_path / "old.yaml"
    yaml_file.write_text("method: rca\noptions:\n  proxy_att_thr: 0.7\n  proxy_bg_thr: 16.0\n")
    opts = from_dict(RCAOptions, load_config(yaml_file).options, "options")
    assert (opts.proxy_att_thre, opts.proxy_bg_thre) == (0.7, 16.0)
    with pytest.raises(ConfigError, match="former name"):
        from_dict(RCAOptions, {"proxy_bg_thr": 1.0, "proxy_bg_thre": 2.0}, "options")


def test_no_thr_spelling_is_left_in_the_fields():
    for cls in (RCAOptions, ProxyParams):
        assert not [f.name for f in dataclasses.fields(cls) if f.name.endswith("_thr")]


def test_resuming_a_run_saved_under_the_former_names_sees_no_change():
    from wsss.engine.trainer import config_changes

    preset = REPO / "configs/rca/synthetic_cpu.yaml"
    saved = load_config(preset, ["options.proxy_att_thr=0.8", "options.proxy_bg_thr=32.0"])  # an older run
    now = load_config(preset, ["options.proxy_att_thre=0.8", "options.proxy_bg_thre=32.0"])
    assert config_changes(saved, now) == {}
    changed = load_config(preset, ["options.proxy_att_thre=0.6", "options.proxy_bg_thre=32.0"])
    assert config_changes(saved, changed) == {"options.proxy_att_thre": (0.8, 0.6)}
