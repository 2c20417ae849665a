"""The route's modes (pipelines/modes.py; docs/adding-a-method.md#adding-a-route-mode): the files given choose one
registered mode, with its reason; one contract over every registered mode (it applies to its files alone, its presets
load on the CPU and the GPU alike, it plans its steps with nothing run); a mode written here registers and plans with
no edit elsewhere, and is gone after."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from wsss.core.config import load_config
from wsss.core.errors import UsageError
from wsss.pipelines import route as route_module  # noqa: F401 - the built-in modes register on import
from wsss.pipelines.modes import CLIP_KEY, DINOV2_KEY, MODES, RouteMode, choose_mode, register_mode, weight_words
from wsss.pipelines.route import Route
from wsss.pipelines.route_values import DataFacts, RouteOptions
from wsss.pipelines.steps import Command, Step

FAKE_FILES = {CLIP_KEY: "c.pt", DINOV2_KEY: "d.pth"}  # a mode's planning names its files, reads none


def test_the_files_choose_the_mode_and_say_why():
    both, clip, none = choose_mode(FAKE_FILES), choose_mode({CLIP_KEY: "c.pt"}), choose_mode({})
    assert (both.value, clip.value, none.value) == ("weclip_plus", "clip_es", "none")
    for mode in (both, clip):  # a paper's figure, not a measurement here: the line says so
        assert "not a measurement on real photos here" in mode.reason
    assert "ExCEL" in clip.reason and "descriptions" in clip.reason
    with pytest.raises(UsageError, match="--dinov2 d.pth: WeCLIP\\+ needs a CLIP file too"):
        choose_mode({DINOV2_KEY: "d.pth"})


def test_the_weight_files_are_config_words():
    words = ["train.lr=1", "model.pretrained=a.pt", "options.dino_weights=null", "model.pretrained=b.pt"]
    assert weight_words(words) == {"model.pretrained": "b.pt"}
    assert weight_words([*words, "options.dino_weights=d"])["options.dino_weights"] == "d"


def _plan(root: Path, out: Path, mode: type[RouteMode], gpu: bool = False) -> tuple[Route, list[Step]]:
    """The route of ``mode``'s files on the dataset ``root``, planned (nothing run)."""
    words = [f"clip.{k}={FAKE_FILES.get(k, 'w.pt')}" for k in sorted(mode.files)]
    if gpu:
        words.append("run.device=cuda")
    route = Route(RouteOptions(data=str(root), out=str(out), plan_only=True, overrides=words), say=lambda _: None)
    return route, list(route.plan().steps)


def check_mode_contract(mode: type[RouteMode], root: Path, out: Path) -> None:
    """What every route mode promises the route."""
    assert MODES[mode.name] is mode and mode.title and mode.reason
    files = {k: FAKE_FILES.get(k, "w.pt") for k in mode.files}
    chosen = choose_mode(files)  # it applies to its files, and no other mode does
    assert chosen.value == mode.name and chosen.reason == mode.applies(files)
    assert set(mode.cpu_presets) == set(mode.gpu_presets)
    for preset in {*mode.cpu_presets.values(), *mode.gpu_presets.values()}:
        load_config(preset)  # each preset is there and fits the schema
    assert mode.refuse(False, 0) is None  # the plain route's options it takes
    for gpu in (False, True):
        route, steps = _plan(root, out, mode, gpu=gpu)
        titles = [s.title for s in steps]
        assert titles[0] == "check" and len(titles) > 1 and len(set(titles)) == len(titles)
        assert route.choices["mode"].value == mode.name
        assert route.choices["presets"].value == ("gpu" if gpu else "cpu")
        final = str(out.resolve() / mode.final_run)
        assert any(final in s.command for s in steps), f"no step of {mode.name} makes its masks' run {final}"


@pytest.mark.parametrize("name", sorted(MODES))
def test_every_registered_mode_keeps_the_contract(name, synth_root, tmp_path):
    check_mode_contract(MODES[name], synth_root, tmp_path / "r")


class ToyMode(RouteMode):
    """A mode of one weight file of its own: one step, its masks in OUT/toy."""

    name, title = "toy", "the toy"
    files = frozenset({"options.toy_weights"})
    reason = "a toy file: the toy's masks"
    cpu_presets = gpu_presets = {"seg": "wsss::deeplab/real_cpu.yaml"}
    final_run = "toy"

    def steps(self, route: Route, root: Path, out: Path, facts: DataFacts) -> list[Step]:
        route.choices["crf_workers"] = route_module.Choice(None, "the toy has no CRF")
        predict = Command(("predict",), (out / self.final_run,), (("--split", "train"),))
        return [Step("toy", (predict,), lambda: None, outputs=(out / self.final_run,))]


@contextlib.contextmanager
def registered(mode: type[RouteMode]) -> Iterator[type[RouteMode]]:
    """``mode`` registered for the block's length, never after it (no global state left to later tests)."""
    register_mode(mode)
    try:
        yield mode
    finally:
        MODES.pop(mode.name, None)


@pytest.fixture
def toy() -> Iterator[type[RouteMode]]:
    with registered(ToyMode) as mode:
        yield mode


def test_a_mode_written_here_registers_and_plans_with_no_edit_elsewhere(toy, synth_root, tmp_path):
    said: list[str] = []
    opts = RouteOptions(
        data=str(synth_root), out=str(tmp_path / "r"), plan_only=True, overrides=["clip.options.toy_weights=t.pt"]
    )
    assert Route(opts, say=said.append).run() is None
    assert "route: mode: toy (a toy file: the toy's masks)" in said
    assert any(line.startswith("[2/2] toy: wsss predict ") for line in said)
    check_mode_contract(toy, synth_root, tmp_path / "r")
    with pytest.raises(ValueError, match="route mode 'toy' is already registered"):
        register_mode(type("Other", (ToyMode,), {}))


def test_a_mode_registered_for_a_test_is_gone_after_it():
    words = ["options.toy_weights=t.pt"]
    with registered(ToyMode):
        assert "toy" in MODES and weight_words(words) == {"options.toy_weights": "t.pt"}
    assert "toy" not in MODES and weight_words(words) == {}
