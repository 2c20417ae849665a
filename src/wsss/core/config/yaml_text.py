"""The YAML of configs: the one loader (YAML 1.2 floats, bounded aliases and nesting), its one-line
error text, and the dumper whose output loads back equal."""

from __future__ import annotations

import re
import sys
from typing import Any

import yaml

# The most nodes a YAML document may stand for once its aliases are expanded. An alias is read as a second
# reference to the same object, cheap until something copies the result: a "billion laughs" of nine anchors
# of nine aliases each, inside a free-form mapping (model.backbone_kwargs), passed the schema and then
# grew `wsss config show` to gigabytes in the deep copy of ``Config.to_dict``. The largest preset
# is a few hundred nodes.
MAX_YAML_NODES = 100_000


class YAMLLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's float rule: ``1e-3`` and ``6E-5`` are numbers, and with a bound on
    what its aliases expand to (``MAX_YAML_NODES``; a recursive alias is refused too).

    PyYAML follows YAML 1.1, whose float pattern needs a dot in the mantissa (``1.0e-3``), so it reads
    ``1e-3`` as the string '1e-3'. Every config, override and run file is read with this loader.
    """

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            _check_expansion(node)
        return node


def _check_expansion(root: yaml.Node) -> None:
    """A ``yaml.YAMLError`` when the node graph ``root`` (aliases are shared nodes) expands to more than
    ``MAX_YAML_NODES`` nodes or into itself. Each distinct node is sized once, children first, without
    recursion (a deeply nested document must not exhaust Python's stack here)."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        children = _children(node)
        if children_done:
            on_path.discard(key)
            size[key] = min(MAX_YAML_NODES + 1, 1 + sum(size[id(c)] for c in children))
            if size[key] > MAX_YAML_NODES:
                raise yaml.YAMLError(
                    f"its aliases expand to more than {MAX_YAML_NODES:,} values ({node.start_mark.line + 1}:"
                    f"{node.start_mark.column + 1}); refused as a YAML alias bomb"
                )
            continue
        if key in size:
            continue
        if key in on_path:
            raise yaml.YAMLError(f"a recursive alias at line {node.start_mark.line + 1}; a config cannot hold one")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


YAML12_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
YAMLLoader.add_implicit_resolver("tag:yaml.org,2002:float", YAML12_FLOAT, list("-+0123456789."))


def _construct_int(loader: YAMLLoader, node: yaml.ScalarNode) -> int:
    """An integer, or a YAML error at its place when it has more digits than Python converts (a ValueError with a
    traceback before)."""
    try:
        return loader.construct_yaml_int(node)
    except ValueError:
        raise yaml.constructor.ConstructorError(
            None,
            None,
            f"an integer of {len(str(node.value))} digits, more than {sys.get_int_max_str_digits()}",
            node.start_mark,
        ) from None


YAMLLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def yaml_load(text: str) -> Any:
    """Parse YAML text with :class:`YAMLLoader` (YAML 1.2 floats, bounded aliases); the one way configs are
    read. A ``yaml.YAMLError`` for text that is not YAML or is nested deeper than Python's stack allows."""
    try:
        return yaml.load(text, Loader=YAMLLoader)
    except RecursionError:  # PyYAML's parser recurses per level: "[[[[...]]]]" 500 deep exhausts the stack
        raise yaml.YAMLError("nested too deeply (hundreds of levels); a config is a few levels deep") from None


def yaml_error_text(e: yaml.YAMLError, text: str | None = None) -> str:
    """What is wrong with a YAML text and where (line, column; with ``text``, the document, also the key whose
    value it is), in one line and without the text itself: PyYAML's message quotes the line, which printed the
    first line of any file a config named (``_base_: /etc/shadow``)."""
    problem, mark = getattr(e, "problem", None), getattr(e, "problem_mark", None)
    if not problem:
        return (str(e).splitlines() or [type(e).__name__])[0]
    if mark is None:
        return problem
    key = _key_at(text, mark) if text is not None else None
    return problem + f" at line {mark.line + 1}, column {mark.column + 1}" + (f", the value of {key}" if key else "")


def _key_at(text: str, mark: yaml.Mark) -> str | None:
    """The dotted key of the value that starts at ``mark`` in the YAML ``text`` (None: not a mapping's value, or a
    text that does not compose)."""
    try:
        root = yaml.compose(text, Loader=YAMLLoader)
    except (yaml.YAMLError, RecursionError):
        return None
    stack: list[tuple[yaml.Node, str]] = [(root, "")] if root is not None else []
    while stack:
        node, path = stack.pop()
        if node.start_mark.index == mark.index and path:
            return path
        if isinstance(node, yaml.MappingNode):
            stack.extend((v, f"{path}.{k.value}" if path else str(k.value)) for k, v in node.value)
    return None


class YAMLDumper(yaml.SafeDumper):
    """PyYAML's safe dumper that quotes a string :class:`YAMLLoader` would read as a number (``'1e5'``: YAML 1.1
    writes it plain, YAML 1.2's float rule reads it back as 100000.0), so what is written loads as it was."""


YAMLDumper.add_implicit_resolver("tag:yaml.org,2002:float", YAML12_FLOAT, list("-+0123456789."))


def dump_yaml(data: dict[str, Any]) -> str:
    """``data`` as YAML that :func:`yaml_load` reads back equal (the one way configs are written)."""
    return yaml.dump(data, Dumper=YAMLDumper, sort_keys=False, default_flow_style=None)
