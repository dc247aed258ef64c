"""The benchmark suite stays runnable: its smoke run (tiny sizes, nothing timed is asserted)
produces every row of its table and leaves no process behind."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from bench.backtest_figures import parse
from bench.common import processes_mentioning

REPO = Path(__file__).resolve().parents[1]
ROWS = [
    "p50 (burst of 3 bars)", "p99 (one bar at a time)", "bars without an intent",
    "1 worker: bars/s delivered", "2 workers: bars lost", "2 workers, product HWMs: bars/s",
    "up 2: all RUNNING", "up 4: all RUNNING", "4 workers: worker USS, max",
    "4 workers: worker PSS, median", "4 workers: orchestrator RSS", "4 workers: idle CPU",
    "4 symbols: whole process", "4 symbols: kill -> RUNNING",
]


@pytest.fixture
def workdir() -> Iterator[Path]:
    """Short (ipc:// paths), and whatever names it is killed afterwards, pass or fail."""
    path = Path(tempfile.mkdtemp(prefix="mbbt-", dir="/tmp"))
    try:
        yield path
    finally:
        for proc in processes_mentioning(path):
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGKILL)
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.process
def test_smoke_run_produces_every_row_and_leaves_no_process(workdir: Path) -> None:
    out = workdir / "BENCHMARKS.md"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--smoke", "--only",
         "latency,fanout,scale", "--out", str(out), "--workdir", str(workdir)],
        capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = out.read_text()
    for row in ROWS:
        assert row in proc.stdout, row
        assert row in report, row
    assert "## Machine" in report and "pyzmq / libzmq" in report
    assert "### latency" in report and "### fan-out" in report  # the profiles ran too
    assert "none was left at the end" in report
    assert processes_mentioning(workdir) == []
    kept = {p.name for p in workdir.iterdir()}
    assert kept == {"BENCHMARKS.md", "BENCHMARKS.json"}  # the workspace itself is removed


def test_backtest_output_is_parsed_into_ratios_against_backtesting_py() -> None:
    output = """BTCUSDT 1m: 40,000 bars
engine                              median bars/s        spread (min-max)  median s  trades
multibot, in-process                       51,347           51,347-51,347     0.779     806
multibot, process per symbol               47,649           47,649-47,649     0.839     806
backtesting.py 0.6.6                       40,247           40,247-40,247     0.994     806
  multibot, in-process: 1.28x backtesting.py
"""
    figures = {f.metric: f for f in parse(output)}
    assert set(figures) == {"BTCUSDT 1m: multibot, in-process",
                            "BTCUSDT 1m: multibot, process per symbol"}
    per_symbol = figures["BTCUSDT 1m: multibot, process per symbol"]
    assert per_symbol.value == 47_649 and per_symbol.floor == 40_247
    assert per_symbol.goal is not None and per_symbol.goal.limit == 5.0
