"""One name per concept: a renamed config key keeps loading under its former spelling (``config_aliases``);
RCA's ``options.proxy_*_thr`` are now ``proxy_*_thre``, as ToCo's ``cam.*_thre``."""

import dataclasses
from typing import ClassVar

import pytest

from wsss.cam.proxy_labels import ProxyParams
from wsss.core.config import from_dict
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


def test_no_thr_spelling_is_left_in_the_fields():
    for cls in (RCAOptions, ProxyParams):
        assert not [f.name for f in dataclasses.fields(cls) if f.name.endswith("_thr")]
