"""Every official-quirk switch is set in the paper presets (on) and the *_corrected presets (off), and
is documented in the switch table of its documentation page (docs/methods/)."""

from dataclasses import fields

import pytest

from conftest import REPO
from dev.preset_expansions import preset_names
from dev.restated_options import restated
from wsss.core.config import read_preset, yaml_load
from wsss.methods import get_method_class

METHODS_WITH_CORRECTED = ["seco", "rca", "clip_es"]


def quirks(method: str) -> set[str]:
    return {f.name for f in fields(get_method_class(method).Options) if f.name.startswith("quirk_")}


def preset_options(method: str, name: str) -> dict:
    """The options a preset states, its own or its ``_base_`` presets' (not the Options defaults)."""
    return read_preset(REPO / "configs" / method / f"{name}.yaml").get("options", {})


@pytest.mark.parametrize("method", METHODS_WITH_CORRECTED)
def test_paper_presets_switch_every_quirk_on_and_corrected_presets_off(method):
    every = quirks(method)
    assert every
    for paper in ("voc", "coco"):
        opts = preset_options(method, paper)
        assert {q: opts.get(q) for q in every} == dict.fromkeys(every, True), f"configs/{method}/{paper}.yaml"
    opts = preset_options(method, "voc_corrected")
    assert {q: opts.get(q) for q in every} == dict.fromkeys(every, False), f"configs/{method}/voc_corrected.yaml"


@pytest.mark.parametrize("method", [*METHODS_WITH_CORRECTED, "sccam", "affinitynet"])
def test_every_quirk_switch_is_in_the_docs(method):
    docs = "".join(p.read_text() for p in sorted((REPO / "docs" / "methods").glob("*.md")))
    missing = [q for q in quirks(method) if f"| `options.{q}` |" not in docs]
    assert not missing, f"no page of docs/methods/ has a switch-table row for {missing}"


METHODS_WITH_QUIRK_BASES = [*METHODS_WITH_CORRECTED, "excel", "weclip_plus", "sccam", "affinitynet"]
QUIRK_BASES = REPO / "configs" / "_base_" / "quirks"


@pytest.mark.parametrize("method", METHODS_WITH_QUIRK_BASES)
def test_each_method_has_an_official_and_a_corrected_quirk_base(method):
    """configs/_base_/quirks/<method>_official.yaml switches every quirk on, <method>_corrected.yaml every one
    off, and they state nothing else."""
    every = quirks(method)
    for kind, value in (("official", True), ("corrected", False)):
        assert read_preset(QUIRK_BASES / f"{method}_{kind}.yaml") == {"options": dict.fromkeys(every, value)}


def test_no_preset_writes_out_a_quirk_switch_a_base_states():
    """The quirk switches come from the quirk bases: a preset states one only to undo its base (the two
    deliberate exceptions below, each with its comment)."""
    exceptions = {
        ("configs/rca/synthetic_cpu.yaml", "quirk_query_memory_spaces"),
        ("configs/weclip_plus/coco.yaml", "quirk_cam_skips_block"),
    }
    stated = set()
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        if "_base_" in path.parts:
            continue
        own = yaml_load(path.read_text()) or {}
        rel = path.relative_to(REPO).as_posix()
        stated |= {(rel, k) for k in own.get("options") or {} if k.startswith("quirk_")}
    assert stated == exceptions


def test_no_preset_option_line_restates_the_value_it_inherits():
    """A preset's ``options:`` line that equals what it would inherit (its bases' value, else the method's
    Options default) says nothing and is not written (dev/restated_options.py counts them)."""
    restating = {name: inherited for name in preset_names() if (inherited := restated(name)[2])}
    assert not restating, f"option lines equal to the value they inherit: {restating}"
