"""The valid values of a setting, declared beside it in the schema (:class:`Valid`, :func:`setting`), and the
kinds of setting most fields are."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Valid:
    """What values a setting takes: a number in ``[lo, hi]`` (an end left out by ``lo_open`` / ``hi_open``; the
    default ``hi`` is infinity, left out: a number is finite), one of ``choices``, or a string matching
    ``pattern``. A list or tuple setting holds values of that kind each, at least one of them (``nonempty``), the
    first no larger than the second (``ascending``: a pair that is a range); a mapping setting holds them as its
    values. ``text`` is what the value must be, for the message (default: the range written out).

    Declared with :func:`setting` beside the field; :func:`check_value` is the one check of it, run by
    :func:`from_dict` on every config file, run ``config.yaml``, override and method ``options`` it builds, by
    :func:`check_settings` on a Config built in code, and by the command-line flags that set a key."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = True
    choices: tuple[Any, ...] = ()
    pattern: str = ""
    nonempty: bool = False
    ascending: bool = False
    text: str = ""

    def describe(self) -> str:
        """What a value must be, in words ("a number in (0, 1]", "one of sgd, adamw")."""
        if self.text:
            return self.text
        if self.choices:
            return "one of " + ", ".join(str(c) for c in self.choices)
        lo = "-inf" if self.lo == -math.inf else f"{self.lo:g}"
        hi = "inf" if self.hi == math.inf else f"{self.hi:g}"
        return f"a number in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"

    def admits(self, value: Any) -> bool:
        """Whether one value (not a list's) is valid."""
        if self.choices:
            return value in self.choices
        if self.pattern:
            return isinstance(value, str) and re.fullmatch(self.pattern, value) is not None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        above = self.lo < value if self.lo_open else self.lo <= value  # NaN fails every comparison
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below


def setting(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None, **valid: Any) -> Any:
    """A schema field with its valid values (:class:`Valid`'s keywords) in ``metadata["valid"]``."""
    meta = {"valid": Valid(**valid)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# the kinds of setting most fields are
POSITIVE: dict[str, Any] = {"lo": 1, "text": "a positive integer"}  # a count, a size, a period
NON_NEGATIVE: dict[str, Any] = {"lo": 0, "text": "0 or more"}
POSITIVE_NUMBER: dict[str, Any] = {"lo": 0, "lo_open": True, "text": "a positive number"}
NON_NEGATIVE_NUMBER: dict[str, Any] = {"lo": 0, "text": "a number of 0 or more"}
# Levels of the normalised CAMs (maps in [0, 1]): a level of 2 or -1 turns every seed into background, or none
LEVEL: dict[str, Any] = {
    "lo": 0,
    "hi": 1,
    "hi_open": False,
    "text": "a level between 0 and 1 (the CAMs are normalised to [0, 1])",
}
# An image side in pixels: above the largest side a JPEG can have (65535) no image or crop is meant, and a typo
# like data.crop_size=100000000000 failed after the training had started ("ValueError: array is too big")
MAX_SIDE = 65535
SIDE: dict[str, Any] = {
    "lo": 1,
    "hi": MAX_SIDE,
    "hi_open": False,
    "text": f"a side of 1 to {MAX_SIDE} pixels (a JPEG's largest)",
}
SCALES: dict[str, Any] = {"lo": 0, "lo_open": True, "nonempty": True, "text": "a non-empty list of positive scales"}
FRACTION: dict[str, Any] = {"lo": 0, "hi": 1, "hi_open": False, "text": "a number in [0, 1]"}
SHARE: dict[str, Any] = {
    "lo": 0,
    "lo_open": True,
    "hi": 1,
    "hi_open": False,
    "text": "a number in (0, 1]",
}  # a part of a whole
# a random crop's area range (the smallest and the largest share of the image)
AREA_RANGE: dict[str, Any] = {**SHARE, "ascending": True, "text": "two area fractions in (0, 1], the smaller first"}
POSITIVE_INTS: dict[str, Any] = {"lo": 1, "nonempty": True, "text": "a non-empty list of positive integers"}
SEED: dict[str, Any] = {
    "lo": 0,
    "hi": 2**32 - 1,
    "hi_open": False,
    "text": "an integer from 0 to 4294967295 (numpy's seeds)",
}


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value
