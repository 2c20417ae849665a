"""Every official-quirk switch is set in the paper presets (on) and the *_corrected presets (off), and
is documented in the switch table of its documentation page (docs/methods/)."""

from dataclasses import fields

import pytest

from conftest import REPO
from wsss.core.config import read_preset
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
