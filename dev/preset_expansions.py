"""Write the fully resolved form of every shipped preset to tests/core/preset_expansions.json.

    .venv/bin/python dev/preset_expansions.py            # rewrite the fixture
    .venv/bin/python dev/preset_expansions.py --check    # exit 1 if a preset no longer expands to it

tests/core/test_presets.py compares every preset with this file, so a preset rewritten as a delta
(``_base_``) cannot drop or change a setting unnoticed. Regenerate it only when a change of a
resolved setting is intended (a new schema default, a preset retuned), and say so in the commit.

A preset's expansion is its :class:`~wsss.core.config.Config` as a plain dict, with ``options``
resolved through the method's ``Options`` dataclass (defaults filled in): an option removed from a
preset because it restated its default expands to the same value.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from wsss.cli_common import script_parser

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
FIXTURE = REPO / "tests" / "core" / "preset_expansions.json"


def preset_names() -> list[str]:
    """Every shipped preset, as its path relative to the repository (``configs/cam/voc.yaml``); the parts in
    ``configs/_base_/`` that presets are composed of are not presets."""
    return [p.relative_to(REPO).as_posix() for p in sorted(CONFIGS.rglob("*.yaml")) if "_base_" not in p.parts]


def expand_preset(name: str | Path) -> dict[str, Any]:
    """The resolved settings of preset ``name`` (a path, relative to the repository or absolute), JSON-ready."""
    from wsss.core.config import from_dict, load_config
    from wsss.methods import get_method_class

    cfg = load_config(REPO / name)
    expanded = cfg.to_dict()
    options = from_dict(get_method_class(cfg.method).Options, cfg.options, "options")
    expanded["options"] = json.loads(json.dumps(dataclasses.asdict(options)))  # tuples -> lists
    return expanded


def expand_all() -> dict[str, dict[str, Any]]:
    return {name: expand_preset(name) for name in preset_names()}


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__)
    parser.add_argument("--check", action="store_true", help="compare with the fixture instead of writing it")
    args = parser.parse_args(argv)
    expanded = expand_all()
    if args.check:
        recorded = json.loads(FIXTURE.read_text())
        differ = sorted(n for n in set(expanded) | set(recorded) if expanded.get(n) != recorded.get(n))
        for name in differ:
            print(f"{name}: differs from {FIXTURE.relative_to(REPO)}")
        return 1 if differ else 0
    from wsss.core.files import atomic_write

    with atomic_write(FIXTURE, "w") as f:
        json.dump(expanded, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {FIXTURE.relative_to(REPO)} ({len(expanded)} presets)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
