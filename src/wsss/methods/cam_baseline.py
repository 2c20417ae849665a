"""Deprecated: the CAM baseline's module is :mod:`wsss.methods.cam` (each built-in method became one package).

Kept so that an out-of-tree method that imported the old path (``from wsss.methods.cam_baseline import
CAMBaseline``) still runs: every name resolves to :mod:`wsss.methods.cam`'s own object, and the import warns
(DeprecationWarning, pointing at the importing line) with the path to use. docs/api.md lists the import paths a
plugin may rely on and the paths that moved.
"""

from __future__ import annotations

import warnings
from typing import Any

from wsss.methods import cam as _new
from wsss.methods.cam import CAMBaseline, CAMOptions

__all__ = ["CAMBaseline", "CAMOptions"]

# stacklevel 2: the line that imports this module (the import machinery's own frames are skipped by warnings)
warnings.warn(
    "wsss.methods.cam_baseline is deprecated: import wsss.methods.cam instead (the same names)",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:  # noqa: ANN401 - whatever the new module holds
    """Any other name of the old module (its imports too): the new module's."""
    try:
        return getattr(_new, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r} (nor has wsss.methods.cam)") from None
