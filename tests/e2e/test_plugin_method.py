"""A method outside the package (tests/plugins/wsss_toy_method.py) runs through the CLI: `wsss train`,
`wsss cam` and `wsss predict`, found once through the config key ``custom_imports`` and once through the
entry-point group ``wsss.methods`` (a dist-info on the path, as `pip install` of a plugin writes it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, tiny_overrides

PLUGINS = REPO / "tests" / "plugins"


def _wsss(args: list[str], pythonpath: list[Path], cwd: Path, plugins: str = "") -> subprocess.CompletedProcess:
    import wsss

    # the wsss under test first (an editable install elsewhere would be found otherwise), then the plugin's folders
    paths = [Path(wsss.__file__).parents[1], *pythonpath]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths)), "OMP_NUM_THREADS": "1"}
    env.pop("WSSS_PLUGINS", None)
    if plugins:  # the user names the plugins a run's config.yaml may import (docs/security.md)
        env["WSSS_PLUGINS"] = plugins
    return subprocess.run(
        [sys.executable, "-m", "wsss", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_no_file_under_src_names_the_toy_method():
    named = [p for p in (REPO / "src").rglob("*.py") if "wsss_toy_method" in p.read_text() or '"toy"' in p.read_text()]
    assert named == []


@pytest.mark.parametrize("route", ["custom_imports", "entry_point"])
def test_a_plugin_method_trains_and_infers_from_the_cli(route, synth_root, tmp_path):
    run = tmp_path / "run"
    over = tiny_overrides(
        synth_root,
        run,
        **{
            "method": "toy",
            "options": "{width: 4}",
            "train.max_iters": 2,
            "data.val_split": "''",
            "train.ckpt_iters": 2,
        },
    )
    path = [PLUGINS]
    if route == "custom_imports":
        over.append("custom_imports=[wsss_toy_method]")
    else:
        path.append(PLUGINS / "entry_point")  # the installed plugin's metadata: importlib.metadata finds it
    config = str(REPO / "configs/cam/synthetic_cpu.yaml")

    out = _wsss(["train", config, *over, "--quiet"], path, tmp_path)
    assert out.returncode == 0, out.stderr
    assert (run / "checkpoints" / "last.pt").is_file()
    named = ""
    if route == "custom_imports":  # the run's config.yaml lists the module: read alone, it is not imported
        out = _wsss(["cam", str(run), "--split", "train", "--quiet"], path, tmp_path)
        assert out.returncode == 1 and "custom_imports names wsss_toy_method, not imported" in out.stderr
        named = "wsss_toy_method"
    out = _wsss(["cam", str(run), "--split", "train", "--quiet"], path, tmp_path, named)
    assert out.returncode == 0, out.stderr
    assert len(list((run / "cam_labels" / "train").glob("*.png"))) == 24
    out = _wsss(["predict", str(run), "--split", "val", "--quiet"], path, tmp_path, named)
    assert out.returncode == 0, out.stderr
    assert list((run / "predictions" / "val").glob("*.png"))


def test_without_the_plugin_the_method_is_unknown(synth_root, tmp_path):
    """The control: neither route given, `wsss train` names the unknown method in one error line."""
    over = tiny_overrides(synth_root, tmp_path / "run", **{"method": "toy"})
    out = _wsss(["train", str(REPO / "configs/cam/synthetic_cpu.yaml"), *over, "--quiet"], [PLUGINS], tmp_path)
    assert out.returncode != 0 and "unknown method 'toy'" in out.stderr and "Traceback" not in out.stderr


def test_a_plugin_ships_its_own_official_checkpoint_import(synth_root, tmp_path):
    """`wsss import toy FILE`: a layout registered by the plugin's own module (wsss.methods.imports), found
    through its entry point, makes a run that `wsss cam` uses; nothing under src/ names it (test above)."""
    import torch

    from wsss.core.config import load_config
    from wsss.methods import build_method, import_custom_modules, placeholder_classes

    import_custom_modules(["wsss_toy_method"])
    cfg = load_config(REPO / "configs/cam/synthetic_cpu.yaml", ["method=toy", "options={width: 4}"])
    torch.manual_seed(3)
    official = {f"toy_official.{k}": v for k, v in build_method(cfg, placeholder_classes(7)).state_dict().items()}
    ckpt = tmp_path / "toy_official.pth"
    torch.save(official, ckpt)
    run, path = tmp_path / "run", [PLUGINS, PLUGINS / "entry_point"]
    config = str(REPO / "configs/cam/synthetic_cpu.yaml")
    args = [
        "import",
        "toy",
        str(ckpt),
        "--config",
        config,
        "--out",
        str(run),
        "method=toy",
        "options={width: 4}",
        f"data.root={synth_root}",
    ]
    out = _wsss(args, path, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "toy from" in out.stdout
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert torch.equal(state["model"]["stem.weight"], official["toy_official.stem.weight"])
    assert state["imported_keys"] == len(official)
    out = _wsss(["cam", str(run), "--split", "train", "--quiet"], path, tmp_path)
    assert out.returncode == 0, out.stderr
    assert len(list((run / "cam_labels" / "train").glob("*.png"))) == 24
    out = _wsss(args[:1] + ["toy_missing"] + args[2:], path, tmp_path)  # a name no layout has: one line
    assert out.returncode != 0 and "toy_missing" in out.stderr
