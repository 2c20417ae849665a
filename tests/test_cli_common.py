"""One way to pass each option: every command that trains or reads a run takes config overrides as
``key=value`` words, wherever they stand among the flags, and no other spelling (the ``--set`` alias is gone); a
flag several commands share is one flag with one help text; a typed flag that sets a config key is shorthand for
that key's word; the scripts of experiments/, bench/ and dev/ build their parser with
``wsss.cli_common.script_parser``."""

from __future__ import annotations

import argparse
import re

import pytest

from conftest import REPO
from wsss.cli import build_parser, main, override_words, parse_args
from wsss.cli_common import QUIET_HELP, Names, script_parser
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
    ("route",): (["route", "DATA"], ["--out", "OUT", "--quiet"]),  # its words go to both trainings (pipelines/route.py)
}


def test_every_command_taking_overrides_is_tested():
    taking = {path for path, p in _commands(build_parser()) if any(a.dest == "overrides" for a in p._actions)}
    assert taking == set(TAKE_OVERRIDES) | set(READ_RUN)


# the commands that read a run: (words, flags); each takes the same key=value words, merged over the run's config
READ_RUN = {
    ("cam",): (["cam", "RUN"], ["--split", "val", "--quiet"]),
    ("pseudo",): (["pseudo", "RUN"], ["--split", "train", "--refine", "crf"]),
    ("predict",): (["predict", "RUN"], ["--split", "val", "--crf"]),
    ("sweep-bkg",): (["sweep-bkg", "RUN"], ["--split", "val"]),
    ("tag",): (["tag", "RUN"], ["--split", "train"]),
    ("viz",): (["viz", "RUN"], ["--ids", "a,b"]),
    ("report",): (["report", "RUN"], ["--split", "val"]),
    ("export", "voc-test"): (["export", "voc-test", "RUN"], ["--split", "test"]),
    ("export", "onnx"): (["export", "onnx", "RUN"], ["--out", "model.onnx"]),
}


def _spellings(words: list[str], flags: list[str]) -> list[list[str]]:
    return [
        [*words, *flags, *OVERRIDES],  # the one syntax: key=value words, after the flags
        [*words, *OVERRIDES, *flags],  # ... before them
        [*words, OVERRIDES[0], *flags, *OVERRIDES[1:]],  # ... around them
    ]


@pytest.mark.parametrize("command", list(TAKE_OVERRIDES), ids=" ".join)
def test_the_override_words_give_the_same_config_wherever_they_stand(command):
    parsed = [parse_args(argv) for argv in _spellings(*TAKE_OVERRIDES[command])]
    assert all(a.overrides == OVERRIDES for a in parsed), [a.overrides for a in parsed]
    configs = {dump_config(load_config(getattr(a, "config", CONFIG), a.overrides)) for a in parsed}
    assert len(configs) == 1 and "max_iters: 7" in configs.pop()


@pytest.mark.parametrize("command", list(READ_RUN), ids=" ".join)
def test_every_command_that_reads_a_run_takes_the_words(command):
    """cam, pseudo, predict, sweep-bkg, tag, viz, report and export took no general override before."""
    parsed = [parse_args(argv) for argv in _spellings(*READ_RUN[command])]
    assert all(override_words(a) == OVERRIDES for a in parsed), [override_words(a) for a in parsed]


@pytest.mark.parametrize("command", [*TAKE_OVERRIDES, *READ_RUN], ids=" ".join)
def test_the_words_may_stand_before_the_positional_arguments(command):
    """``wsss export onnx infer.flip_fuse=max RUN`` took the word for the run ("no such run directory")."""
    words, flags = {**TAKE_OVERRIDES, **READ_RUN}[command]
    n = len(command)
    want = vars(parse_args([*words, *flags, *OVERRIDES]))
    for argv in (
        [*words[:n], *OVERRIDES, *words[n:], *flags],
        [*words[:n], OVERRIDES[0], *words[n:], *flags, *OVERRIDES[1:]],
    ):
        assert vars(parse_args(argv)) == want, argv


def test_a_word_with_an_equals_sign_stays_where_it_is_no_override(tmp_path, monkeypatch):
    """A flag's value (``--out a=b.onnx``), a path (``runs/lr=0.1``) or an existing folder of that name, and the
    words after ``--`` are no overrides."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lr=0.1").mkdir()
    a = parse_args(["export", "onnx", "lr=0.1", "--out", "a=b.onnx", "infer.flip_fuse=max"])
    assert (a.run, a.out, a.overrides) == ("lr=0.1", "a=b.onnx", ["infer.flip_fuse=max"])
    a = parse_args(["export", "onnx", "runs/lr=0.2", "--out", "m.onnx"])
    assert (a.run, a.overrides) == ("runs/lr=0.2", [])
    a = parse_args(["export", "onnx", "--out", "m.onnx", "--", "k=v"])
    assert (a.run, a.overrides) == ("k=v", [])


@pytest.mark.parametrize("command", [*TAKE_OVERRIDES, *READ_RUN], ids=" ".join)
def test_the_set_alias_is_gone(command, capsys):
    words, flags = {**TAKE_OVERRIDES, **READ_RUN}[command]
    with pytest.raises(SystemExit):
        parse_args([*words, *flags, "--set", *OVERRIDES])
    assert "unrecognized arguments: --set" in capsys.readouterr().err


def test_the_help_shows_one_override_syntax(capsys):
    for command, (words, _) in {**TAKE_OVERRIDES, **READ_RUN}.items():
        with pytest.raises(SystemExit):
            main([*words[: len(command)], "--help"])
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
    # --data-root of a command that reads a run: the run's dataset by default (eval's, which reads no run, its own)
    helps = {a.help for path, p in commands for a in _options(p, "--data-root") if path != ("eval",)}
    assert len(helps) == 1, helps
    # --workers: N processes sharing a per-id command's ids, or a dataset converter's pool (and synth's)
    helps = {a.help for _, p in commands for a in _options(p, "--workers")}
    assert len(helps) == 3, helps


# a list option (nargs "+" or "*") of each command, a value of it, and the command's other words
LISTS = {
    "route --images": ["route", "DATA", "--out", "OUT", "--images", "new/"],
    "predict --images": ["predict", "RUN", "--out", "OUT", "--images", "a.jpg", "photos/"],
    "cam --images": ["cam", "RUN", "--out", "OUT", "--images", "photos/"],
    "predict --ensemble": ["predict", "RUN", "--split", "val", "--ensemble", "R2", "R3"],
    "sweep-bkg --pairs": ["sweep-bkg", "RUN", "--pairs", "0.4/0.2"],
}


@pytest.mark.parametrize("case", list(LISTS))
def test_a_key_value_word_after_a_list_option_is_an_override_not_its_value(case):
    """`wsss route photos --out R --images new/ run.seed=1` took run.seed=1 for a photo (a route of seed 0 that failed
    at its last step): a list option gives every KEY=VALUE word back to the overrides, in the order they stand."""
    argv = LISTS[case]
    flag = argv.index(case.split()[1])
    values = argv[flag + 1 :]
    a = parse_args([*argv[:2], OVERRIDES[0], *argv[2:], *OVERRIDES[1:], "--quiet"])
    assert override_words(a) == OVERRIDES
    got = getattr(a, case.split()[1].lstrip("-"))
    assert [str(v) for v in got] == values or got == [(0.4, 0.2)]
    later = parse_args([*argv, "run.seed=5", *argv[flag:], "run.seed=6"])  # the same key twice: in order
    assert override_words(later) == ["run.seed=5", "run.seed=6"]


def test_every_list_option_gives_the_words_back_and_keeps_one_value(capsys):
    lists = [
        (path, a)
        for path, p in _commands(build_parser())
        for a in p._actions
        if a.option_strings and a.nargs in ("+", "*") and not a.choices
    ]
    assert {" ".join(path) + " " + a.option_strings[0] for path, a in lists} >= set(LISTS)
    assert all(isinstance(a, Names) for _, a in lists)
    with pytest.raises(SystemExit):
        parse_args(["predict", "RUN", "--out", "OUT", "--images", "run.seed=1"])
    assert "argument --images: expected at least one DIR_OR_FILE before the KEY=VALUE words (run.seed=1)" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit):  # a command without overrides: refused, not a split's name
        parse_args(["prepare", "coco", "--coco", "C", "--out", "O", "--splits", "train", "run.seed=1"])
    assert "unrecognized arguments: run.seed=1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["cam", "R", "--split", "val", "--scales", "1,0.5"], ["infer.cam_scales=[1.0, 0.5]"]),
        (["cam", "R", "--split", "val", "--bkg-thre", "0.3"], ["cam.bkg_thre=0.3"]),
        (["cam", "R", "--split", "val", "--device", "cuda"], ['run.device="cuda"']),
        (["predict", "R", "--split", "val", "--scales", "1,1.5"], ["infer.scales=[1.0, 1.5]"]),
        (["predict", "R", "--split", "val", "--crf", "--crf-workers", "3"], ["infer.crf_workers=3"]),
        (["pseudo", "R", "--split", "train", "--crf-workers", "1"], ["infer.crf_workers=1"]),
        (["pseudo", "R", "--split", "train", "--levels", "0.5/0.2"], ["cam.high_thre=0.5", "cam.low_thre=0.2"]),
    ],
)
def test_a_typed_flag_is_shorthand_for_its_word(argv, words):
    """A typed flag is the word of its key, after the positional words (a flag wins over a word of the
    same key), and the word gives the config the value the flag means."""
    assert override_words(parse_args(argv)) == words
    assert override_words(parse_args([*argv, "run.seed=4"])) == ["run.seed=4", *words]
    assert override_words(parse_args(argv[:4])) == []  # not given: no word, the run's own value
    cfg, plain = load_config(CONFIG, words), load_config(CONFIG)
    for word in words:
        section, name = word.split("=", 1)[0].split(".")
        assert getattr(getattr(cfg, section), name) != getattr(getattr(plain, section), name)


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
    ):
        a = p.parse_args(argv)
        assert (a.config, a.data_root, a.threads, a.json, a.overrides) == ("C", "D", 2, None, OVERRIDES)
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
