"""The route's steps as typed values (pipelines/steps.py: ``Step``, ``Command``, ``Setting``): every step of every
mode rendered three ways from one object, and the three agree. The printed command, read by the real ``wsss``
parser, gives what the in-process call receives; a per-photo step's argv for the other processes is the printed one
plus where it runs; a training's printed command loads the config that the route trains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from wsss.cli import parse_args
from wsss.core.config import load_config, results_config
from wsss.pipelines import gpus, route_calls, route_labels
from wsss.pipelines.modes import MODES
from wsss.pipelines.route import Route
from wsss.pipelines.route_values import DataFacts, RouteOptions
from wsss.pipelines.steps import Command, Setting

JOBS = {"cam": "cams", "pseudo": "pseudo_labels", "predict": "predict_split"}  # command -> the call in route_calls.py


def test_a_command_renders_its_typed_values_as_a_user_types_them():
    command = Command(
        ("pseudo",),
        (Path("/r/cls"),),
        (
            ("--split", "train"),
            ("--refine", "par"),
            ("--levels", (0.4, 0.4)),
            ("--data-root", None),
            ("--crf", True),
            ("--labelled-only", False),
        ),
        (Setting("train.epochs", None), Setting("data.root", Path("/d")), "cls.x=1"),
    )
    assert (
        command.text() == "wsss pseudo /r/cls --split train --refine par --levels 0.4/0.4 --crf train.epochs=null "
        "data.root=/d cls.x=1"
    )
    assert command.option("--levels") == (0.4, 0.4) and command.setting("data.root") == Path("/d")
    assert command.word_list(leave_out=("data.root",)) == ["train.epochs=null", "cls.x=1"]


def _route(tmp_path: Path, mode: str) -> tuple[Route, list[Any]]:
    """The route of ``mode`` on a folder of photos with new photos and a round (a plan: no file read)."""
    where = tmp_path / "w"
    files = {"none": {}, "clip_es": {"clip": "c.pt"}, "weclip_plus": {"clip": "c.pt", "dinov2": "d.pth"}}[mode]
    opts = RouteOptions(
        data=str(where / "photos"),
        labels=str(where / "l.csv"),
        classes=str(where / "c.txt"),
        out=str(where / "out"),
        images=[str(where / "new.jpg")],
        rounds=0 if files.get("dinov2") else 1,
        device="cpu",
        crf_workers=0,
        progress=False,
        **files,
    )
    ids = [f"p{i}" for i in range(12)]
    facts = DataFacts(
        root=where / "out" / "data",
        class_names=["background", "cat", "dog"],
        train=ids,
        val=["v0"],
        masked_train=[],
        masked_val=[],
        photos_per_class=12.0,
    )
    route = Route(opts, say=lambda _: None)
    return route, list(route._make_plan(facts, 0).steps)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_step_prints_runs_and_shares_the_same_arguments(mode, tmp_path, monkeypatch):
    route, steps = _route(tmp_path, mode)
    calls: list[tuple[str, tuple, dict]] = []
    shared: list[list[str]] = []
    for name in JOBS.values():
        monkeypatch.setattr(route_calls, name, lambda *a, _n=name, **k: calls.append((_n, a, k)) or tmp_path)
    monkeypatch.setattr(gpus, "sharded", lambda n, argv: shared.append(list(argv)) or _nothing())
    trained: list[Any] = []
    monkeypatch.setattr(route_calls, "train_run", lambda cfg, **_: trained.append(cfg))
    # what the masks step does after its jobs reads the dataset and the run, which this test never writes
    monkeypatch.setattr(route_labels, "masks_against_labels", lambda *a, **k: None)
    for step in steps:
        assert step.command == " && ".join(c.text() for c in step.commands) or step.note
        for command in step.commands:
            assert parse_args(command.argv()).command == command.name[0]  # the real parser takes every command
        if step.commands and all(c.name[0] in JOBS and not c.option("--images") for c in step.commands):
            calls.clear(), shared.clear()
            step.work()
            assert len(calls) == len(shared) == len(step.commands)
            for command, call, argv in zip(step.commands, calls, shared, strict=True):
                _agree(command, call, argv)
        elif step.commands and step.commands[0].name == ("train",) and step.title != "weclip":
            trained.clear()
            step.work()
            printed = parse_args(step.command.split()[1:])
            assert len(trained) == 1 and results_config(trained[0]) == results_config(
                load_config(printed.config, printed.overrides)
            )


def _agree(command: Command, call: tuple[str, tuple, dict], argv: list[str]) -> None:
    """The printed command, the argv of the other processes and the in-process call of one per-photo command."""
    name, args, kwargs = call
    assert JOBS[command.name[0]] == name and argv[: len(command.argv())] == command.argv()
    printed, other = parse_args(command.text().split()[1:]), parse_args(argv)
    assert Path(printed.run) == Path(args[0]) and printed.split == args[1]
    assert other.device == kwargs["device"] == "cpu"
    if name == "pseudo_labels":
        assert printed.refine == kwargs["refine"] and printed.levels == args[2]
    if name == "predict_split":
        assert printed.crf == kwargs["crf"] and printed.labelled_only == kwargs["labelled_only"]
        assert printed.data_root == kwargs["root"] and other.crf_workers == kwargs["crf_workers"] == 0


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_prepare_and_new_photos_run_what_they_print(tmp_path, monkeypatch):
    import wsss.data.prepare as prepare
    import wsss.runs.photos as photos

    route, steps = _route(tmp_path, "none")
    got: dict[str, Any] = {}

    class Summary:
        def format(self) -> str:
            return ""

    def prepared(*args: Any, **kwargs: Any) -> Summary:
        got["prepare"] = (args, kwargs)
        Path(args[3]).mkdir(parents=True)  # the dataset it writes
        return Summary()

    monkeypatch.setattr(prepare, "prepare_folder", prepared)
    monkeypatch.setattr(photos, "predict_photos", lambda *a, **k: got.setdefault("photos", (a, k)) and None)
    monkeypatch.setattr(route_calls, "load_step_run", lambda run_dir, **_: run_dir)
    by_title = {s.title: s for s in steps}
    by_title["prepare"].work()
    p = parse_args(by_title["prepare"].command.split()[1:])
    args, kwargs = got["prepare"]
    assert [str(a) for a in args] == [p.images, p.labels, p.classes, p.out] and kwargs["masks"] == p.masks
    by_title["new photos"].work()
    n = parse_args(by_title["new photos"].command.split()[1:])
    (run, images, out), kwargs = got["photos"]
    assert str(run) == n.run and images == n.images and str(out) == n.out and kwargs["crf"] == n.crf
    assert kwargs["overlay"] == n.overlay
