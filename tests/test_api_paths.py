"""The import paths a plugin may rely on (docs/api.md, "Import paths a plugin may rely on"): each listed name
imports from its module, the plugin of tests/plugins imports nothing that is not listed, and each moved path
still imports, warning, as the same objects (``wsss.methods.cam_baseline`` became ``wsss.methods.cam``
and an out-of-tree method that imported the old name stopped). The lists are read from the page, so the page
and this test cannot drift apart."""

from __future__ import annotations

import ast
import contextlib
import importlib
import re
import sys
from collections.abc import Iterator

import pytest

from conftest import REPO

SECTION = "## Import paths a plugin may rely on"
PLUGIN = REPO / "tests" / "plugins" / "wsss_toy_method.py"


def _table(header: str) -> list[list[list[str]]]:
    """The rows of the section's table whose header row is ``header``: the backticked words of each cell."""
    text = (REPO / "docs" / "api.md").read_text()
    assert SECTION in text, f"docs/api.md has no section {SECTION!r}"
    lines = text.split(SECTION, 1)[1].split("\n## ", 1)[0].splitlines()
    assert header in lines, f"docs/api.md, {SECTION}: no table {header!r}"
    rows = []
    for line in lines[lines.index(header) + 2 :]:  # after the header and its |---| row
        if not line.startswith("|"):
            break
        rows.append([re.findall(r"`([\w.]+)`", c) for c in line.strip().strip("|").split("|")])
    return rows


def listed() -> dict[str, list[str]]:
    """module -> the names docs/api.md lists for it."""
    return {module: names for (module,), names in _table("| module | names |")}


def moved() -> dict[str, str]:
    """old path -> new path."""
    return {old: new for (old,), (new,) in _table("| old path | new path |")}


def test_the_page_lists_the_paths_and_the_moves():
    assert len(listed()) >= 10 and all(names for names in listed().values())
    assert moved()["wsss.methods.cam_baseline"] == "wsss.methods.cam"


@pytest.mark.parametrize("module", sorted(listed()))
def test_each_listed_name_imports_from_its_module(module):
    imported = importlib.import_module(module)
    missing = [n for n in listed()[module] if not hasattr(imported, n)]
    assert not missing, f"docs/api.md lists {missing} under {module}, which has no such name"


def test_the_plugin_imports_only_listed_names():
    """What tests/plugins/wsss_toy_method.py (the example docs/adding-a-method.md shows) imports from wsss is
    listed: a plugin written from the docs relies on listed paths only."""
    paths = listed()
    froms = [n for n in ast.walk(ast.parse(PLUGIN.read_text())) if isinstance(n, ast.ImportFrom)]
    used = [(node.module, a.name) for node in froms if (node.module or "").split(".")[0] == "wsss" for a in node.names]
    assert used, "the plugin imports nothing from wsss?"
    unlisted = [f"{m}.{n}" for m, n in used if n not in paths.get(m, [])]
    assert not unlisted, f"{PLUGIN.name} imports {unlisted}, which docs/api.md does not list"


@contextlib.contextmanager
def _first_import(module: str) -> Iterator[None]:
    """``module`` imported as for the first time inside the block (its warning is given then only), and as not
    imported after it: no module or package attribute left behind for the other tests."""
    parent, _, name = module.rpartition(".")

    def forget() -> None:
        sys.modules.pop(module, None)
        if parent in sys.modules and name in vars(sys.modules[parent]):
            delattr(sys.modules[parent], name)

    forget()
    try:
        yield
    finally:
        forget()


@pytest.mark.parametrize("old", sorted(moved()))
def test_a_moved_path_imports_with_a_deprecation_warning_as_the_same_objects(old):
    """The old path of a moved module still imports (an out-of-tree method written against it runs), warns once
    with the path to use, and its names are the new module's own objects (a class registered once, isinstance
    holds)."""
    new = importlib.import_module(moved()[old])
    said = rf"{re.escape(old)} is deprecated: import {re.escape(new.__name__)} instead"
    with _first_import(old), pytest.warns(DeprecationWarning, match=said):
        alias = importlib.import_module(old)
    names = listed().get(new.__name__, [])
    assert names and all(getattr(alias, n) is getattr(new, n) for n in names)
    others = [n for n in vars(new) if not n.startswith("_") and n not in vars(alias)]  # what the old module imported
    assert others and all(getattr(alias, n) is getattr(new, n) for n in others)


def test_the_old_cam_baseline_path_warns_at_the_line_that_imports_it():
    """A plugin author sees their own line in the warning (not the import machinery's)."""
    with _first_import("wsss.methods.cam_baseline"), pytest.warns(DeprecationWarning) as caught:
        from wsss.methods.cam_baseline import CAMBaseline, online_pseudo_label
    from wsss.cam import online_pseudo_label as shared
    from wsss.methods import get_method_class

    assert [w.filename for w in caught] == [__file__]
    assert CAMBaseline is get_method_class("cam") and online_pseudo_label is shared
