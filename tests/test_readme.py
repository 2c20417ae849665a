"""The README is a front page: short, its commands are ones the parser takes, its links lead to pages that exist.
(The manual's own-photos route is run as written by tests/e2e/test_own_images_route.py; the site is built
strictly by `make docs` in .ci/run.)"""

from __future__ import annotations

import re
import shlex

import pytest

from conftest import REPO
from wsss.cli import parse_args

README = (REPO / "README.md").read_text()
MAX_LINES = 150  # a front page of 150 lines at most


def bash_commands(text: str) -> list[str]:
    """The ``wsss`` command lines of the text's bash blocks, comments dropped, continuations joined."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("#", 1)[0].split("&&"):
                if part.strip().startswith("wsss "):
                    lines.append(part.strip())
    return lines


def test_the_readme_is_a_front_page_that_starts_with_the_two_commands():
    lines = README.splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines"
    head = "\n".join(lines[:8])
    assert "make demo" in head and "make test" in head


@pytest.mark.parametrize("command", bash_commands(README))
def test_every_readme_command_is_taken_by_the_parser(command):
    args = parse_args(shlex.split(command)[1:])  # argparse exits (SystemExit) on a flag it does not know
    assert callable(args.fn)


def test_every_relative_link_of_the_readme_exists():
    links = [t for t in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README) if "://" not in t]
    assert links
    missing = [t for t in links if not (REPO / t).exists()]
    assert not missing, f"README.md links to {missing}"
