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
import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

QUIET_HELP = "no progress bars"
OVERRIDES_METAVAR = "KEY=VALUE"


def add_quiet(p: argparse.ArgumentParser) -> None:
    """``--quiet``: no progress bars, the same flag on every command and script that has one."""
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)


def add_overrides(
    p: argparse.ArgumentParser, example: str = "data.root=/d train.max_iters=100", what: str = "config"
) -> None:
    """The positional ``KEY=VALUE ...`` overrides of a config (``args.overrides``): parse with
    :func:`take_overrides` (``wsss.cli.parse_args``, or a :class:`ScriptParser`), which takes override words that
    come after a flag."""
    p.add_argument(
        "overrides",
        nargs="*",
        default=[],
        metavar=OVERRIDES_METAVAR,
        help=f"dotted overrides of the {what}, e.g. {example}",
    )


def is_override(word: str) -> bool:
    """A ``key=value`` word (not a flag)."""
    return "=" in word and not word.startswith("-")


# A config override as a word of its own: a dotted key, then ``=`` (a path with ``=`` in a folder's name is none)
_OVERRIDE_WORD = re.compile(r"[A-Za-z_][\w-]*(\.[\w-]+)*=")


_AFTER_LISTS = (
    "_overrides_after_lists"  # the namespace's KEY=VALUE words taken back from a list option (:class:`Names`)
)


class Names(argparse.Action):
    """A list option (``nargs="+"`` or ``"*"``: ``--images DIR_OR_FILE ...``) whose values are never ``KEY=VALUE``
    words: argparse gives a list option every word up to the next flag, so ``--images new/ run.seed=1`` took the
    override for a photo. Such words are kept aside for :func:`take_overrides` (or refused, on a command without
    overrides); ``convert``: the option's ``type``, applied here to the other words (argparse would apply it to
    every word first)."""

    def __init__(self, *args: Any, convert: Any = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.convert = convert

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        words = [v for v in values if is_override(v)]
        setattr(namespace, _AFTER_LISTS, [*getattr(namespace, _AFTER_LISTS, []), *words])
        kept = [self._converted(v) for v in values if not is_override(v)]
        if not kept and self.nargs == "+":
            raise argparse.ArgumentError(
                self,
                f"expected at least one {self.metavar or 'value'} before the "
                f"{OVERRIDES_METAVAR} words ({' '.join(words)})",
            )
        setattr(namespace, self.dest, kept)

    def _converted(self, value: str) -> Any:
        if self.convert is None:
            return value
        try:
            return self.convert(value)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentError(self, str(e)) from e
        except (TypeError, ValueError) as e:
            name = getattr(self.convert, "__name__", repr(self.convert))
            raise argparse.ArgumentError(self, f"invalid {name} value: {value!r}") from e


class Parser(argparse.ArgumentParser):
    """argparse's parser whose list options are :class:`Names` (a ``KEY=VALUE`` word is never one of their values,
    wherever it stands), but those of ``metavar=OVERRIDES_METAVAR`` (a script's overrides of a second training);
    the ``wsss`` commands' (subparsers are of their parent's class) and the scripts'. A ``KEY=VALUE`` word is never
    a positional argument either (:meth:`parse_known_args`)."""

    def parse_known_args(  # type: ignore[override]  # argparse's overloads, as one signature
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> Any:  # noqa: ANN401
        """argparse's, with the ``KEY=VALUE`` words that stand where a positional argument may be taken out first
        and given back as words left over, for :func:`take_overrides`: argparse fills the positionals in order,
        so ``wsss export onnx infer.flip_fuse=max RUN`` took the word for the run."""
        words: list[str] = []
        if any(a.dest == "overrides" for a in self._actions):
            args, words = self._positional_overrides(list(sys.argv[1:] if args is None else args))
        parsed, extra = super().parse_known_args(args, namespace)
        return parsed, [*extra, *words]

    def _positional_overrides(self, args: list[str]) -> tuple[list[str], list[str]]:
        """(``args`` without the override words in positional places, those words): a word that follows a flag
        as its value stays, as do the words after ``--`` and one that names an existing file (a run folder
        ``lr=0.1``)."""
        kept: list[str] = []
        words: list[str] = []
        values = 0  # words still owed to the last flag as its values
        for i, word in enumerate(args):
            if word == "--":
                return [*kept, *args[i:]], words
            if word.startswith("-") and len(word) > 1:
                values = self._values_of(word)
            elif values:
                values -= 1
            elif _OVERRIDE_WORD.match(word) and not os.path.lexists(word):
                words.append(word)
                continue
            kept.append(word)
        return kept, words

    def _values_of(self, flag: str) -> int:
        """How many words after ``flag`` are its values (a list option's: all up to the next flag)."""
        if "=" in flag:
            return 0
        action = self._option_string_actions.get(flag)
        if action is None and flag.startswith("--") and self.allow_abbrev:
            found = [a for name, a in self._option_string_actions.items() if name.startswith(flag)]
            action = found[0] if len({id(a) for a in found}) == 1 else None
        if action is None:
            return 0
        if action.nargs in ("*", "+", argparse.REMAINDER):
            return 1 << 30
        return 1 if action.nargs in (None, "?") else int(action.nargs)

    def add_argument(self, *args: Any, **kw: Any) -> argparse.Action:
        words = kw.get("metavar") == OVERRIDES_METAVAR  # a list of a training's own overrides: it takes them
        if (
            args
            and args[0].startswith("-")
            and kw.get("nargs") in ("+", "*")
            and not {"action", "choices"} & set(kw)
            and not words
        ):
            convert = kw.pop("type", None)
            kw = {**kw, "action": Names, "convert": convert}
        return super().add_argument(*args, **kw)


def take_overrides(args: argparse.Namespace, extra: Sequence[str], argv: Sequence[str] | None = None) -> list[str]:
    """``args.overrides`` completed: the ``key=value`` words argparse left over (an override after a flag: argparse
    takes a positional list only in one piece) and those a list option gave back (:class:`Names`), in the order of
    the command line ``argv`` (a later word wins). Returns the words left over that are no override, for the parser
    to refuse. The modules a ``custom_imports=[...]`` override names are
    the plugins this command may import (``core.config.named_plugins``)."""
    from wsss.core.config import name_command_line_plugins

    after_lists = list(getattr(args, _AFTER_LISTS, []))
    if hasattr(args, _AFTER_LISTS):
        delattr(args, _AFTER_LISTS)
    if not hasattr(args, "overrides"):
        name_command_line_plugins([])  # a command without overrides names no plugin (an earlier one's are dropped)
        return [*after_lists, *extra]
    words = [*args.overrides, *after_lists, *(x for x in extra if is_override(x))]
    args.overrides = _in_order(words, sys.argv[1:] if argv is None else argv)
    name_command_line_plugins(args.overrides)  # the plugins a config may import: docs/security.md
    return [x for x in extra if not is_override(x)]


def _in_order(words: list[str], argv: Sequence[str]) -> list[str]:
    """``words`` in the order they stand in ``argv`` (each as often as it is in ``words``); those not in it after."""
    left = Counter(words)
    ordered = []
    for w in argv:
        if left[w] > 0:
            ordered.append(w)
            left[w] -= 1
    return [*ordered, *left.elements()]


class ScriptParser(Parser):
    """The parser of a script in ``experiments/``, ``bench/`` or ``dev/`` (:func:`script_parser`): argparse's, with
    the flags the scripts share added by name, each with one help text, and the config overrides of the
    ``wsss`` commands (:func:`add_overrides`)."""

    def add_data_root(self, required: bool = False, default: str | None = None) -> None:
        help = _with_default("dataset root in the VOC layout (wsss prepare, wsss synth)", default)
        self.add_argument("--data-root", required=required, default=default, help=help)

    def add_split(self, default: str = "train") -> None:
        self.add_argument("--split", default=default, help="split of the dataset (default %(default)s)")

    def add_out(self, required: bool = False, default: Any = None, **kw: Any) -> None:
        self.add_argument(
            "--out",
            required=required,
            default=default,
            help=_with_default("where the script writes its outputs", default),
            **kw,
        )

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
            self.add_argument(
                "--warmup",
                type=int,
                default=warmup,
                help="untimed warm-up iterations before them (default %(default)s)",
            )

    def add_json(self, default: Any = None, **kw: Any) -> None:
        self.add_argument(
            "--json", default=default, help=_with_default("also write the results to this JSON file", default), **kw
        )

    def add_chromium(self) -> None:
        self.add_argument("--chromium", default=None, help="path of the chromium executable (default: found)")

    def add_quiet(self) -> None:
        add_quiet(self)

    def add_overrides(self, example: str = "data.root=/d train.max_iters=100", what: str = "config") -> None:
        add_overrides(self, example, what)

    def parse_known_args(  # type: ignore[override]  # argparse's overloads, as one signature
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> Any:  # noqa: ANN401
        parsed, extra = super().parse_known_args(args, namespace)
        return parsed, take_overrides(parsed, extra, args)


def _with_default(help: str, default: Any) -> str:
    return help if default is None else f"{help} (default %(default)s)"


def script_parser(doc: str | None, full: bool = False) -> ScriptParser:
    """A script's parser, described by its module docstring ``doc``: its first paragraph, or with ``full`` the
    whole of it as written (usage examples kept)."""
    doc = (doc or "").strip()
    if full:
        return ScriptParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    return ScriptParser(description=" ".join(doc.split("\n\n")[0].split()))
