"""Presets inherit (``_base_``): every shipped preset still resolves to the settings it had before the
presets became deltas (tests/core/preset_expansions.json, written by dev/preset_expansions.py), the
merge rules, the errors of a missing base or a cycle, `wsss config show`, and a run's config.yaml
standing without the presets."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from conftest import REPO, tiny_overrides
from dev.preset_expansions import FIXTURE, expand_preset, preset_names
from wsss.cli import main
from wsss.core.config import BASE_KEY, _merge, dump_config, load_config, read_preset, resolve_paths, yaml_load
from wsss.core.errors import ConfigError

RECORDED = json.loads(FIXTURE.read_text())
REGENERATE = "if the change is intended: .venv/bin/python dev/preset_expansions.py, and say why in the commit"


def test_the_fixture_lists_every_shipped_preset():
    assert sorted(RECORDED) == preset_names()


@pytest.mark.parametrize("name", preset_names(), ids=lambda n: n.removeprefix("configs/").removesuffix(".yaml"))
def test_every_preset_resolves_to_its_recorded_settings(name):
    expanded = expand_preset(name)
    recorded = RECORDED[name]
    sections = {*expanded, *recorded}
    differ = {k: (expanded.get(k), recorded.get(k)) for k in sections if expanded.get(k) != recorded.get(k)}
    assert not differ, f"{name} resolves differently from {FIXTURE.name} (now, recorded): {differ}; {REGENERATE}"


def test_a_delta_that_drops_a_setting_no_longer_matches(tmp_path):
    """The comparison is sharp: seco/voc_corrected whose quirk base lost one of its switches (the official
    base's true leaks through) resolves to other settings."""
    name = "configs/seco/voc_corrected.yaml"
    shutil.copytree(REPO / "configs/_base_", tmp_path / "_base_")
    quirks = tmp_path / "_base_/quirks/seco_corrected.yaml"
    assert "  quirk_patch_seed: false\n" in quirks.read_text()
    _write(tmp_path / "seco/voc.yaml", (REPO / "configs/seco/voc.yaml").read_text())
    corrected = _write(tmp_path / "seco/voc_corrected.yaml", (REPO / name).read_text())
    assert expand_preset(corrected) == RECORDED[name]  # the copy, as it is, matches
    quirks.write_text(quirks.read_text().replace("  quirk_patch_seed: false\n", ""))
    dropped = expand_preset(corrected)
    assert dropped["options"]["quirk_patch_seed"] is True
    assert dropped != RECORDED[name]


def _bases(path) -> list:
    """The files ``path`` names under ``_base_``, with theirs, depth first (a base of two: listed twice)."""
    bases = yaml_load(path.read_text()).get(BASE_KEY, [])
    found = []
    for base in [bases] if isinstance(bases, str) else bases:
        found += [(path.parent / base).resolve(), *_bases(path.parent / base)]
    return found


def test_presets_are_deltas_of_their_bases():
    """Every preset is composed with ``_base_`` and restates none of its bases' values (the bases merged as
    the loader merges them)."""
    for name in preset_names():
        own = yaml_load((REPO / name).read_text())
        assert BASE_KEY in own, f"{name} has no {BASE_KEY}"
        bases = own.pop(BASE_KEY)
        merged_base: dict = {}
        for base in [bases] if isinstance(bases, str) else bases:
            merged_base = _merge(merged_base, read_preset((REPO / name).parent / base))
        for section, values in own.items():
            inherited = merged_base.get(section)
            if isinstance(values, dict) and isinstance(inherited, dict):
                same = [k for k, v in values.items() if k in inherited and inherited[k] == v]
                assert not same, f"{name} restates {section}.{same} of its base"


BASES = REPO / "configs" / "_base_"


def test_every_preset_is_composed_of_a_data_set_and_the_runtime():
    """mmseg's composition: each preset's data set is a ``_base_/datasets/*.yaml`` (no preset names a data set
    folder itself) and its runtime ``_base_/default_runtime.yaml`` (directly or through its bases)."""
    for name in preset_names():
        bases = _bases(REPO / name)
        assert (BASES / "default_runtime.yaml").resolve() in bases, f"{name}: no _base_/default_runtime.yaml"
        assert any(b.parent == (BASES / "datasets").resolve() for b in bases), f"{name}: no _base_/datasets/*.yaml"
        assert "root" not in yaml_load((REPO / name).read_text()).get("data", {}), f"{name} states data.root"


def test_the_base_parts_are_valid_and_not_presets():
    """``configs/_base_/*`` are parts (no ``method``, not in the fixture): each is a valid partial config."""
    parts = sorted(BASES.rglob("*.yaml"))
    assert {p.parent.name for p in parts} >= {"_base_", "datasets", "schedules", "models"}
    for part in parts:
        assert "method" not in read_preset(part), part
        load_config(part)  # validated against the schema, its own bases merged
    assert not any("_base_" in n for n in RECORDED)


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_bases_merge_key_by_key_in_order_before_the_overrides(tmp_path):
    _write(
        tmp_path / "base/a.yaml",
        "run: {dir: a, seed: 3}\ndata: {crop_size: 64, num_workers: 1}\n"
        "model: {backbone_kwargs: {depth: 2, img_size: 64}}\nloss: {weights: {cls: 1.0, seg: 0.5}}\n",
    )
    _write(tmp_path / "base/b.yaml", "data: {crop_size: 96}\noptions: {x: 1}\n")
    child = _write(
        tmp_path / "child/c.yaml",
        "_base_: [../base/a.yaml, ../base/b.yaml]\nrun: {dir: c}\n"
        "model: {backbone_kwargs: {depth: 4}}\nloss: {weights: {cls: 2.0}}\n",
    )
    merged = read_preset(child)
    assert BASE_KEY not in merged
    assert merged["run"] == {"dir": "c", "seed": 3}  # nested mappings merge key by key
    assert merged["data"] == {"crop_size": 96, "num_workers": 1}  # the later base wins
    assert merged["model"]["backbone_kwargs"] == {"depth": 4, "img_size": 64}
    assert merged["loss"]["weights"] == {"cls": 2.0}  # the loss terms are stated whole, never merged
    cfg = load_config(child, ["data.crop_size=32", "run.seed=5"])
    assert (cfg.data.crop_size, cfg.run.seed, cfg.run.dir, cfg.data.num_workers) == (32, 5, "c", 1)


def test_a_later_base_with_delete_replaces_what_the_earlier_bases_built(tmp_path):
    """``_delete_`` in a base: merged over the bases listed before it, it replaces their mapping (a COCO text
    base after a VOC one), also through a base of a base; the file's own keys still merge over it."""
    _write(tmp_path / "voc.yaml", "options: {syn: {bird: avian, tv: screen}, templates: [a]}\n")
    _write(tmp_path / "coco.yaml", "options: {syn: {_delete_: true, bird: avian, couch: sofa}}\n")
    child = _write(tmp_path / "c.yaml", "_base_: [voc.yaml, coco.yaml]\n")
    assert read_preset(child)["options"] == {"syn": {"bird": "avian", "couch": "sofa"}, "templates": ["a"]}
    _write(tmp_path / "via.yaml", "_base_: coco.yaml\n")
    deeper = _write(tmp_path / "d.yaml", "_base_: [voc.yaml, via.yaml]\noptions: {syn: {x: y}}\n")
    assert read_preset(deeper)["options"]["syn"] == {"bird": "avian", "couch": "sofa", "x": "y"}
    plain = _write(tmp_path / "p.yaml", "_base_: [coco.yaml, voc.yaml]\n")  # the later base merges key by key
    assert read_preset(plain)["options"]["syn"] == {"bird": "avian", "couch": "sofa", "tv": "screen"}


def test_delete_replaces_an_inherited_mapping(tmp_path):
    _write(tmp_path / "a.yaml", "model: {backbone_kwargs: {depth: 2, img_size: 64}}\noptions: {x: 1, y: 2}\n")
    child = _write(
        tmp_path / "c.yaml",
        "_base_: a.yaml\nmodel: {backbone_kwargs: {_delete_: true, width: 8}}\noptions: {_delete_: true}\n",
    )
    merged = read_preset(child)
    assert merged["model"]["backbone_kwargs"] == {"width": 8}
    assert merged["options"] == {}
    alone = _write(tmp_path / "alone.yaml", "model: {backbone_kwargs: {_delete_: true, width: 8}}\n")  # no base
    assert read_preset(alone)["model"] == {"backbone_kwargs": {"width": 8}}
    bad = _write(tmp_path / "bad.yaml", "_base_: a.yaml\noptions: {_delete_: yes please}\n")
    with pytest.raises(ConfigError, match=rf"^{bad}: 'options._delete_' must be true or false"):
        load_config(bad)


def test_a_base_resolves_from_the_presets_folder_not_the_working_directory(tmp_path, monkeypatch):
    _write(tmp_path / "presets/a.yaml", "train: {lr: 0.5}\n")
    child = _write(tmp_path / "presets/sub/c.yaml", "_base_: ../a.yaml\n")
    monkeypatch.chdir(REPO)
    assert load_config(child).train.lr == 0.5


def test_a_missing_base_a_cycle_and_a_bad_base_are_named(tmp_path):
    child = _write(tmp_path / "c.yaml", "_base_: nope.yaml\n")
    with pytest.raises(ConfigError, match=rf"^{child}: _base_ 'nope.yaml' not found"):
        load_config(child)
    _write(tmp_path / "x.yaml", "_base_: y.yaml\n")
    _write(tmp_path / "y.yaml", "_base_: [z.yaml]\n")
    _write(tmp_path / "z.yaml", "_base_: x.yaml\n")
    with pytest.raises(ConfigError, match=r"z.yaml: _base_ cycle: .*x.yaml -> .*y.yaml -> .*z.yaml -> .*x.yaml$"):
        load_config(tmp_path / "x.yaml")
    bad = _write(tmp_path / "bad.yaml", "_base_: {a: 1}\n")
    with pytest.raises(ConfigError, match=rf"^{bad}: _base_ must be a path or a list of paths"):
        load_config(bad)


def test_a_diamond_is_not_a_cycle(tmp_path):
    _write(tmp_path / "root.yaml", "train: {lr: 0.5, batch_size: 2}\n")
    _write(tmp_path / "left.yaml", "_base_: root.yaml\ntrain: {batch_size: 3}\n")
    _write(tmp_path / "right.yaml", "_base_: root.yaml\n")
    top = _write(tmp_path / "top.yaml", "_base_: [left.yaml, right.yaml]\n")
    cfg = load_config(top)
    assert (cfg.train.lr, cfg.train.batch_size) == (0.5, 2)  # right.yaml (later) restates root's batch_size


def test_a_wrong_key_in_a_base_is_blamed_on_the_base(tmp_path, capsys):
    base = _write(tmp_path / "a.yaml", "train: {max_iter: 3}\n")
    child = _write(tmp_path / "c.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match=rf"^{base}: unknown config key 'train.max_iter'"):
        load_config(child)
    assert main(["config", "show", str(child)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {base}: unknown config key 'train.max_iter'")


def test_config_show_prints_the_merged_preset_with_the_overrides(capsys):
    preset = REPO / "configs/seco/coco.yaml"
    assert main(["config", "show", str(preset), "train.max_iters=5"]) == 0
    shown = yaml_load(capsys.readouterr().out)
    assert BASE_KEY not in shown
    assert shown == load_config(preset, ["train.max_iters=5"]).to_dict()
    assert shown["train"]["max_iters"] == 5
    assert shown["options"]["quirk_patch_seed"] is True  # from configs/seco/voc.yaml
    assert shown["cam"]["high_thre"] == 0.65  # coco.yaml's own


def test_a_run_config_is_the_full_merged_config(tmp_path, synth_root, one_thread):
    """A run trained from a delta preset stores every setting: it reloads after the presets are gone."""
    presets = tmp_path / "presets"
    shutil.copytree(REPO / "configs/_base_", tmp_path / "_base_")
    _write(presets / "base.yaml", (REPO / "configs/cam/synthetic_cpu.yaml").read_text())
    child = _write(presets / "child.yaml", "_base_: base.yaml\ntrain: {lr: 2.0e-4}\n")
    run = tmp_path / "run"
    over = tiny_overrides(synth_root, run, **{"train.max_iters": 2, "train.eval_iters": 2, "train.ckpt_iters": 2})
    assert main(["train", str(child), *over, "--quiet", "--skip-check"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert BASE_KEY not in saved
    assert saved["train"]["lr"] == 2.0e-4 and saved["model"]["backbone"] == "vit_tiny_patch16_224"  # child, base
    expected = resolve_paths(load_config(child, over))  # the run stores absolute input paths
    (presets / "base.yaml").unlink()
    (presets / "child.yaml").unlink()
    assert load_config(run / "config.yaml") == expected


def _scoped(text: str) -> str:
    """A preset's text with its ``../`` bases named by their scoped names (what a user copying it writes)."""
    return text.replace("../_base_/", "wsss::_base_/").replace("../cam/", "wsss::cam/")


def test_a_copied_preset_keeps_its_bases_by_their_scoped_names(tmp_path, monkeypatch):
    """A preset copied out of configs/ lost its bases (``_base_ '../_base_/datasets/synthetic.yaml' not
    found``). Named ``wsss::...`` they resolve from any folder, and the copy loads to the preset's config; the
    relative name not found says which scoped name to use."""
    original = REPO / "configs/cam/synthetic_cpu.yaml"
    copied = _write(tmp_path / "mine/cam.yaml", original.read_text())
    with pytest.raises(
        ConfigError,
        match=r"_base_ '\.\./_base_/datasets/synthetic\.yaml' not found .*the shipped "
        r"config of that name is wsss::_base_/datasets/synthetic\.yaml: name it so",
    ):
        load_config(copied)
    _write(copied, _scoped(original.read_text()))
    assert "../" not in copied.read_text() and "wsss::_base_/cpu_runtime.yaml" in copied.read_text()
    monkeypatch.chdir(tmp_path)  # not the checkout: the scoped names resolve from anywhere
    assert load_config(copied) == load_config(original)
    derived = _write(tmp_path / "mine/seco.yaml", "_base_: wsss::seco/voc.yaml\ntrain: {lr: 1.0e-4}\n")
    assert load_config(derived) == load_config(REPO / "configs/seco/voc.yaml", ["train.lr=1.0e-4"])
    assert load_config("wsss::cam/synthetic_cpu.yaml") == load_config(original)  # a config argument may be one too


def test_a_scoped_name_that_is_not_a_shipped_config_is_named(tmp_path):
    child = _write(tmp_path / "c.yaml", "_base_: wsss::cam/synthetic_cpu.yml\n")
    with pytest.raises(
        ConfigError,
        match=rf"^{child}: _base_ 'wsss::cam/synthetic_cpu.yml': not a shipped config "
        r"\(.*\) \(did you mean wsss::cam/synthetic_cpu.yaml\?\)$",
    ):
        load_config(child)
    _write(child, "_base_: wsss::../pyproject.toml\n")
    with pytest.raises(ConfigError, match=r"_base_ 'wsss::../pyproject.toml': a wsss:: name is a path inside"):
        load_config(child)
    _write(child, "_base_: voc.yaml\n")  # several shipped presets have that name: each is offered
    with pytest.raises(ConfigError, match=r"shipped configs of that name: .*wsss::cam/voc.yaml, .*wsss::seco/voc"):
        load_config(child)


def test_a_scoped_name_without_the_shipped_configs_says_how_to_get_them(tmp_path, monkeypatch):
    """An install without the shipped configs (neither a wheel's wsss/configs nor a checkout's configs/): a scoped
    name is one line saying where they come from, and a relative base not found offers no scoped name."""
    import wsss.core.config.presets as config

    monkeypatch.setattr(config, "shipped_configs", lambda: tmp_path / "site-packages" / "configs")
    child = _write(tmp_path / "c.yaml", "_base_: wsss::cam/synthetic_cpu.yaml\n")
    with pytest.raises(
        ConfigError,
        match=r"the shipped configs are not installed .*: wsss:: names resolve in a "
        r"wheel of wsss \(its wsss/configs\) or a checkout \(configs/ beside src/\); reinstall wsss, or "
        r"name a file instead$",
    ):
        load_config(child)
    _write(child, "_base_: ../_base_/datasets/synthetic.yaml\n")
    with pytest.raises(ConfigError, match=r"_base_ '\.\./_base_/datasets/synthetic\.yaml' not found \([^)]*\)$"):
        load_config(child)


@pytest.mark.parametrize("name", preset_names(), ids=lambda n: n.removeprefix("configs/").removesuffix(".yaml"))
def test_config_show_flat_is_the_preset_in_one_file(name, tmp_path, capsys):
    """``wsss config show PRESET --flat``: the preset with its bases merged in, no ``_base_`` and none of the
    schema's defaults it does not state; the file alone loads to the preset's config (every shipped preset:
    each takes milliseconds)."""
    assert main(["config", "show", str(REPO / name), "--flat"]) == 0
    flat = _write(tmp_path / "elsewhere/flat.yaml", capsys.readouterr().out)
    assert BASE_KEY not in yaml_load(flat.read_text())
    assert yaml_load(flat.read_text()) == read_preset(REPO / name)
    assert load_config(flat) == load_config(REPO / name)


def test_config_show_writes_to_out_atomically_and_never_over_a_file_unasked(tmp_path, capsys):
    preset = REPO / "configs/seco/coco.yaml"
    out = tmp_path / "flat.yaml"
    assert main(["config", "show", str(preset), "--flat", "--out", str(out), "train.max_iters=5"]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    assert load_config(out) == load_config(preset, ["train.max_iters=5"])
    assert "train.max_iters=5" in out.read_text().splitlines()[0]  # the header comment names what it came from
    assert [p.name for p in tmp_path.iterdir()] == ["flat.yaml"]  # no temporary file left
    assert main(["config", "show", str(preset), "--out", str(out)]) == 1
    assert capsys.readouterr().err == f"error: {out}: exists; pass --overwrite to replace it, or choose another --out\n"
    assert load_config(out).train.max_iters == 5  # untouched
    assert main(["config", "show", str(preset), "--out", str(out), "--overwrite"]) == 0
    assert yaml_load(out.read_text()) == load_config(preset).to_dict()  # without --flat: every key
    assert main(["config", "show", str(out), "--flat", "--out", str(out), "--overwrite"]) == 1
    assert "--out is the preset itself" in capsys.readouterr().err


def test_a_written_config_reads_back_a_string_that_looks_like_a_number(tmp_path):
    """The loader reads ``1e5`` as a number (YAML 1.2); what wsss writes quotes such a string, so a run's
    config.yaml (and ``config show``) loads back as it was."""
    cfg = load_config(None, ["run.dir='1e5'", "options={tag: '6E-5', n: 1e5}"])
    assert yaml_load(dump_config(cfg))["run"]["dir"] == "1e5"
    assert yaml_load(dump_config(cfg))["options"] == {"tag": "6E-5", "n": 1e5}


def test_an_error_quotes_no_text_of_the_file_a_base_names(tmp_path, capsys):
    """Security: ``_base_: /etc/shadow`` printed the file's first line inside the error. A base must be
    a YAML preset by its name, and no YAML error quotes the text it failed on (where it is, line and column)."""
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$supersecret:19000:0:99999:7:::\n")
    preset = tmp_path / "preset.yaml"
    preset.write_text(f"_base_: {secret}\n")
    with pytest.raises(ConfigError) as e:
        load_config(preset)
    assert str(e.value) == f"{preset}: _base_ '{secret}' is not a YAML preset (.yaml or .yml)"
    named_yaml = tmp_path / "secret.yaml"
    named_yaml.write_text("password: hunter2: x\n")
    preset.write_text(f"_base_: {named_yaml}\n")
    assert main(["config", "show", str(preset)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {named_yaml}: invalid YAML (mapping values are not allowed here at line 1, column 18)\n"
    named_yaml.write_bytes(b"\xff\xfesecret\n")  # not text
    with pytest.raises(ConfigError, match=r"secret.yaml: cannot read the config \(not UTF-8 text\)$"):
        load_config(preset)
