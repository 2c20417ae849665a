"""The wheel: what `pip install wsss` gives a user who has no checkout.

The presets live in ``configs/`` beside ``src/`` (where the docs name them); ``setup.py`` copies them into the built
package as ``wsss/configs``, so that ``wsss::`` names (``wsss route``'s presets, a preset's scoped bases) resolve in a
wheel's install too (docs/configs.md#copying-a-preset-scoped-names-and-flat). Before, a wheel carried no configs and
``wsss route`` stopped at its first preset.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import REPO

BUILD_FILES = ("pyproject.toml", "setup.py", "README.md", "src", "configs")


def _wheel(tmp_path: Path) -> Path:
    """A wheel built from a copy of the checkout's build inputs (no build folder is left in the checkout; no network:
    the build uses the environment's setuptools, which the dev extra pins at the version pyproject.toml builds with)."""
    src = tmp_path / "checkout"
    src.mkdir()
    for name in BUILD_FILES:
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        kwargs = (
            {"ignore": shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")} if copy is shutil.copytree else {}
        )
        copy(REPO / name, src / name, **kwargs)
    dist = tmp_path / "dist"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(dist),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = dist.glob("wsss-*.whl")
    return wheel


def test_the_wheel_carries_every_shipped_config_and_its_scoped_names_resolve(tmp_path):
    wheel = _wheel(tmp_path)
    shipped = sorted(
        str(p.relative_to(REPO / "configs"))
        for p in (REPO / "configs").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    with zipfile.ZipFile(wheel) as z:
        carried = sorted(n.removeprefix("wsss/configs/") for n in z.namelist() if n.startswith("wsss/configs/"))
    assert carried == shipped
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # the installed wheel, from a folder that is no checkout: the route's presets and their scoped bases load
    code = (
        "import wsss, sys; from wsss.core.config import load_config, shipped_config; "
        "from wsss.pipelines.route_values import CLASSIFIERS, SEG_PRESET; "
        "print(wsss.__file__); print(shipped_config(SEG_PRESET)); "
        "[load_config(p) for p in (*CLASSIFIERS.values(), SEG_PRESET, 'wsss::seco/voc.yaml')]"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}  # ahead of the checkout's editable install
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    package, preset = done.stdout.split()
    assert Path(package).is_relative_to(site) and Path(preset) == site / "wsss/configs/deeplab/real_cpu.yaml"


def _requirements(pyproject: str, key: str) -> list[str]:
    """The requirement strings of ``key = [...]`` (``dependencies`` or an extra) in pyproject.toml's text."""
    block = re.search(rf"^{key} = \[(.*?)\]", pyproject, re.M | re.S).group(1)
    return re.findall(r'"([^"]+)"', block)


def test_torch_has_a_tested_range_and_make_setup_installs_the_exact_versions():
    """pip install wsss keeps a user's PyTorch within the range (a lower bound, no upper pin); make setup installs
    constraints.txt's exact versions, inside the range, so that the demo and the figures stay reproducible."""
    pyproject = (REPO / "pyproject.toml").read_text()
    deps = {re.split(r"[<>=!~ ]", r, maxsplit=1)[0]: r for r in _requirements(pyproject, "dependencies")}
    pins = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines() if "==" in line)
    readme = (REPO / "README.md").read_text()
    for name in ("torch", "torchvision"):
        low = re.fullmatch(rf"{name}>=([\d.]+)", deps[name])
        assert low, f"{deps[name]}: a lower bound only"
        as_tuple = [tuple(int(p) for p in v.split(".")) for v in (low.group(1), pins[name])]
        assert as_tuple[0] <= as_tuple[1], f"constraints.txt's {name} {pins[name]} is below the range"
        assert f"{name} {low.group(1)}" in readme, f"README.md does not name {name}'s lower bound"
    setup = re.search(r"^\$\(STAMP\):.*?\n\n", (REPO / "Makefile").read_text(), re.M | re.S).group(0)
    assert '-c constraints.txt -e ".[dev]"' in setup


def test_the_export_extra_is_in_dev_and_pinned_for_make_setup():
    pyproject = (REPO / "pyproject.toml").read_text()
    export, dev = _requirements(pyproject, "export"), _requirements(pyproject, "dev")
    assert {r.split(">=")[0] for r in export} == {"onnx", "onnxscript", "onnxruntime"}
    assert set(export) <= set(dev)
    pinned = (REPO / "constraints.txt").read_text()
    assert all(f"{r.split('>=')[0]}==" in pinned for r in export)
