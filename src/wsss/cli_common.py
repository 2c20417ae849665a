"""The options that the ``wsss`` commands and the scripts of ``experiments/``, ``bench/`` and ``dev/`` share,
each declared once here with one help text: ``--quiet``, the config overrides, and a script's common
flags (:func:`script_parser`).

Config overrides have one syntax everywhere: dotted ``key=value`` words after the positional arguments, in any
order with the flags (``wsss train CONFIG data.root=/d --quiet train.max_iters=100``), on every command that
trains or reads a run (the hidden ``--set`` alias is gone; a typed flag is shorthand for one such word,
``wsss.cli.add_setting``).

This module imports nothing but argparse: building a parser imports no data or model code
(tests/methods/test_registry.py::test_the_parser_imports_no_model_code).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

QUIET_HELP = "no progress bars"
OVERRIDES_METAVAR = "KEY=VALUE"


def add_quiet(p: argparse.ArgumentParser) -> None:
    """``--quiet``: no progress bars, the same flag on every command and script that has one."""
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)


def add_overrides(p: argparse.ArgumentParser, example: str = "data.root=/d train.max_iters=100",
                  what: str = "config") -> None:  # fmt: skip
    """The positional ``KEY=VALUE ...`` overrides of a config (``args.overrides``): parse with
    :func:`take_overrides` (``wsss.cli.parse_args``, or a :class:`ScriptParser`), which takes override words that
    come after a flag."""
    p.add_argument("overrides", nargs="*", default=[], metavar=OVERRIDES_METAVAR,
                   help=f"dotted overrides of the {what}, e.g. {example}")  # fmt: skip


def is_override(word: str) -> bool:
    """A ``key=value`` word (not a flag)."""
    return "=" in word and not word.startswith("-")


def take_overrides(args: argparse.Namespace, extra: Sequence[str]) -> list[str]:
    """``args.overrides`` completed: the ``key=value`` words argparse left over (an override after a flag: argparse
    takes a positional list only in one piece). Returns the words left over that are no override, for the parser
    to refuse. The modules a ``custom_imports=[...]`` override names are
    the plugins this command may import (``core.config.named_plugins``)."""
    from wsss.core.config import name_command_line_plugins

    if not hasattr(args, "overrides"):
        name_command_line_plugins([])  # a command without overrides names no plugin (an earlier one's are dropped)
        return list(extra)
    args.overrides = [*args.overrides, *(x for x in extra if is_override(x))]
    name_command_line_plugins(args.overrides)  # the plugins a config may import: docs/security.md
    return [x for x in extra if not is_override(x)]


class ScriptParser(argparse.ArgumentParser):
    """The parser of a script in ``experiments/``, ``bench/`` or ``dev/`` (:func:`script_parser`): argparse's, with
    the flags the scripts share added by name, each with one help text, and the config overrides of the
    ``wsss`` commands (:func:`add_overrides`)."""

    def add_data_root(self, required: bool = False, default: str | None = None) -> None:
        help = _with_default("dataset root in the VOC layout (wsss prepare, wsss synth)", default)
        self.add_argument("--data-root", required=required, default=default, help=help)

    def add_split(self, default: str = "train") -> None:
        self.add_argument("--split", default=default, help="split of the dataset (default %(default)s)")

    def add_out(self, required: bool = False, default: Any = None, **kw: Any) -> None:
        self.add_argument("--out", required=required, default=default,
                          help=_with_default("where the script writes its outputs", default), **kw)  # fmt: skip

    def add_work(self, required: bool = False, default: Any = None, **kw: Any) -> None:
        help = "work folder of the script (its datasets, runs and downloads), kept for the next time"
        self.add_argument("--work", required=required, default=default, help=_with_default(help, default), **kw)

    def add_threads(self, default: int = 1) -> None:
        help = "torch threads of this process (default %(default)s: the machine is shared)"
        self.add_argument("--threads", type=int, default=default, metavar="N", help=help)

    def add_seed(self, default: int = 0) -> None:
        self.add_argument("--seed", type=int, default=default, help="random seed (default %(default)s)")

    def add_iters(self, default: int, warmup: int | None = None) -> None:
        """``--iters`` timed iterations, and with ``warmup`` ``--warmup`` untimed ones before them."""
        self.add_argument("--iters", type=int, default=default, help="timed iterations (default %(default)s)")
        if warmup is not None:
            self.add_argument("--warmup", type=int, default=warmup,
                              help="untimed warm-up iterations before them (default %(default)s)")  # fmt: skip

    def add_json(self, default: Any = None, **kw: Any) -> None:
        self.add_argument("--json", default=default,
                          help=_with_default("also write the results to this JSON file", default), **kw)  # fmt: skip

    def add_chromium(self) -> None:
        self.add_argument("--chromium", default=None, help="path of the chromium executable (default: found)")

    def add_quiet(self) -> None:
        add_quiet(self)

    def add_overrides(self, example: str = "data.root=/d train.max_iters=100", what: str = "config") -> None:
        add_overrides(self, example, what)

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # noqa: ANN401
        parsed, extra = super().parse_known_args(args, namespace)
        return parsed, take_overrides(parsed, extra)


def _with_default(help: str, default: Any) -> str:
    return help if default is None else f"{help} (default %(default)s)"


def script_parser(doc: str | None, full: bool = False) -> ScriptParser:
    """A script's parser, described by its module docstring ``doc``: its first paragraph, or with ``full`` the
    whole of it as written (usage examples kept)."""
    doc = (doc or "").strip()
    if full:
        return ScriptParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    return ScriptParser(description=" ".join(doc.split("\n\n")[0].split()))
