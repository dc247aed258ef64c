"""Process facts for `multibot status`: CPU use and resident memory read from /proc."""

from __future__ import annotations

import contextlib
import select
import subprocess
import sys
import time

import psutil

from orchestrator.procstat import CpuMeter, read_stat
from tests.support import eventually

BURN = "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end: pass\n"


def _child(code: str) -> subprocess.Popen[bytes]:
    """A Python child running ``code`` once it has started up (so its memory is settled)."""
    child = subprocess.Popen([sys.executable, "-c", f"print(flush=True)\n{code}"],
                             stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 30)
        assert ready, "the child did not start"
        child.stdout.readline()
    except BaseException:
        _stop(child)
        raise
    return child


def _stop(child: subprocess.Popen[bytes]) -> None:
    child.kill()
    child.wait()
    if child.stdout is not None:
        child.stdout.close()


def test_read_stat_gives_what_psutil_gives() -> None:
    sleeper = _child("import time; time.sleep(30)")
    try:
        stat = read_stat(sleeper.pid)
        assert stat is not None and stat.state in ("S", "R")
        proc = psutil.Process(sleeper.pid)
        times, rss = proc.cpu_times(), proc.memory_info().rss
        assert abs(stat.cpu_s - (times.user + times.system)) <= 0.05
        assert abs(stat.rss_bytes - rss) <= 0.1 * rss and stat.rss_bytes > 2**20
    finally:
        _stop(sleeper)
    assert read_stat(sleeper.pid) is None  # reaped: no such process


def test_cpu_meter_tells_a_busy_process_from_an_idle_one() -> None:
    with contextlib.ExitStack() as stack:
        busy = _child(BURN)
        stack.callback(_stop, busy)
        idle = _child("import time; time.sleep(30)")
        stack.callback(_stop, idle)
        meter = CpuMeter()
        for proc in (busy, idle):
            stat = read_stat(proc.pid)
            assert stat is not None and meter.percent(proc.pid, stat) == 0.0  # first reading
        started = time.monotonic()
        eventually(lambda: time.monotonic() - started > 0.5 and _percent(meter, busy) > 40,
                   what="the busy child's CPU use over 40% of a core")
        assert _percent(meter, idle) < 10
        meter.keep_only({busy.pid})
        stat = read_stat(idle.pid)
        assert stat is not None and meter.percent(idle.pid, stat) == 0.0  # forgotten: anew


def _percent(meter: CpuMeter, proc: subprocess.Popen[bytes]) -> float:
    stat = read_stat(proc.pid)
    assert stat is not None
    return meter.percent(proc.pid, stat)
