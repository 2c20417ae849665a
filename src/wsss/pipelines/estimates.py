"""How long each step of ``wsss route`` may take: a rate per unit of work for each step (seconds per training
iteration, per megapixel of the photos a per-photo step reads, per photo checked, per report), times the route's
own work.

The rates are this machine's where a route has run here: each finished step of a route records its seconds, its
work and the share of the cores other processes kept busy meanwhile (``wsss.utils.cpuload``) in a small file of the
user's (:func:`user_rates_file`: ``$XDG_CACHE_HOME/wsss/route_rates.json``, else ``~/.cache/wsss/``). A rate is
the seconds over the work of its last :data:`KEEP` measurements, of those taken while the cores were about as busy
as they are now (:data:`LOAD_BAND`): a step timed beside other jobs says little of the same step alone
(docs/speed.md#a-busy-machine). Elsewhere the shipped rates (``route_times.json`` beside this module;
docs/own-photos.md#what-to-expect says on which machine and under which load they were measured). A step of the
plan's own folder that a rerun skips (finished, and no ``--overwrite``) costs nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from wsss.core.files import atomic_write

TIMES_FILE = Path(__file__).with_name("route_times.json")
RATES_NAME = "route_rates.json"
# the user's file's form: measurements of another (per-photo steps per photo, before they were per megapixel) are
# left out, as a cache is
RATES_VERSION = 2
KEEP = 5  # measurements per rate kept: a machine's recent days, not its first
# measurements whose others' share of the cores is within this of the nearest one's to now count for a rate
LOAD_BAND = 0.15
ROUTES_KEPT = 50  # route folders named in the user's file, for "N runs"

Work = list[tuple[str, float]]  # (rate key, units of work) of one step; a step may take several rates
Measurement = tuple[float, float, float | None]  # seconds, units of work, others' share of the cores (None: unknown)


@cache
def _times() -> dict[str, Any]:
    return json.loads(TIMES_FILE.read_text())


def shipped() -> dict[str, float]:
    """Rate key -> seconds per unit of work, as measured for the package (:data:`TIMES_FILE`)."""
    return {k: float(r["seconds"]) / float(r["units"]) for k, r in _times()["rates"].items()}


def shipped_photo_megapixels() -> float:
    """The mean size of the photos the shipped rates were timed on: a photo of unknown size counts as one of them."""
    return float(_times()["photo_megapixels"])


def user_rates_file() -> Path:
    """The user's measured rates: ``$XDG_CACHE_HOME/wsss/route_rates.json``, else ``~/.cache/wsss/``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wsss" / RATES_NAME


def _read_user(path: Path) -> dict[str, Any]:
    """The user's file as written by :func:`record`; an empty one where it is missing or unreadable (a cache: it is
    made again, never a reason to stop a route)."""
    try:
        data = json.loads(path.read_text())
        if data.get("version") != RATES_VERSION:
            return {"rates": {}, "routes": []}
        rates = {str(k): [_measurement(m) for m in v] for k, v in dict(data["rates"]).items()}
        return {"rates": rates, "routes": [str(r) for r in data.get("routes", [])]}
    except (OSError, ValueError, KeyError, TypeError):
        return {"rates": {}, "routes": []}


def _measurement(m: Any) -> Measurement:
    """A measurement as the file holds it: ``[seconds, units]`` (written before the load was), or with the others'
    share of the cores."""
    return float(m[0]), float(m[1]), None if len(m) < 3 or m[2] is None else float(m[2])


def record(
    work: Work, seconds: float, route: str | os.PathLike, path: Path | None = None, others: float | None = None
) -> None:
    """One finished step's ``seconds`` for its ``work`` (a single rate: a step of several is not split), timed while
    other processes kept ``others`` of the cores busy, into the user's file, atomically. A file that cannot be
    written is left as it is: estimates are no output."""
    if len(work) != 1 or work[0][1] <= 0 or seconds <= 0:
        return
    path = path or user_rates_file()
    data = _read_user(path)
    key, units = work[0]
    data["rates"][key] = [*data["rates"].get(key, []), (round(seconds, 3), units, others)][-KEEP:]
    route = str(Path(route).resolve())
    data["routes"] = [*[r for r in data["routes"] if r != route], route][-ROUTES_KEPT:]
    try:
        with atomic_write(path, "w") as f:
            json.dump({"version": RATES_VERSION, **data}, f, indent=1, sort_keys=True)
    except OSError:  # a read-only home, a full disk: the next route has the shipped rates, no worse
        pass


@dataclass
class Rates:
    """Seconds per unit of work by rate key, and where they came from (printed under the plan)."""

    seconds: dict[str, float]
    measured: set[str]  # the keys measured on this machine
    runs: int  # routes that measured them
    others: float | None = None  # the share of the cores other processes keep busy now (None: unknown)

    def source(self, keys: Iterable[str]) -> str:
        keys = set(keys)
        mine = keys & self.measured
        now = "" if self.others is None else f"; other processes keep {self.others:.0%} of the cores busy now"
        if not mine:
            return f"the shipped rates: 2 idle cores, docs/own-photos.md#what-to-expect{now}"
        said = f"measured on this machine, {self.runs} run{'s' if self.runs != 1 else ''}"
        if self.others is not None:
            said += ", those timed at a load nearest now's"
        rest = keys - mine
        return said + ("" if not rest else f"; the shipped rates for {', '.join(sorted(rest))}") + now


def nearest_load(measurements: list[Measurement], others: float | None) -> list[Measurement]:
    """The measurements timed at a load like ``others`` (within :data:`LOAD_BAND` of the nearest); all of them
    where the load now or every measurement's is unknown."""
    known = [m for m in measurements if m[2] is not None]
    if others is None or not known:
        return measurements
    nearest = min(abs(m[2] - others) for m in known if m[2] is not None)
    return [m for m in known if m[2] is not None and abs(m[2] - others) <= nearest + LOAD_BAND]


def rates(path: Path | None = None, others: float | None = None) -> Rates:
    """This machine's measured rates over the shipped ones, each of the measurements nearest in load to ``others``
    (the share of the cores other processes keep busy now; None: of all)."""
    data = _read_user(path or user_rates_file())
    chosen = {k: nearest_load(v, others) for k, v in data["rates"].items() if v}
    mine = {k: sum(m[0] for m in v) / sum(m[1] for m in v) for k, v in chosen.items()}
    return Rates({**shipped(), **mine}, set(mine), len(data["routes"]), others)


def step_work(
    classifier: str,
    counts: Mapping[str, int],
    iterations: Mapping[str, int],
    device: str = "cpu",
    megapixels: float | None = None,
) -> dict[str, Work]:
    """Each step's work by its title. ``classifier``: the route's choice (``rca``, ``cam``, a preset's name);
    ``counts``: ``train``, ``val``, ``new`` (photos of ``--images``), ``folds``, ``masked_train``, ``rounds`` (of
    ``--rounds``) and ``abstain`` (1: the labels of ``--refine agree``); ``iterations``: per training
    (``classifier``, ``seg``) its iterations; ``device``: the presets' kind (``cpu``, ``gpu``), part of each
    key but the CPU's; ``megapixels``: a photo's mean size (None: the shipped rates' photos'), the unit of the
    per-photo steps (the CAMs, PAR and the CRF grow with the pixels)."""
    at = "" if device == "cpu" else f"@{device}"
    mp = megapixels or shipped_photo_megapixels()
    photos, train = (counts["train"] + counts["val"]) * mp, counts["train"] * mp
    checked = counts["train"] + counts["val"]
    seg: tuple[str, float] = (f"seg{at}", iterations["seg"])
    predict = f"masks{at}"
    folds = counts.get("folds", 0)
    return {
        "prepare": [(f"prepare{at}", checked)],
        "check": [(f"check{at}", checked)],
        "classifier": [(f"classifier/{classifier}{at}", iterations["classifier"])],
        "cam": [(f"cam/{classifier}{at}", train)],
        "pseudo": [(f"pseudo/{'agree' if counts.get('abstain') else 'par'}{at}", train)],
        # each fold trains both stages; each masked photo is held once and predicted by both
        "choice": [(seg[0], folds * 2 * seg[1]), (predict, 2 * counts.get("masked_train", 0) * mp)] if folds else [],
        "seg": [seg],
        "masks": [(predict, photos)],
        "report": [(f"report{at}", 1)],
        "new photos": [(predict, counts.get("new", 0) * mp)],
        # each round predicts the train photos as the masks step does, then trains the stage again
        **{
            title: work
            for r in range(1, counts.get("rounds", 0) + 1)
            for title, work in ((f"round {r} labels", [(predict, train)]), (f"round {r}", [seg]))
        },
    }


def step_estimates(work: Mapping[str, Work], known: Rates) -> dict[str, float | None]:
    """Seconds per step title (None: a rate of it was never measured, here nor for the package)."""
    out: dict[str, float | None] = {}
    for title, parts in work.items():
        missing = [k for k, _ in parts if k not in known.seconds]
        out[title] = None if missing else sum(known.seconds[k] * units for k, units in parts)
    return out


def read_step_log(log: Path) -> tuple[set[str], dict[str, float]]:
    """From a route's ``steps.jsonl``: the titles that finished (a rerun of that route skips their work), and each
    title's seconds logged after its last finished line (the stopped runs of a step not yet finished)."""
    done: set[str] = set()
    pending: dict[str, float] = {}
    for line in log.read_text().splitlines() if log.is_file() else []:
        try:
            entry = json.loads(line)
            title, seconds, finished = str(entry["step"]), float(entry["seconds"]), bool(entry.get("finished"))
        except (ValueError, KeyError, TypeError):  # a line a kill cut short
            continue
        if finished:
            done.add(title)
            pending.pop(title, None)
        else:
            pending[title] = pending.get(title, 0.0) + seconds
    return done, pending
