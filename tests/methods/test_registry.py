"""The registries are open but guarded: an empty or taken name is refused (a second method called "seco" would
silently replace the first), the same object again is fine; the CLI's choices come from the registries."""

from __future__ import annotations

import subprocess
import sys

import pytest

import wsss.runs.refiners  # noqa: F401 (the generic refiners register there)
from wsss.core.errors import UsageError
from wsss.methods import METHODS, REFINERS, Method, import_custom_modules, register_method, register_refiner
from wsss.models.registry import BACKBONES, register_backbone


def test_a_taken_or_empty_method_name_is_refused():
    class Again(Method):
        name = "seco"

    class Nameless(Method):
        pass

    with pytest.raises(ValueError, match="'seco' is already registered"):
        register_method(Again)
    with pytest.raises(ValueError, match="non-empty name"):
        register_method(Nameless)
    assert METHODS["seco"] is not Again and "" not in METHODS
    assert register_method(METHODS["seco"]) is METHODS["seco"]  # the same class again: a re-import


def test_a_taken_or_empty_refiner_or_backbone_name_is_refused():
    with pytest.raises(ValueError, match="'par' is already registered"):
        register_refiner("par")(lambda job, ids, **_: None)
    with pytest.raises(ValueError, match="non-empty name"):
        register_refiner(" ")(lambda job, ids, **_: None)
    with pytest.raises(ValueError, match="'resnet38d' is already registered"):
        register_backbone("resnet38d")(lambda name, **kw: None)
    with pytest.raises(ValueError, match="non-empty name"):
        register_backbone("")
    assert "" not in REFINERS and "" not in BACKBONES


def test_custom_imports_names_a_missing_module():
    with pytest.raises(UsageError, match="custom_imports: no module 'no_such_wsss_plugin'"):
        import_custom_modules(["no_such_wsss_plugin"])


_FAILING = {
    "plug_raises": (
        "raise RuntimeError('boom')\n",
        "plugin 'plug_raises' failed as it was imported (RuntimeError: boom)",
    ),
    "plug_needs": (
        "import no_such_wsss_dependency\n",
        "plugin 'plug_needs' imports 'no_such_wsss_dependency', which is not installed",
    ),
    "plug_exits": ("import sys\nsys.exit(3)\n", "plugin 'plug_exits' called sys.exit(3) as it was imported"),
}


@pytest.mark.parametrize("name", list(_FAILING))
def test_a_plugin_that_fails_as_it_is_imported_is_one_line_naming_it(name, tmp_path, monkeypatch, capsys):
    """A named plugin that raised or imported a missing module printed a traceback; one that called sys.exit(3)
    ended wsss with status 3 and no word."""
    from conftest import REPO
    from wsss.cli import main

    code, said = _FAILING[name]
    (tmp_path / f"{name}.py").write_text(code)
    monkeypatch.syspath_prepend(tmp_path)
    assert main(["config", "show", str(REPO / "configs/cam/synthetic_cpu.yaml"), f"custom_imports=[{name}]"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: command-line overrides: custom_imports: {said}\n"
    assert name not in sys.modules


@pytest.mark.parametrize("name", ["../evil", ".x", "", "a..b"])
def test_a_plugin_name_that_is_no_module_name_is_one_line(name, capsys):
    from conftest import REPO
    from wsss.cli import main

    assert main(["config", "show", str(REPO / "configs/cam/synthetic_cpu.yaml"), f"custom_imports=['{name}']"]) == 1
    assert capsys.readouterr().err == (
        f"error: command-line overrides: custom_imports: {name!r} is not a module name "
        "(dotted Python names, e.g. my_package.my_method; a plugin is imported from "
        "the Python path, never from a file path)\n"
    )


_PLUGIN_X = "import pathlib\npathlib.Path(__file__).with_name('plugin_x_ran').touch()\n"


def test_a_config_names_no_code_to_run_the_user_does(tmp_path, monkeypatch):
    """``custom_imports: [plugin_x]`` in a config (a run's config.yaml from elsewhere, with a plugin_x.py
    beside it) imported it. A module is imported only when the user names it too: WSSS_PLUGINS, or the command
    line (``cli_common.take_overrides``); one already imported runs nothing and passes."""
    from wsss.core.config import load_config, name_command_line_plugins
    from wsss.methods import method_class

    (tmp_path / "plugin_x.py").write_text(_PLUGIN_X)
    monkeypatch.syspath_prepend(tmp_path)
    monkeypatch.delenv("WSSS_PLUGINS", raising=False)
    cfg = load_config(None, ["custom_imports=[plugin_x]"])  # a library call: the caller's code names nothing
    with pytest.raises(UsageError, match=r"^custom_imports names plugin_x, not imported: .* WSSS_PLUGINS=plugin_x"):
        method_class(cfg)
    assert not (tmp_path / "plugin_x_ran").exists() and "plugin_x" not in sys.modules
    try:
        name_command_line_plugins(["run.dir=r", "custom_imports=[plugin_x]"])  # `wsss train ... custom_imports=[..]`
        assert method_class(cfg).name == "cam" and (tmp_path / "plugin_x_ran").is_file()
        (tmp_path / "plugin_x_ran").unlink()
        del sys.modules["plugin_x"]
        name_command_line_plugins([])  # the next command names none
        with pytest.raises(UsageError):
            method_class(cfg)
        monkeypatch.setenv("WSSS_PLUGINS", "other, plugin_x")
        assert method_class(cfg).name == "cam" and (tmp_path / "plugin_x_ran").is_file()
        assert method_class(load_config(None, ["custom_imports=[sys]"])).name == "cam"  # imported: nothing runs
    finally:
        name_command_line_plugins([])
        sys.modules.pop("plugin_x", None)


def test_cli_choices_come_from_the_registries():
    from wsss.cli import build_parser
    from wsss.methods.imports import IMPORT_LAYOUTS

    p = build_parser()
    assert p.parse_args(["pseudo", "RUN", "--split", "train", "--refine", "rca"]).refine == "rca"
    sub = next(a for a in p._actions if isinstance(getattr(a, "choices", None), dict) and "pseudo" in a.choices)
    refine = next(a for a in sub.choices["pseudo"]._actions if a.dest == "refine")
    assert set(refine.choices) == set(REFINERS)
    method = next(a for a in sub.choices["import"]._actions if a.dest == "method")
    assert list(method.choices) == list(IMPORT_LAYOUTS) and {"seco", "toco", "rca", "sccam", "clip_es"} <= set(
        IMPORT_LAYOUTS
    )


def test_the_parser_imports_no_model_code():
    """Parsing a command imports neither torch nor a method (the choices are read when needed): a command
    starts at once, and `--workers N` starts its workers before this process spends seconds importing."""
    code = (
        "import sys; from wsss.cli import parse_args; "
        "parse_args(['cam', 'RUN', '--split', 'val', '--workers', '2']); parse_args(['viz', 'RUN', '--ids', 'a']); "
        "print(sorted(m for m in ('torch', 'timm', 'wsss.methods', 'wsss.runs.jobs') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
