"""How busy other processes keep this machine's cores: the share of the cores (0 to 1) they used over a stretch of
time, from the machine's busy time (Linux's ``/proc/stat``) less this process's and its finished children's CPU
time (``os.times``). A route's estimates weigh its measured rates by it: a step timed while other jobs shared the
cores is slower than the same step alone, often by more than the share they took (docs/speed.md#a-busy-machine).
None where the machine's busy time cannot be read (not Linux)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")
# the fields of /proc/stat's "cpu" line counted busy: user nice system (idle iowait) irq softirq steal
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)


@dataclass(frozen=True)
class CpuSample:
    """The clocks at one moment: wall (monotonic), the machine's busy CPU seconds over all its cores (None where
    unreadable), this process's own with its finished children's, and the cores ``/proc/stat`` counts."""

    wall: float
    busy: float | None
    own: float
    cores: int


def _machine_busy(stat: Path = PROC_STAT) -> tuple[float | None, int]:
    """The busy CPU seconds of every core since boot, and the count of cores; (None, 0) where unreadable."""
    try:
        lines = stat.read_text().splitlines()
        fields = [int(v) for v in lines[0].split()[1:]]
        cores = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
        return sum(fields[i] for i in _BUSY_FIELDS if i < len(fields)) / os.sysconf("SC_CLK_TCK"), cores
    except (OSError, ValueError, IndexError, AttributeError):
        return None, 0


def sample(stat: Path = PROC_STAT) -> CpuSample:
    """The clocks now."""
    busy, cores = _machine_busy(stat)
    t = os.times()
    return CpuSample(time.monotonic(), busy, t.user + t.system + t.children_user + t.children_system, cores)


def others_share(before: CpuSample, after: CpuSample) -> float | None:
    """The share of the cores other processes kept busy between two samples (0 to 1; None where unknown)."""
    wall = after.wall - before.wall
    if before.busy is None or after.busy is None or wall <= 0 or not after.cores:
        return None
    others = (after.busy - before.busy) - (after.own - before.own)
    return round(min(1.0, max(0.0, others / (wall * after.cores))), 3)


def others_now(window: float = 0.25) -> float | None:
    """The share of the cores other processes keep busy now, over ``window`` seconds."""
    before = sample()
    if before.busy is None:
        return None
    time.sleep(window)
    return others_share(before, sample())
