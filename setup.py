"""The presets in the wheel: ``configs/`` (beside ``src/`` in a checkout, where the docs name its files) is copied into
the built package as ``wsss/configs`` so that a wheel's ``wsss::`` names resolve (``wsss.core.config.shipped_configs``;
docs/configs.md#scoped-names). Everything else is in pyproject.toml; an editable install reads ``configs/`` in place."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildPyWithConfigs(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "wsss" / "configs"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(HERE / "configs", target, ignore=shutil.ignore_patterns("*.pyc", "__pycache__"))


setup(cmdclass={"build_py": BuildPyWithConfigs})
