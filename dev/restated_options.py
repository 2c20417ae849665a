"""Count the option lines of the shipped presets that restate a default (issue 77).

    .venv/bin/python dev/restated_options.py          # the totals
    .venv/bin/python dev/restated_options.py -v       # and each preset's restated keys

For each preset (configs/**.yaml outside configs/_base_/), each key of its own ``options:`` section (not
its bases') is compared with

* the method's default: the ``Options`` dataclass's value (what the issue counted: "equal the method's
  defaults");
* the value it would inherit: its ``_base_`` presets' value if they state one, else the method's default.
  A line equal to this one says nothing; a line equal to the method's default but not to the inherited
  value undoes a base, and stays (its comment says so).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from dev.preset_expansions import REPO, preset_names
from wsss.cli_common import script_parser


def _defaults(method: str) -> dict[str, Any]:
    from wsss.core.config import _to_plain
    from wsss.methods import get_method_class

    options = get_method_class(method).Options()
    return {f.name: _to_plain(getattr(options, f.name)) for f in dataclasses.fields(options)}


def restated(name: str) -> tuple[int, list[str], list[str]]:
    """(the preset's own option lines, those equal to the method's default, those equal to what it inherits)."""
    from wsss.core.config import BASE_KEY, _merge, _to_plain, read_preset, yaml_load

    path = REPO / name
    own = yaml_load(path.read_text()) or {}
    bases = own.pop(BASE_KEY, [])
    inherited: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        inherited = _merge(inherited, read_preset(path.parent / base))
    method = own.get("method") or inherited.get("method") or "cam"
    defaults = _defaults(method)
    from_bases = {**defaults, **{k: _to_plain(v) for k, v in (inherited.get("options") or {}).items()}}
    options = {k: _to_plain(v) for k, v in (own.get("options") or {}).items()}
    at_default = [k for k, v in options.items() if k in defaults and defaults[k] == v]
    at_inherited = [k for k, v in options.items() if k in from_bases and from_bases[k] == v]
    return len(options), at_default, at_inherited


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="list each preset's restated keys")
    args = parser.parse_args(argv)
    total = at_default = at_inherited = 0
    for name in preset_names():
        n, default, inherit = restated(name)
        total, at_default, at_inherited = total + n, at_default + len(default), at_inherited + len(inherit)
        if args.verbose and (default or inherit):
            print(f"{name}: {len(default)} of {n} at the method's default, {len(inherit)} at the inherited value")
            print(f"    default: {' '.join(default)}\n    inherited: {' '.join(inherit)}")
    print(
        f"option lines: {total}; equal to the method's default: {at_default}; equal to the value they inherit: "
        f"{at_inherited}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
