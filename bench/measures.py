"""What every benchmark measures with: percentiles and CPU time from /proc (steadier than
wall-clock rates on a shared, noisy machine)."""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    """The value at fraction `p` (0..1) of the sorted values (nearest rank, no interpolation)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def cpu_seconds(*pids: int | str, children: bool = False) -> float:
    """User + system CPU time used so far by these processes (this one when none is named);
    with `children`, also that of their waited-for children. A process gone counts nothing."""
    total = 0
    for pid in pids or ("self",):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15 if children else 13])  # utime, stime (cutime, cstime)
    return total / TICKS
