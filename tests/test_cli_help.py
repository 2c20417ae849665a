"""The command line's help: every option has a help text, `wsss --version`, the labels file format in
`prepare folder --help`, and one name per option across `prepare` (old names kept as aliases)."""

from __future__ import annotations

import argparse

import pytest

import wsss
from wsss.cli import build_parser, main


def _parsers(p: argparse.ArgumentParser, path: str = "wsss"):
    yield path, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_option_has_help():
    missing = [
        f"{path} {a.option_strings[0] if a.option_strings else a.dest}"
        for path, p in _parsers(build_parser())
        for a in p._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and not a.help
    ]
    assert missing == []


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"wsss {wsss.__version__}"


def test_prepare_folder_help_states_the_labels_format(capsys):
    with pytest.raises(SystemExit):
        main(["prepare", "folder", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "'image,labels'" in out and "separated by ';'" in out and "background first" in out


def test_prepare_option_names_are_shared():
    p = build_parser()
    a = p.parse_args(["prepare", "voc", "--voc", "V", "--out", "O", "--image-mode", "copy", "--label-source", "xml"])
    assert (a.image_mode, a.label_source) == ("copy", "xml")
    for old in (["--images", "copy"], ["--labels", "xml"]):  # the pre-release names are gone
        with pytest.raises(SystemExit):
            p.parse_args(["prepare", "voc", "--voc", "V", "--out", "O", *old])
    a = p.parse_args(["prepare", "coco", "--coco", "C", "--out", "O", "--image-mode", "symlink"])
    assert a.image_mode == "symlink"
    a = p.parse_args(
        [
            "prepare",
            "folder",
            "--images",
            "I",
            "--labels",
            "L.csv",
            "--classes",
            "c",
            "--out",
            "O",
            "--image-mode",
            "copy",
        ]
    )
    assert a.image_mode == "copy" and a.images == "I" and a.labels == "L.csv"
