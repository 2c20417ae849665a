"""Peak memory of a benchmark process, shared by the bench scripts (run as ``python bench/<script>.py``,
so this file is importable beside them)."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_gib() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent across fork + exec)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
