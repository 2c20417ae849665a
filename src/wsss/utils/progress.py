"""The progress bars of the long jobs (training, cam / pseudo / predict): a live bar on a terminal, and where the
output goes to a file or a pipe (``wsss route ... 2> log``), a plain line now and then instead of a bar redrawn
with ``\\r`` many times a second, which fills a log with one endless line."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm import tqdm

__all__ = ["LOG_INTERVAL", "progress_bar"]

LOG_INTERVAL = 30.0  # seconds between two lines of a bar written to a file


_MOVES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # the cursor moves of a bar drawn below another


class _Lines:
    """A stream that turns tqdm's redraws (``\\r`` + the bar + padding) into one line each."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        for part in _MOVES.sub("", text).replace("\r", "\n").split("\n"):
            if part.strip():
                self.stream.write(part.rstrip() + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def progress_bar(iterable: Iterable[Any] | None = None, *, file: TextIO | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on ``file`` (default stderr): on a terminal as it is; elsewhere a line at most
    every :data:`LOG_INTERVAL` seconds (and the last), without the redraws."""
    stream = file if file is not None else sys.stderr
    if _is_terminal(stream):
        return tqdm(iterable, file=stream, **kwargs)
    kwargs.update(mininterval=LOG_INTERVAL, maxinterval=max(LOG_INTERVAL, kwargs.get("maxinterval", 0)))
    kwargs.pop("dynamic_ncols", None)
    return tqdm(iterable, file=_Lines(stream), ncols=100, **kwargs)
