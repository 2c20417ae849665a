"""The ``wsss`` command line: a thin layer over the public API (docs/cli.md), one module per group of commands.

Every command is one library call. A user error (bad data, bad config, a missing file) fails with a message
naming the file and the problem and a non-zero exit code; an unexpected exception shows its traceback.
``python -m wsss``, ``python -m wsss.cli`` and ``torchrun -m wsss train ...`` all run ``main``.

- :mod:`.program`: the parser of every command, :func:`main` (errors, signals, exit);
- :mod:`.options`: the pieces the parsers share (typed flags for config keys, a run's options);
- :mod:`.data` (synth, check-data, prepare, data fetch), :mod:`.train` (train, import, config show),
  :mod:`.infer` (cam, sweep-bkg, pseudo, predict, tag), :mod:`.results` (eval, report, viz),
  :mod:`.export`, :mod:`.route`: each group's commands and their parsers.
"""

from wsss.cli.data import FETCH_DATASETS
from wsss.cli.options import RUN_OVERRIDES, LazyChoices, add_setting, override_words
from wsss.cli.program import EPILOG, _show_warning_line, build_parser, main, parse_args

__all__ = [
    "EPILOG",
    "FETCH_DATASETS",
    "RUN_OVERRIDES",
    "_show_warning_line",
    "LazyChoices",
    "add_setting",
    "build_parser",
    "main",
    "override_words",
    "parse_args",
]
