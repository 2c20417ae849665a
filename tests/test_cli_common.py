"""One way to pass each option (issue 57): every command that takes config overrides takes them as ``key=value``
words (``--set key=value ...`` kept as an alias) and gets the same config either way; a flag several commands
share is one flag with one help text; a flag that sets a run's config key goes through the run's config; the
scripts of experiments/, bench/ and dev/ build their parser with ``wsss.cli_common.script_parser``."""

from __future__ import annotations

import argparse
import re
from types import SimpleNamespace

import pytest

from conftest import REPO
from wsss.cli import _apply_settings, build_parser, main, parse_args
from wsss.cli_common import QUIET_HELP, script_parser
from wsss.core.config import dump_config, load_config

OVERRIDES = ["train.max_iters=7", "data.root=/elsewhere", "run.seed=3"]
CONFIG = str(REPO / "configs/cam/synthetic_cpu.yaml")


def _commands(p: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command words, parser) of every command, subcommands included."""
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _commands(sub, (*path, name))


def _options(p: argparse.ArgumentParser, flag: str) -> list[argparse.Action]:
    return [a for a in p._actions if flag in a.option_strings]


# the positional words and the flags of each command that takes overrides; every such command is listed
# (test_every_command_taking_overrides_is_tested)
TAKE_OVERRIDES = {
    ("train",): (["train", CONFIG], ["--skip-check"]),
    ("config", "show"): (["config", "show", CONFIG], []),
    ("import",): (["import", "seco", "CHECKPOINT.pth"], ["--config", CONFIG, "--out", "RUN"]),
    ("route",): (["route", "DATA"], ["--out", "OUT", "--quiet"]),  # its words go to both trainings (runs/route.py)
}


def test_every_command_taking_overrides_is_tested():
    taking = {path for path, p in _commands(build_parser()) if any(a.dest == "overrides" for a in p._actions)}
    assert taking == set(TAKE_OVERRIDES)


@pytest.mark.parametrize("command", list(TAKE_OVERRIDES), ids=" ".join)
def test_both_override_spellings_give_the_same_config(command):
    words, flags = TAKE_OVERRIDES[command]
    spellings = [
        [*words, *flags, *OVERRIDES],  # the one syntax: key=value words, after the flags
        [*words, *OVERRIDES, *flags],  # ... before them
        [*words, OVERRIDES[0], *flags, *OVERRIDES[1:]],  # ... around them
        [*words, OVERRIDES[0], *flags, OVERRIDES[1], "--set", *OVERRIDES[2:]],  # ... and the alias
        [*words, *flags, "--set", *OVERRIDES],  # the alias alone
    ]
    parsed = [parse_args(argv) for argv in spellings]
    assert all(a.overrides == OVERRIDES for a in parsed), [a.overrides for a in parsed]
    assert not any(hasattr(a, "set_overrides") for a in parsed)
    configs = {dump_config(load_config(getattr(a, "config", CONFIG), a.overrides)) for a in parsed}
    assert len(configs) == 1 and "max_iters: 7" in configs.pop()


def test_config_show_prints_the_same_config_for_both_spellings(capsys):
    shown = []
    for argv in (["config", "show", CONFIG, *OVERRIDES], ["config", "show", CONFIG, "--set", *OVERRIDES]):
        assert main(argv) == 0
        shown.append(capsys.readouterr().out)
    assert shown[0] == shown[1] and "max_iters: 7" in shown[0]


def test_the_help_shows_one_override_syntax(capsys):
    for command in TAKE_OVERRIDES:
        with pytest.raises(SystemExit):
            main([*TAKE_OVERRIDES[command][0][: len(command)], "--help"])
        out = capsys.readouterr().out
        assert "KEY=VALUE" in out and "--set" not in out, command


def test_a_word_that_is_no_override_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(["import", "seco", "C.pth", "--config", CONFIG, "--out", "R", "data.root=/d", "--nope"])
    assert "unrecognized arguments: --nope\n" in capsys.readouterr().err


def test_shared_flags_are_one_flag_with_one_help_text():
    parser = build_parser()
    commands = list(_commands(parser))
    quiet = [(path, a) for path, p in commands for a in _options(p, "--quiet")]
    assert len(quiet) >= 9  # train, cam, pseudo, predict, sweep-bkg, tag, viz, prepare voc|coco|folder, data fetch
    assert {(a.help, a.dest, a.default, a.const, type(a)) for _, a in quiet} == {
        (QUIET_HELP, "quiet", False, True, argparse._StoreTrueAction)
    }
    for flag in ("--device", "--image-mode", "--checkpoint"):
        helps = {a.help for _, p in commands for a in _options(p, flag) if a.help != argparse.SUPPRESS}
        assert len(helps) == 1, (flag, helps)
    # --data-root of a command that reads a run: the run's dataset by default (eval's is required, its own)
    helps = {a.help for _, p in commands for a in _options(p, "--data-root") if not a.required}
    assert len(helps) == 1, helps
    # --workers: N processes sharing a per-id command's ids, or a dataset converter's pool (and synth's)
    helps = {a.help for _, p in commands for a in _options(p, "--workers")}
    assert len(helps) == 3, helps


@pytest.mark.parametrize(
    ("argv", "key", "value"),
    [
        (["cam", "R", "--split", "val", "--scales", "1,0.5"], "infer.cam_scales", (1.0, 0.5)),
        (["predict", "R", "--split", "val", "--scales", "1,1.5"], "infer.scales", (1.0, 1.5)),
        (["predict", "R", "--split", "val", "--crf", "--crf-workers", "3"], "infer.crf_workers", 3),
        (["pseudo", "R", "--split", "train", "--crf-workers", "1"], "infer.crf_workers", 1),
    ],
)
def test_a_flag_that_sets_a_config_key_sets_it_in_the_runs_config(argv, key, value):
    run = SimpleNamespace(cfg=load_config(CONFIG))
    section, name = key.split(".")
    before = getattr(getattr(run.cfg, section), name)
    assert _apply_settings(parse_args(argv), run) is run
    assert getattr(getattr(run.cfg, section), name) == value != before
    untouched = SimpleNamespace(cfg=load_config(CONFIG))  # not given: the config's own value
    _apply_settings(parse_args(argv[:4]), untouched)
    assert getattr(getattr(untouched.cfg, section), name) == before


def test_a_script_parser_takes_the_overrides_and_the_shared_flags():
    p = script_parser("What it does.\n\nMore.")
    p.add_argument("config")
    p.add_data_root(required=True)
    p.add_threads(2)
    p.add_json()
    p.add_overrides()
    assert p.description == "What it does."
    for argv in (
        ["C", "--data-root", "D", *OVERRIDES],
        ["C", OVERRIDES[0], "--data-root", "D", *OVERRIDES[1:]],
        ["C", "--data-root", "D", "--set", *OVERRIDES],
    ):
        a = p.parse_args(argv)
        assert (a.config, a.data_root, a.threads, a.json, a.overrides) == ("C", "D", 2, None, OVERRIDES)
        assert not hasattr(a, "set_overrides")
    other = script_parser(None)
    other.add_data_root()
    other.add_threads(1)
    other.add_json()
    helps = [{a.dest: a.help for a in q._actions} for q in (p, other)]
    assert all(helps[0][k] == helps[1][k] for k in ("data_root", "threads", "json"))
    with pytest.raises(SystemExit):
        other.parse_args(["a=1"])  # no overrides here: refused


def test_the_scripts_build_their_parser_with_the_shared_helper():
    scripts = sorted(p for d in ("experiments", "bench", "dev") for p in (REPO / d).glob("*.py"))
    own = [p.relative_to(REPO) for p in scripts if re.search(r"\bArgumentParser\(", p.read_text())]
    shared = [p for p in scripts if "script_parser(" in p.read_text()]
    assert own == [] and len(shared) >= 24
