"""The step runner of a pipeline's folder: its settings record, its lock, each step timed and logged, and what a rerun
needs to resume. ``wsss route`` (:mod:`wsss.pipelines.route`) and experiments/real_route.py both run their steps
through it."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from wsss.core.config import is_execution_word
from wsss.core.errors import DataError, UsageError
from wsss.core.files import atomic_write
from wsss.utils import cpuload
from wsss.utils.runlock import JOB_LOCK_FILE, LOCK_FILE

T = TypeVar("T")
STEPS_LOG = "steps.jsonl"


@dataclass(frozen=True)
class Setting:
    """One ``KEY=VALUE`` setting of a config, its value typed (a path, a number, a word; None is ``null``)."""

    key: str
    value: Any

    @property
    def word(self) -> str:
        return f"{self.key}={'null' if self.value is None else self.value}"


@dataclass(frozen=True)
class Command:
    """A ``wsss`` command as typed values: ``wsss NAME ARGS OPTIONS WORDS``. An option's value: True is a flag,
    False or None leaves it out, a pair of numbers is ``HIGH/LOW``, a list is its items; a word is a
    :class:`Setting` or a user's ``KEY=VALUE`` word as given. What a user reads, the argv of another process and the
    in-process call are rendered from it."""

    name: tuple[str, ...]  # ("predict",), ("prepare", "folder")
    args: tuple[str | Path, ...] = ()
    options: tuple[tuple[str, Any], ...] = ()
    words: tuple[Setting | str, ...] = ()

    def option(self, flag: str) -> Any:
        """The value of ``flag`` (None where not given)."""
        return dict(self.options).get(flag)

    def setting(self, key: str) -> Any:
        """The value of the setting ``key`` (None where not given)."""
        return next((w.value for w in self.words if isinstance(w, Setting) and w.key == key), None)

    def word_list(self, leave_out: Sequence[str] = ()) -> list[str]:
        """The ``KEY=VALUE`` words, those of the keys ``leave_out`` left out."""
        words = [w.word if isinstance(w, Setting) else w for w in self.words]
        return [w for w in words if w.partition("=")[0].strip() not in leave_out]

    def argv(self) -> list[str]:
        """The command's arguments after ``wsss``."""
        out = [*self.name, *map(str, self.args)]
        for flag, value in self.options:
            if value is True:
                out.append(flag)
            elif value is None or value is False:
                continue
            elif isinstance(value, tuple):  # a pair of levels
                out += [flag, "/".join(f"{v:g}" for v in value)]
            elif isinstance(value, list):
                out += [flag, *map(str, value)]
            else:
                out += [flag, str(value)]
        return [*out, *self.word_list()]

    def text(self) -> str:
        """The command as a user types it."""
        return " ".join(["wsss", *self.argv()])


@dataclass(frozen=True)
class Step:
    """One step: its title, the ``wsss`` commands it stands for (typed), the folders and files it writes, and its
    work, the in-process call of those commands. ``note``: what it does where it stands for no command of its own
    (the route's folds)."""

    title: str
    commands: tuple[Command, ...]
    work: Callable[[], Any] = field(repr=False, compare=False)
    outputs: tuple[Path, ...] = ()
    note: str = ""

    @property
    def command(self) -> str:
        """What a user would type for it."""
        return " && ".join(c.text() for c in self.commands) if self.commands else f"({self.note})"


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
        self.others: dict[str, float | None] = {}  # each step's share of the cores other processes kept busy
        self.kept: list[Path] = []  # the files of the user's that :meth:`settle`'s --overwrite left in the own outputs

    def lock(self) -> contextlib.AbstractContextManager[Any]:
        """One run at a time in ``out`` (``wsss.utils.runlock``)."""
        from wsss.utils.runlock import run_dir_lock

        return run_dir_lock(self.out, command=self.command, option="--out")

    def recorded(self) -> dict[str, Any] | None:
        """The settings ``out``'s record holds, None without one (a DataError when it is no record)."""
        if not self.record_file.is_file():
            return None
        try:
            settings = json.loads(self.record_file.read_text())["settings"]
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            settings = None
        if not isinstance(settings, dict):
            raise DataError(
                f"{self.record_file}: not a route's record (no mapping of its settings: unreadable, or "
                "written by something else); use another --out"
            )
        return settings

    def recorded_field(self, key: str) -> Any:
        """A field of ``out``'s record beside its settings (:meth:`record`'s ``extra``); None without it."""
        try:
            return json.loads(self.record_file.read_text()).get(key)
        except (OSError, ValueError, AttributeError):
            return None

    def settle(
        self,
        mine: dict[str, Any],
        *,
        overwrite: bool,
        own: Sequence[str],
        inputs: Sequence[Path],
        shown: Mapping[str, Callable[[Any, Any], str]] | None = None,
    ) -> None:
        """``mine`` checked against the recorded settings: others are refused, naming them (``shown[key](old, new)``
        says how a setting changed, where given), unless ``overwrite`` (the files wsss made in the folder's own
        outputs ``own`` are then removed, :func:`remove_made`, unless an input lies inside one; a file of the user's
        there stays, listed in :attr:`kept`)."""
        theirs = self.recorded()
        changed = changed_settings(mine, theirs) if theirs is not None else []
        if theirs is None or not changed:
            return
        if not overwrite:
            say = shown or {}
            listing = "; ".join(
                f"{k}: {say[k](theirs.get(k), mine.get(k))}"
                if k in say
                else f"{k}: {theirs.get(k)!r} -> {mine.get(k)!r}"
                for k in changed
            )
            raise UsageError(
                f"{self.record_file}: this route was run with other settings ({listing}); rerun it as it "
                "was to continue it, pass --overwrite to make it again with these (the route's outputs "
                "in that folder are replaced), or use another --out"
            )
        owned = [self.out / name for name in own if (self.out / name).exists()]
        inside = [(g, o) for g in (p.resolve() for p in inputs) for o in owned if g.is_relative_to(o.resolve())]
        if inside:
            raise UsageError(
                f"{inside[0][0]}: an input of this command inside {inside[0][1]}, which --overwrite "
                "would make again; copy it elsewhere first"
            )
        kept = [k for path in owned for k in remove_made(path)]
        if kept:
            self.kept = kept

    def record(self, settings: dict[str, Any], **extra: Any) -> None:
        with atomic_write(self.record_file, "w") as f:
            f.write(json.dumps({"settings": settings, **extra}, indent=1) + "\n")

    def run(self, title: str, command: str, work: Callable[[], T]) -> tuple[T, float]:
        """``work`` timed; a stopped step's time logged too (the log sums a step's seconds over the runs it took);
        its result and its wall seconds."""
        start, finished, clocks = time.monotonic(), False, cpuload.sample()
        try:
            with self._transcribed(command):
                result = work()
            finished = True
        finally:
            self.times[title] = time.monotonic() - start
            self.others[title] = cpuload.others_share(clocks, cpuload.sample())
            self._log(title, self.times[title], finished, self.others[title])
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

    def _log(self, title: str, seconds: float, finished: bool, others: float | None = None) -> None:
        line = {"step": title, "seconds": round(seconds, 3), "finished": finished, "at": time.strftime("%FT%T%z")}
        if others is not None:  # the share of the cores other processes kept busy meanwhile (wsss.utils.cpuload)
            line["others_cpu"] = others
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


REBASED = ("config.yaml", ".settings.json")  # what records paths a rerun compares: a run's config, a job's stamp


def rebase_paths(out: Path, moves: Mapping[str, str]) -> list[Path]:
    """Each path of ``moves`` (old -> new: the pipeline's folder moved or copied, an input moved with its content
    kept) replaced where ``out`` records it for a rerun to compare (:data:`REBASED`: a run's saved config, a per-id
    job's settings stamp), a path under it too (``OLD/cls`` -> ``NEW/cls``); the files rewritten (atomically)."""
    if not moves:
        return []
    olds = "|".join(re.escape(old) for old in sorted(moves, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w.~/-])(?:{olds})(?=[/\\\"'\s,\]}}]|$)", re.M)  # a whole path, or one under it
    rewritten = []
    for path in sorted(p for name in REBASED for p in out.rglob(name) if p.is_file() and not p.is_symlink()):
        text = path.read_text(encoding="utf-8")
        new = pattern.sub(lambda m: moves[m.group(0)], text)
        if new != text:
            with atomic_write(path, "w") as f:
                f.write(new)
            rewritten.append(path)
    return rewritten


# The files a run folder holds of its own (docs/run-directory.md), by the folder they are in: the run's top, its
# checkpoints, its TensorBoard log, its report; a dataset's (`wsss prepare`, `wsss.data.views.make_view`) top.
_RUN_FILES = {"config.yaml", "config_changes.jsonl", "metrics.jsonl", "fold_score.json"}
_LOCKS = {LOCK_FILE, JOB_LOCK_FILE}  # a run's and a per-id job's: no outputs, removed with their folder
_DATA_FILES = {"classes.txt", "cls_labels.npy", "view.json", ".route_prepared", "JPEGImages"}


def remove_made(path: Path) -> list[Path]:
    """Remove the files wsss made under ``path`` (a pipeline's own output: a file, or a folder of runs, datasets and
    per-id outputs) and the folders left empty; return the files it did not make, which stay (a user's notes.txt in
    a run, a hand-drawn mask among the masks). The same rule as a per-id job's ``--overwrite``: its outputs are
    known files (``runs.stamps.job_files``), never a folder whole."""
    if not path.is_dir() or path.is_symlink():
        path.unlink(missing_ok=True)
        return []
    made = [
        p for d in [path, *sorted(p for p in path.rglob("*") if p.is_dir() and not p.is_symlink())] for p in _made_in(d)
    ]
    for p in made:
        p.unlink(missing_ok=True)
    for d in sorted((p for p in path.rglob("*") if p.is_dir() and not p.is_symlink()), key=lambda p: -len(p.parts)):
        _remove_if_empty(d)
    if _remove_if_empty(path):
        return []
    return sorted(p for p in path.rglob("*") if (not p.is_dir() or p.is_symlink()) and p.name not in _LOCKS)


def _remove_if_empty(folder: Path) -> bool:
    """Remove ``folder`` when nothing but a lock is left in it. A run's lock stays beside a file of the user's: the
    folder is then still a run (``utils.runlock.is_run_dir``), which the route trains into again."""
    if any(p.name not in _LOCKS for p in folder.iterdir()):
        return False
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    return True


def _made_in(folder: Path) -> list[Path]:
    """The files wsss made directly in ``folder`` (:func:`remove_made`), by what the folder is."""
    from wsss.core.files import is_temp_file
    from wsss.runs.stamps import SOURCES_FILE, STAMP_FILE, job_files

    if (folder / SOURCES_FILE).exists() or (folder / STAMP_FILE).exists():  # a per-id job's outputs
        return job_files(folder)
    files = [p for p in folder.iterdir() if p.is_file() or p.is_symlink()]
    return [p for p in files if is_temp_file(p.name) or _made_name(folder, p.name)]


def _made_name(folder: Path, name: str) -> bool:
    """Whether a file ``name`` in ``folder`` is one a run or a dataset of wsss holds there."""
    up = folder.parent
    if (folder / "config.yaml").is_file() or (folder / "checkpoints").is_dir():  # a run's top
        return name in _RUN_FILES
    if (folder / "ImageSets").is_dir():  # a dataset's top
        return name in _DATA_FILES
    if folder.name.startswith("checkpoints"):
        return name.endswith(".pt")
    if folder.name == "tensorboard":
        return name.startswith("events.out.tfevents.")
    if "report" in (folder.name, up.name, up.parent.name):  # a run's report: its page, figures, summary, fingerprint
        from wsss.report.html import REPORT_INPUTS

        return Path(name).suffix in (".html", ".png", ".json") or name == REPORT_INPUTS
    if up.name == "ImageSets":  # a dataset's split lists
        return name.endswith(".txt")
    if folder.name in ("JPEGImages", "SegmentationClass") and (up / "ImageSets").is_dir():  # its photos and masks
        ids = {i for lst in (up / "ImageSets" / "Segmentation").glob("*.txt") for i in lst.read_text().split()}
        return Path(name).stem in ids
    return False
