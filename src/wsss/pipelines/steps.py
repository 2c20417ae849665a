"""The step runner of a pipeline's folder: its settings record, its lock, each step timed and logged, and what a rerun
needs to resume. ``wsss route`` (:mod:`wsss.pipelines.route`) and experiments/real_route.py both run their steps
through it."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from wsss.core.config import is_execution_word
from wsss.core.errors import DataError, UsageError
from wsss.core.files import atomic_write

T = TypeVar("T")
STEPS_LOG = "steps.jsonl"


@dataclass
class Step:
    """One step: its title, the ``wsss`` command a user would type for it, and its work."""

    title: str
    command: str
    work: Callable[[], Any] = field(repr=False)


def computed_words(words: Sequence[str]) -> list[str]:
    """The ``KEY=VALUE`` words that change what a step computes (those of ``core.config.EXECUTION_KEYS`` left out:
    where and how fast it runs)."""
    return [w for w in words if not is_execution_word(str(w))]


def changed_settings(mine: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """The keys whose values differ between two settings records, sorted."""
    return sorted(k for k in {*mine, *theirs} if mine.get(k) != theirs.get(k))


class StepRunner:
    """The steps of the folder ``out``: :meth:`lock` it, :meth:`settle` and :meth:`record` its settings, :meth:`run`
    each step (timed, a line of ``OUT/steps.jsonl``; with ``transcript``, its output and exit status appended to
    that file after ``$ COMMAND``, as a shell log reads)."""

    def __init__(self, out: str | Path, *, command: str, record: str = "route.json", transcript: Path | None = None):
        self.out = Path(out)
        self.command = command
        self.record_file = self.out / record
        self.transcript = transcript
        self.times: dict[str, float] = {}

    def lock(self) -> contextlib.AbstractContextManager[Any]:
        """One run at a time in ``out`` (``wsss.utils.runlock``)."""
        from wsss.utils.runlock import run_dir_lock

        return run_dir_lock(self.out, command=self.command, option="--out")

    def recorded(self) -> dict[str, Any] | None:
        """The settings ``out``'s record holds, None without one (a DataError when it is no record)."""
        if not self.record_file.is_file():
            return None
        try:
            return dict(json.loads(self.record_file.read_text())["settings"])
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{self.record_file}: not a route's record ({e!r}); use another --out") from None

    def settle(self, mine: dict[str, Any], *, overwrite: bool, own: Sequence[str], inputs: Sequence[Path]) -> None:
        """``mine`` checked against the recorded settings: others are refused, naming them, unless ``overwrite``
        (the folder's own outputs ``own`` are then removed, unless an input lies inside one)."""
        theirs = self.recorded()
        changed = changed_settings(mine, theirs) if theirs is not None else []
        if theirs is None or not changed:
            return
        if not overwrite:
            listing = "; ".join(f"{k}: {theirs.get(k)!r} -> {mine.get(k)!r}" for k in changed)
            raise UsageError(f"{self.record_file}: this route was run with other settings ({listing}); rerun it as it "
                             "was to continue it, pass --overwrite to make it again with these (the route's outputs "
                             "in that folder are replaced), or use another --out")  # fmt: skip
        owned = [self.out / name for name in own if (self.out / name).exists()]
        inside = [(g, o) for g in (p.resolve() for p in inputs) for o in owned if g.is_relative_to(o.resolve())]
        if inside:
            raise UsageError(f"{inside[0][0]}: an input of this command inside {inside[0][1]}, which --overwrite "
                             "would make again; copy it elsewhere first")  # fmt: skip
        for path in owned:
            shutil.rmtree(path) if path.is_dir() else path.unlink()

    def record(self, settings: dict[str, Any], **extra: Any) -> None:
        with atomic_write(self.record_file, "w") as f:
            f.write(json.dumps({"settings": settings, **extra}, indent=1) + "\n")

    def run(self, title: str, command: str, work: Callable[[], T]) -> tuple[T, float]:
        """``work`` timed; a stopped step's time logged too (the log sums a step's seconds over the runs it took);
        its result and its wall seconds."""
        start, finished = time.monotonic(), False
        try:
            with self._transcribed(command):
                result = work()
            finished = True
        finally:
            self.times[title] = time.monotonic() - start
            self._log(title, self.times[title], finished)
        return result, self.times[title]

    @contextlib.contextmanager
    def _transcribed(self, command: str) -> Iterator[None]:
        if self.transcript is None:
            yield
            return
        t, code = time.perf_counter(), 1
        with open(self.transcript, "a") as out:
            out.write(f"$ {command}\n")
            out.flush()
            try:
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                    yield
                code = 0
            except KeyboardInterrupt as e:
                code = 128 + (signal.SIGTERM if getattr(e, "signum", None) == signal.SIGTERM else signal.SIGINT)
                raise
            except Exception as e:
                code = int(getattr(e, "exit_code", 1))
                out.write(f"error: {e}\n")
                raise
            finally:
                out.write(f"# ended {time.strftime('%H:%M:%S')}, {time.perf_counter() - t:.1f} s, exit {code}\n")

    def _log(self, title: str, seconds: float, finished: bool) -> None:
        line = {"step": title, "seconds": round(seconds, 3), "finished": finished, "at": time.strftime("%FT%T%z")}
        with open(self.out / STEPS_LOG, "a") as f:
            f.write(json.dumps(line) + "\n")

    def seconds_over_runs(self) -> dict[str, float]:
        """Each step's wall seconds summed over every run (``OUT/steps.jsonl``): a run stopped and continued costs
        what its runs cost together."""
        total: dict[str, float] = {}
        log = self.out / STEPS_LOG
        for line in log.read_text().splitlines() if log.is_file() else []:
            try:
                entry = json.loads(line)
            except ValueError:  # a line a kill cut short: that run's time of the step is lost, not the log
                continue
            total[entry["step"]] = total.get(entry["step"], 0.0) + float(entry["seconds"])
        return total
