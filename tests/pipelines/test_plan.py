"""The route's plan (pipelines/route.py: ``plan_route``, ``Plan``): made from the data facts, the options and the
CUDA devices alone, before anything runs; many inputs planned here without a file read or written; the plan saved as
``OUT/plan.json`` before the first step; a choice that needs a measurement is a step whose output the later steps
read, never a rewrite of the plan."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import pytest

from wsss.core.errors import DataError
from wsss.pipelines import route_data, route_values
from wsss.pipelines.route import Route, plan_route
from wsss.pipelines.route_values import DataFacts, Plan, RouteOptions


def _facts(root: Path, masked: int = 0, val: int = 4, train: int = 24) -> DataFacts:
    ids = [f"p{i}" for i in range(train)]
    return DataFacts(
        root=root,
        class_names=["background", "cat", "dog"],
        train=ids,
        val=[f"v{i}" for i in range(val)],
        masked_train=ids[:masked],
        masked_val=[],
        photos_per_class=12.0,
    )


# (kind, masked train photos, weight files, --images, --rounds, CUDA devices); WeCLIP+ takes no --rounds
INPUTS = [
    (kind, masked, files, images, rounds, cuda)
    for kind, masked, files, (images, rounds), cuda in itertools.product(
        ("dataset", "folder"), (0, 20), ("none", "clip", "clip+dinov2"), ((False, 0), (True, 2)), (0, 1, 2)
    )
    if not (files == "clip+dinov2" and rounds)
] + [("folder", 20, "clip+dinov2", True, 0, 2)]


@pytest.mark.parametrize("kind,masked,files,images,rounds,cuda", INPUTS)
def test_a_plan_is_made_from_the_facts_options_and_devices_alone(tmp_path, kind, masked, files, images, rounds, cuda):
    where = tmp_path / "nothing here"  # no data, no weight file, no OUT: the plan reads and writes none
    root = where / ("out/data" if kind == "folder" else "data")
    opts = RouteOptions(
        data=str(where / ("photos" if kind == "folder" else "data")),
        out=str(where / "out"),
        folds=3,
        rounds=rounds,
        labels=str(where / "labels.csv") if kind == "folder" else None,
        classes=str(where / "classes.txt") if kind == "folder" else None,
        masks=str(where / "masks") if kind == "folder" and masked else None,
        clip=str(where / "c.pt") if files != "none" else None,
        dinov2=str(where / "d.pth") if files == "clip+dinov2" else None,
        images=[str(where / "new.jpg")] if images else None,
    )
    plan = plan_route(opts, _facts(root, masked), cuda)
    assert not where.exists()
    titles = [s.title for s in plan.steps]
    assert titles[0] == ("prepare" if kind == "folder" else "check") and len(set(titles)) == len(titles)
    mode = {"none": "none", "clip": "clip_es", "clip+dinov2": "weclip_plus"}[files]
    assert plan.choices["mode"].value == mode
    assert plan.choices["presets"].value == ("gpu" if cuda else "cpu") and plan.processes == max(1, cuda)
    assert ("new photos" in titles) == images and titles[-1] == ("new photos" if images else "report")
    assert sum(t.startswith("round ") for t in titles) == 2 * rounds
    if mode == "weclip_plus":
        assert "weclip" in titles and "seg" not in titles and "crf_workers" in plan.choices
    else:
        stage = plan.choices["stage"].value
        assert stage == ("folds" if masked else "mixed") and ("choice" in titles) == (stage == "folds")
        assert titles.index("seg") > titles.index("choice" if stage == "folds" else "pseudo")
    record = json.loads(json.dumps(plan.to_json()))  # JSON as it is saved
    assert [s["name"] for s in record["steps"]] == titles and record["mode"] == mode
    assert set(record["choices"]) == set(plan.choices)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.processes = 3  # type: ignore[misc]


def test_the_options_a_mode_cannot_take_are_refused(tmp_path):
    with pytest.raises(Exception, match="--rounds: rounds of the DeepLab stage; WeCLIP\\+ has none"):
        plan_route(
            RouteOptions(data=str(tmp_path), out=str(tmp_path / "r"), clip="c.pt", dinov2="d.pth", rounds=1),
            _facts(tmp_path),
        )


def test_the_stage_chosen_by_folds_is_the_choice_steps_output_not_a_rewrite_of_the_plan(tmp_path):
    out = tmp_path / "r"
    route = Route(RouteOptions(data=str(tmp_path), out=str(out), folds=3), say=lambda _: None)
    plan = route._make_plan(_facts(tmp_path, masked=12), 0)
    assert plan.choices["stage"].value == "folds"
    assert [s.title for s in plan.steps].index("choice") + 1 == [s.title for s in plan.steps].index("seg")
    (out / "choice").mkdir(parents=True)
    (out / "choice" / route_values.STAGE_FILE).write_text(json.dumps({"stage": "masks", "reason": "the folds"}))
    assert route._stage() == "masks" and route.choices["stage"].value == "folds" == plan.choices["stage"].value


def test_the_plan_is_saved_before_the_first_step_and_is_what_runs(synth_root, tmp_path, monkeypatch):
    out, said = tmp_path / "r", []

    def first_step(self: Route, root: Path) -> None:
        assert (out / route_values.PLAN_FILE).is_file()  # saved before it
        raise DataError("stopped at the first step")

    monkeypatch.setattr(Route, "_check_data", first_step)
    opts = RouteOptions(data=str(synth_root), out=str(out), progress=False)
    with pytest.raises(DataError, match="stopped at the first step"):
        Route(opts, say=said.append).run()
    saved = json.loads((out / route_values.PLAN_FILE).read_text())
    planned: Plan = plan_route(opts, route_data.data_facts(synth_root.resolve()), 0)
    assert saved == json.loads(json.dumps(planned.to_json()))
    assert said[-1] == f"[1/{len(saved['steps'])}] check: {saved['steps'][0]['command']}"


def _plan_words(tmp_path: Path, train: int, words: tuple[str, ...] = (), cuda: int = 0) -> Plan:
    opts = RouteOptions(data=str(tmp_path / "data"), out=str(tmp_path / "out"), overrides=list(words))
    return plan_route(opts, _facts(tmp_path / "data", train=train), cuda)


def _batches(plan: Plan) -> dict[str, str | None]:
    """Each training step's ``train.batch_size`` word as planned (None: the preset's)."""
    return {
        s.title: next((w for w in s.commands[0].word_list() if w.startswith("train.batch_size=")), None)
        for s in plan.steps
        if s.commands and s.commands[0].name == ("train",)
    }


def test_fewer_train_photos_than_a_presets_batch_lower_the_batch_in_the_plan(tmp_path):
    plan = _plan_words(tmp_path, train=5)
    assert _batches(plan) == {"classifier": "train.batch_size=5", "seg": "train.batch_size=5"}
    assert plan.choices["batch"].value == {"cls": 5, "seg": 5}
    assert "5 train photos, fewer than the presets' batch: cls 8 -> 5, seg 8 -> 5" in plan.choices["batch"].reason
    assert plan.configs["cls"].train.batch_size == plan.configs["seg"].train.batch_size == 5
    assert "batch" in plan.shown()
    assert any(line.startswith("route: batch: cls 5, seg 5 (") for line in plan.choice_lines())  # as --plan prints
    # two CUDA devices: a batch each process can split (4 of 5 photos)
    assert set(_batches(_plan_words(tmp_path, train=5, cuda=2)).values()) == {"train.batch_size=4"}


def test_a_batch_that_fits_or_is_typed_is_left_as_it_is(tmp_path):
    plan = _plan_words(tmp_path, train=24)
    assert "batch" not in plan.choices and set(_batches(plan).values()) == {None}
    typed = _plan_words(tmp_path, train=5, words=("train.batch_size=2",))
    assert "batch" not in typed.choices and typed.configs["cls"].train.batch_size == 2
