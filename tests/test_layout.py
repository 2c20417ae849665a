"""The package's shape, checked with ``ast`` over src/wsss (docs/layout.md):

- imports go down the layers only (a module imports from its own layer or a lower one), and the
  import graph of the modules has no circle;
- no module reads a ``_private`` name that another package of wsss defines;
- no circle either when the ``if TYPE_CHECKING:`` imports count;
- the method builders are imported through ``wsss.methods`` (importing it registers the built-in
  methods; ``wsss.methods.contract`` alone has none registered), and ``runs/`` and ``engine/`` import
  no single method's module;
- no function or method is longer than ``MAX_FUNCTION_LINES`` lines (a long function is
  split at its sections into named helpers).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "wsss"


def layers() -> list[str]:
    """The numbered layer list of the documentation's Layout page (docs/layout.md), bottom first
    (``1. core.errors``...)."""
    section = (REPO / "docs" / "layout.md").read_text().split("\n## ", 1)[0]
    found = re.findall(r"^\s*(\d+)\.\s+([a-z_.]+(?:,\s*[a-z_.]+)*)\s", section, re.M)
    assert found, "docs/layout.md lists no layers"
    assert [int(n) for n, _ in found] == list(range(1, len(found) + 1))
    return [names for _, names in found]


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(SRC.rglob("*.py"))}


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks (annotations only, not run)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            skip |= {id(n) for b in node.body for n in ast.walk(b)}
    return skip


def imports_of(name: str, tree: ast.Module, known: set[str], *, type_checking: bool = False) -> set[str]:
    """The wsss modules that module ``name`` imports (anywhere in the file, lazy imports included; with
    ``type_checking`` also those of ``if TYPE_CHECKING:`` blocks)."""
    out: set[str] = set()
    skip = set() if type_checking else _type_checking_nodes(tree)
    package = name if (SRC.parent / name.replace(".", "/") / "__init__.py").is_file() else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        out |= {t for t in targets if t.split(".")[0] == "wsss" and t != name}
    return {t if t in known else t.rpartition(".")[0] for t in out} - {name}


def layer_of(module: str, order: list[str]) -> int:
    """Index of the most specific layer entry naming ``module`` (``core.errors`` before ``core``)."""
    rel = module.removeprefix("wsss").lstrip(".") or "__init__"
    best, best_len = None, -1
    for i, entry in enumerate(order):
        for prefix in (e.strip() for e in entry.split(",")):
            if (rel == prefix or rel.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    assert best is not None, f"{module}: in no layer of docs/layout.md"
    return best


def test_every_module_is_in_a_layer_and_imports_go_down_only():
    order = layers()
    mods = modules()
    known = set(mods)
    bad = []
    for name, tree in mods.items():
        mine = layer_of(name, order)
        for dep in imports_of(name, tree, known):
            if layer_of(dep, order) > mine:
                bad.append(f"{name} ({order[mine]}) imports {dep} ({order[layer_of(dep, order)]})")
    assert not bad, "imports from a higher layer:\n" + "\n".join(sorted(bad))


def test_the_pipelines_sit_above_runs_and_report_and_nothing_below_imports_them():
    """The route's layer (``wsss.pipelines``) is above ``runs`` and ``report`` and imports nothing above itself;
    ``runs`` imports neither ``report`` nor ``pipelines`` (the arrow goes one way: report reads runs)."""
    order = layers()
    assert layer_of("wsss.runs.jobs", order) < layer_of("wsss.report.html", order)
    assert layer_of("wsss.report.html", order) < layer_of("wsss.pipelines.route", order)
    assert layer_of("wsss.pipelines.steps", order) == layer_of("wsss.pipelines.route", order)
    mods = modules()
    known = set(mods)
    graph = {name: imports_of(name, tree, known, type_checking=True) for name, tree in mods.items()}
    up = [
        f"{n} -> {d}"
        for n, deps in graph.items()
        if n.startswith("wsss.pipelines")
        for d in deps
        if layer_of(d, order) > layer_of(n, order)
    ]
    back = [
        f"{n} -> {d}"
        for n, deps in graph.items()
        if n.startswith("wsss.runs")
        for d in deps
        if d.startswith(("wsss.report", "wsss.pipelines"))
    ]
    assert not up and not back, [*up, *back]
    assert any(d.startswith("wsss.runs") for d in graph["wsss.report.viz"])  # report reads runs: legal, downward


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The circles of a module -> imported modules graph (a package's ``__init__`` importing its own
    submodules, a re-export, is not a dependency between files: parent -> child edges are dropped)."""
    graph = {n: {d for d in deps if not d.startswith(n + ".")} for n, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d) :] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return cycles


def test_the_import_graph_has_no_circle_even_counting_type_checking_imports():
    """No circle between modules, also when the ``if TYPE_CHECKING:`` imports of annotations count: two
    modules that need each other's names are one concept split in two (the trainer and its hooks were)."""
    mods = modules()
    known = set(mods)
    graph = {name: imports_of(name, tree, known, type_checking=True) for name, tree in mods.items()}
    cycles = import_circles(graph)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def single_method_imports(mods: dict[str, ast.Module]) -> list[str]:
    """Imports of one method's module (``wsss.methods.<name>``, not the package, its contract, its import
    layouts or its shared ``base``) from ``wsss.runs`` or ``wsss.engine``: those find methods, refiners and
    drivers by name."""
    known = set(mods)
    shared = {"wsss.methods", "wsss.methods.contract", "wsss.methods.imports", "wsss.methods.base"}
    bad = []
    for name, tree in mods.items():
        if not name.startswith(("wsss.runs", "wsss.engine")):
            continue
        for dep in sorted(imports_of(name, tree, known, type_checking=True)):
            if dep.startswith("wsss.methods.") and dep not in shared:
                bad.append(f"{name} imports {dep}")
    return bad


def test_runs_and_engine_import_no_single_method():
    bad = single_method_imports(modules())
    assert not bad, "\n".join(bad)
    probe = {
        "wsss.runs.x": ast.parse("from wsss.methods.sccam import binarise_cam\n"),
        "wsss.methods.sccam": ast.parse(""),
        "wsss.methods": ast.parse(""),
    }
    assert single_method_imports(probe) == ["wsss.runs.x imports wsss.methods.sccam"]


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def private_definitions(mods: dict[str, ast.Module]) -> dict[str, set[str]]:
    """Per package (``wsss.engine``...), the ``_names`` it defines: functions, classes, module and class
    variables and ``self._x`` attributes."""
    out: dict[str, set[str]] = {}
    for name, tree in mods.items():
        names = out.setdefault(_package(name), set())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
    return {pkg: {n for n in names if n.startswith("_") and not n.startswith("__")} for pkg, names in out.items()}


def private_reads(mods: dict[str, ast.Module]) -> list[str]:
    """Reads of a ``_name`` that another package of ``mods`` defines (imports and attributes; dunders
    and ``self._x`` / ``cls._x`` are fine)."""
    defined = private_definitions(mods)
    bad = []
    for name, tree in mods.items():
        own = defined.get(_package(name), set())
        foreign = set().union(*(v for k, v in defined.items() if k != _package(name))) - own
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("wsss"):
                if _package(node.module) != _package(name):
                    bad += [
                        f"{name}: from {node.module} import {a.name}"
                        for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")
                    ]
            elif (
                isinstance(node, ast.Attribute)
                and node.attr in foreign
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                bad.append(f"{name}:{node.lineno}: .{node.attr}")
    return bad


def test_no_module_reads_a_private_name_of_another_package():
    bad = private_reads(modules())
    assert not bad, "private names of another package:\n" + "\n".join(bad)


#: names that only work once the package that fills their registry is imported: where to import them from
REGISTRY_ENTRY_POINTS = {
    ("wsss.methods.contract", "build_method"): "wsss.methods",
    ("wsss.methods.contract", "get_method_class"): "wsss.methods",
    ("wsss.methods.contract", "method_class"): "wsss.methods",
    ("wsss.methods.contract", "REFINERS"): "wsss.methods",
    ("wsss.methods.contract", "refiners_of"): "wsss.methods",
    ("wsss.methods.contract", "refiner_options"): "wsss.methods",
}


def registry_bypasses(name: str, tree: ast.Module) -> list[str]:
    """``from wsss.methods.contract import build_method`` outside the package that registers the methods."""
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for a in node.names:
                home = REGISTRY_ENTRY_POINTS.get((node.module, a.name))
                if home and not (name == home or name.startswith(home + ".")):
                    bad.append(f"{name}:{node.lineno}: import {a.name} from {home}, not {node.module}")
    return bad


def test_method_builders_come_through_the_package_that_registers_the_methods():
    bad = [b for name, tree in modules().items() for b in registry_bypasses(name, tree)]
    assert not bad, "\n".join(bad)
    assert registry_bypasses("wsss.runs.x", ast.parse("from wsss.methods.contract import build_method\n"))
    assert not registry_bypasses("wsss.runs.x", ast.parse("from wsss.methods import build_method\n"))


def test_the_checks_see_a_violation(tmp_path):
    """The checks above can fail: an upward import, a circle and a private read are found."""
    tree = ast.parse("from wsss.engine.trainer import Trainer\nimport wsss.cli\n")
    known = {"wsss.engine.trainer", "wsss.cli", "wsss.core.config"}
    deps = imports_of("wsss.core.config", tree, known)
    assert deps == {"wsss.engine.trainer", "wsss.cli"}
    order = layers()
    assert all(layer_of(d, order) > layer_of("wsss.core.config", order) for d in deps)
    assert layer_of("wsss.core.errors", order) == layer_of("wsss.core.files", order) < layer_of("wsss.utils.io", order)
    defined = private_definitions({"wsss.engine.trainer": ast.parse("class T:\n    def _save(self): ...\n")})
    assert defined["wsss.engine"] == {"_save"}
    circle = {"wsss.a.x": {"wsss.b.y"}, "wsss.b.y": {"wsss.a.x"}}
    assert import_circles(circle) == [["wsss.a.x", "wsss.b.y", "wsss.a.x"]]
    assert import_circles({"wsss.a": {"wsss.a.x"}, "wsss.a.x": {"wsss.a"}}) == []  # a re-export only
    hinted = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from wsss.cli import main\n")
    assert imports_of("wsss.core.config", hinted, known) == set()
    assert imports_of("wsss.core.config", hinted, known, type_checking=True) == {"wsss.cli"}
    trainer = ast.parse("class T:\n    def _save(self): ...\n    def __len__(self): ...\n")
    reader = ast.parse("from wsss.engine.trainer import _save, __version__\ndef f(t):\n    t._save()\n")
    assert private_reads({"wsss.engine.trainer": trainer, "wsss.runs.run": reader}) == [
        "wsss.runs.run: from wsss.engine.trainer import _save",
        "wsss.runs.run:3: ._save",
    ]


MAX_FUNCTION_LINES = 80


def long_functions(name: str, tree: ast.Module, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``module:line name (N lines)`` for each function or method of ``tree`` longer than ``limit``
    lines, decorators excluded, docstring included (``end_lineno - lineno + 1``)."""
    return [
        f"{name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > limit
    ]


# scripts outside src/ held to the same length rule
CHECKED_SCRIPTS = [REPO / "experiments" / "real_route.py", *sorted((REPO / "experiments").glob("route_*.py"))]


def test_no_function_is_longer_than_the_limit():
    scripts = {p.relative_to(REPO).as_posix(): ast.parse(p.read_text(), str(p)) for p in CHECKED_SCRIPTS}
    bad = [b for name, tree in {**modules(), **scripts}.items() for b in long_functions(name, tree)]
    assert not bad, f"functions longer than {MAX_FUNCTION_LINES} lines (split them at their sections):\n" + "\n".join(
        bad
    )


def test_the_length_check_sees_a_long_function():
    body = "\n".join(f"    x{i} = {i}" for i in range(3))
    tree = ast.parse(
        f"class A:\n    async def f(self):\n    {body.replace(chr(10), chr(10) + '    ')}\n\ndef g():\n    pass\n"
    )
    assert long_functions("wsss.m", tree, limit=3) == ["wsss.m:2 f (4 lines)"]
    assert long_functions("wsss.m", tree, limit=4) == []


# The CAM baseline (methods/cam) is the shared pipeline with a classifier: its tests are the pipeline's (tests/e2e/,
# the contract of tests/methods/test_contract.py), and "cam" also names the shared package tests/cam/ mirrors.
METHOD_NAMES = sorted(p.name for p in (SRC / "methods").iterdir() if (p / "__init__.py").is_file() and p.name != "cam")


def test_a_methods_tests_live_with_the_method():
    """Each method's tests sit in tests/methods/<name>/; no test file elsewhere is named after one
    method (the shared pieces' tests mirror src/wsss; tests/methods/ itself keeps the contract over all)."""
    tests = REPO / "tests"
    for name in METHOD_NAMES:
        assert sorted((tests / "methods" / name).glob("test_*.py")), f"tests/methods/{name}/ holds no tests"
    stray = [
        p.relative_to(REPO).as_posix()
        for p in sorted(tests.rglob("test_*.py"))
        if p.parent.parent != tests / "methods"
        and any(re.match(rf"test_{name}(_|\.py)", p.name) for name in METHOD_NAMES)
        and not p.is_relative_to(tests / "experiments")  # the experiments/ scripts' tests mirror experiments/
        and not p.is_relative_to(tests / "bench")  # and bench/'s
    ]
    assert not stray, f"a method's tests outside tests/methods/<name>/: {stray}"
