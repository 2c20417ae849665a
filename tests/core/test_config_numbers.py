"""Config numbers and override errors: YAML 1.2 floats (``1e-3``) everywhere configs are read, and a
typo in a command-line override blamed on the override, with the full dotted key suggested."""

import re

import pytest
import yaml

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


# Each of these trained (a negative clip reversed the gradients' sign) or failed deep inside with a
# traceback; each is now one line naming the key and what it must be, from the schema's one check.
@pytest.mark.parametrize(
    "override, words",
    [
        ("train.grad_clip=-1", "train.grad_clip must be a positive number, got -1.0"),
        ("loss.weights.cls=-1", "loss.weights.cls must be a number of 0 or more, got -1.0"),
        ("loss.start_iters.seg=-3", "loss.start_iters.seg must be 0 or more, got -3"),
        ("train.power=-2", "train.power must be a number of 0 or more, got -2.0"),
        ("data.scale_range=[0,0]", "data.scale_range must be two positive scales, the smaller first, got [0.0, 0.0]"),
        ("data.scale_range=[2,.5]", "data.scale_range must be two positive scales, the smaller first, got [2.0, 0.5]"),
        ("run.amp=fp8", "run.amp must be one of none, bf16, fp16, got 'fp8'"),
        ("train.epochs=.inf", "train.epochs must be a positive number, got inf"),
        ("train.betas=[2,3]", "train.betas must be two numbers in [0, 1), got [2.0, 3.0]"),
        ("train.weight_decay=-1", "train.weight_decay must be a number of 0 or more, got -1.0"),
        ("train.momentum=-1", "train.momentum must be a number in [0, 1), got -1.0"),
        ("run.device=banana", "run.device must be auto, cpu, cuda or cuda:N, got 'banana'"),
        ("cam.par.dilations=[]", "cam.par.dilations must be a non-empty list of positive integers, got []"),
        ("cam.par.dilations=[1,0]", "cam.par.dilations must be a non-empty list of positive integers, got [1, 0]"),
        ("infer.crf.bi_rgb_std=0", "infer.crf.bi_rgb_std must be a positive number, got 0.0"),
        ("train.optimizer=adam", "train.optimizer must be one of sgd, adamw, got 'adam'"),
        ("run.seed=-1", "run.seed must be an integer from 0 to 4294967295 (numpy's seeds), got -1"),
        # the segmentation inference's fusion (docs/configs.md#inference)
        ("infer.flip_fuse=median", "infer.flip_fuse must be one of max, sum, mean, got 'median'"),
        ("infer.scale_fuse=min", "infer.scale_fuse must be one of max, sum, mean, got 'min'"),
        ("infer.scale_resize=area", "infer.scale_resize must be one of size, factor, got 'area'"),
        ("infer.fuse_at=label", "infer.fuse_at must be one of image, grid, got 'label'"),
        ("infer.resize_long=0", "infer.resize_long must be a side of 1 to 65535 pixels (a JPEG's largest), got 0"),
    ],
)
def test_a_value_outside_its_range_is_one_line_naming_the_key(tmp_path, override, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert str(e.value) == f"command-line override '{override}': {words}"
    key, value = override.split("=")
    section, *rest = key.split(".")
    preset = tmp_path / "preset.yaml"  # a file says the same, naming the file
    preset.write_text(yaml.safe_dump({section: _nested(rest, yaml.safe_load(value))}))
    with pytest.raises(ConfigError) as e:
        load_config(preset)
    assert str(e.value) == f"{preset}: {words}"


def _nested(keys: list[str], value: object) -> object:
    return value if not keys else {keys[0]: _nested(keys[1:], value)}


def test_every_field_with_a_range_takes_its_default_and_the_edges():
    """Valid data is never refused: each schema default, and a range's closed ends, pass the check."""
    import dataclasses

    from wsss.core.config import Config, check_settings, check_value

    check_settings(Config())
    from wsss.methods import METHODS

    for cls in METHODS.values():  # every method's options, at their defaults
        check_settings(cls.Options(), "options.")
    for value in (0.0, 1.0):
        check_value("cam.bkg_thre", value)
    check_value("train.momentum", 0.0)
    check_value("data.crop_size", 65535)
    check_value("run.device", "cuda:1")
    check_value("data.scale_range", (1.0, 1.0))  # one scale: no rescaling
    bad = dataclasses.replace(Config(), train=dataclasses.replace(Config().train, grad_clip=-1.0))
    with pytest.raises(ConfigError, match="^train.grad_clip must be a positive number, got -1.0$"):
        check_settings(bad)  # a config built in code is checked the same way


def test_the_manual_lists_every_setting_with_its_valid_values():
    """docs/configs.md#valid-values names each key that declares a Valid, in the row of what it must be."""
    import dataclasses
    import typing
    from pathlib import Path

    from wsss.core.config import Config

    rows = [
        ln for ln in (Path(__file__).parents[2] / "docs/configs.md").read_text().splitlines() if ln.startswith("| ")
    ]

    def walk(cls: type, where: str = "") -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{where}{f.name}.")
            elif "valid" in f.metadata:
                row = [r for r in rows if f"`{where}{f.name}`" in r]
                assert row and row[0].startswith(f"| {f.metadata['valid'].describe()} |"), (where + f.name, row)

    walk(Config)


@pytest.mark.parametrize(
    "method, option, words",
    [
        ("seco", "temp_lil=0", "options.temp_lil must be a positive number, got 0.0"),
        ("rca", "num_centroids=0", "options.num_centroids must be a positive integer, got 0"),
        (
            "rca",
            "view_crop_scale=[1, 0.5]",
            "options.view_crop_scale must be two area fractions in (0, 1], the smaller",
        ),
        ("deeplab", "rates=[]", "options.rates must be a non-empty list of positive integers, got []"),
        ("affinitynet", "rw_beta=-8", "options.rw_beta must be a positive number, got -8.0"),
        ("cam", "psa_alphas=[4, -1]", "options.psa_alphas must be a number of 0 or more, got [4.0, -1.0]"),
        ("weclip_plus", "label_update_threshold=2", "options.label_update_threshold must be a number in [0, 1], got 2"),
        ("weclip_plus", "box_threshold=1", "options.box_threshold must be a number in (0, 1), got 1"),
    ],
)
def test_a_method_option_outside_its_range_names_the_option(method, option, words):
    """The options of a method declare their ranges the same way, checked by the same from_dict."""
    from wsss.core.config import from_dict
    from wsss.methods import get_method_class

    cls = get_method_class(method)
    key, value = option.split("=")
    with pytest.raises(ConfigError, match="^" + re.escape(words)):
        from_dict(cls.Options, {key: yaml.safe_load(value)}, "options")
