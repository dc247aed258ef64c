"""A process's state, CPU time and resident memory from /proc/<pid>/stat (Linux).

One small read per process (a status of many workers asks once per worker), without
psutil's import cost in the CLI.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

__all__ = ["CpuMeter", "ProcStat", "read_stat"]

_TICK_S = 1 / os.sysconf("SC_CLK_TCK")  # utime and stime are in clock ticks
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")  # rss is in pages


class ProcStat(NamedTuple):
    state: str  # "R", "S", "D", ...; "Z" zombie (exited, not reaped), "X" dead
    cpu_s: float  # user + system CPU time so far
    rss_bytes: int


def read_stat(pid: int) -> ProcStat | None:
    """None when there is no such process; OSError where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses; the fields after the
    # last ")" are state (3rd of the line), ..., utime, stime (14th, 15th), ..., rss (24th)
    rest = fields[fields.rfind(b")") + 2:].split()
    return ProcStat(rest[0].decode(), (int(rest[11]) + int(rest[12])) * _TICK_S,
                    int(rest[21]) * _PAGE_BYTES)


class CpuMeter:
    """CPU use of processes in % of one core, each since its previous reading (as psutil's
    ``cpu_percent(None)``): 0.0 at a process's first reading."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[float, float]] = {}  # pid -> (CPU seconds, monotonic s)

    def percent(self, pid: int, stat: ProcStat) -> float:
        now = time.monotonic()
        before = self._last.get(pid)
        self._last[pid] = (stat.cpu_s, now)
        if before is None or now <= before[1]:
            return 0.0
        return round(max(0.0, 100 * (stat.cpu_s - before[0]) / (now - before[1])), 1)

    def keep_only(self, pids: set[int]) -> None:
        """Forget every other process (gone, or replaced by a restart)."""
        for pid in set(self._last) - pids:
            del self._last[pid]
