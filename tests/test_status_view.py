"""The status table as a user sees it: fitted to the terminal, consistent within a row,
saying what FAILED and how old the last error is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from multibot.cli.render import live_frame, status_table
from multibot.wire.protocol import Event, EventKind, OrchestratorStatus, StatusReport, WorkerStatus
from tests.support import FleetCli, eventually
from tests.test_supervision import CRASHING_STRATEGY

pytestmark = pytest.mark.process


def _env(columns: int) -> dict[str, str]:
    return dict(os.environ, COLUMNS=str(columns), LINES="24")


def test_status_fits_the_terminal_and_wide_shows_all(fleet: FleetCli, tmp_path: Path) -> None:
    path = tmp_path / "crashy.py"
    path.write_text(CRASHING_STRATEGY)
    fleet.up("BTCUSDT", "--max-restarts", "1", "--restart-window", "30",
             "-s", "sma_cross:fast=3,slow=10")
    assert fleet.run("up", "ETHUSDT", "-s", f"{path}:CrashOnStart").returncode == 1

    narrow = fleet.run("status", check=True, env=_env(80)).stdout
    lines = narrow.splitlines()
    assert max(len(line) for line in lines) <= 80, narrow
    header = next(line for line in lines if line.startswith("SYMBOL"))
    for kept in ("STATE", "POSITION", "REALIZED", "UNREAL"):
        assert kept in header, narrow
    assert "PID" not in header and "CPU%" not in header
    assert "FAILED: ETHUSDT" in lines[-1], narrow  # the summary says it, not only the row

    wide = fleet.run("status", "--wide", check=True, env=_env(80)).stdout
    header = next(line for line in wide.splitlines() if line.startswith("SYMBOL"))
    for column in ("PID", "STRATEGY", "CPU%", "RSS", "AVG ENTRY", "LAST ERROR"):
        assert column in header, wide
    btc = next(line for line in wide.splitlines() if line.startswith("BTCUSDT"))
    assert "sma_cross" in btc
    piped = dict(os.environ)
    piped.pop("COLUMNS", None)  # output to a pipe, no terminal: every column, for scripts
    assert "CPU%" in fleet.run("status", check=True, env=piped).stdout
    eth = next(line for line in wide.splitlines() if line.startswith("ETHUSDT"))
    assert "s ago: gave up after 2 exits" in eth, wide  # the error's age comes first
    assert fleet.workers()["ETHUSDT"]["last_error_age_s"] >= 0


def test_unrealized_pnl_agrees_with_the_price_on_its_row(fleet: FleetCli) -> None:
    """PRICE, AVG ENTRY, POSITION and UNREAL of one row are one snapshot: at 200 bars/s the
    last heartbeat's price lags the broker's by many bars."""
    fleet.up("BTCUSDT", "--speed", "200", "-s", "sma_cross:fast=2,slow=5")
    checked: list[float] = []

    def row_checked() -> bool:
        row = fleet.workers()["BTCUSDT"]
        if row["position"] and row["last_price"] is not None:
            expected = (row["last_price"] - row["avg_entry"]) * row["position"]
            assert row["unrealized_pnl"] == pytest.approx(expected, abs=1e-6), row
            checked.append(row["unrealized_pnl"])
        return len(checked) >= 15

    eventually(row_checked, timeout=60, interval=0.1, what="15 rows holding a position")
    assert fleet.workers()["BTCUSDT"]["tick_size"] == "0.01"  # AVG ENTRY is shown on it


def _report(width_error: str) -> StatusReport:
    orchestrator = OrchestratorStatus(
        pid=1, home="/home/someone/fleets/a-fleet-with-a-long-name", mode="paper",
        feed="replay", interval="1m", speed=10.0, uptime_s=5.0, started_ns=0,
        feed_time=1735759499999, feed_ended=False)
    worker = WorkerStatus(
        symbol="BTCUSDT", pid=4242, state="RUNNING", uptime_s=100.0, restarts=2,
        heartbeat_age_s=0.4, last_bar_time=1735759499999, last_price=94033.12, bars=10,
        foreign_bars=0, duplicate_bars=0, position=0.00123, worker_position=0.00123,
        avg_entry=94175.12, realized_pnl=1.5, unrealized_pnl=-0.17, open_orders=1, trades=3,
        last_error=width_error, last_error_age_s=330.0, halted="", cpu_percent=3.2,
        rss_bytes=30 * 2**20, strategies=["sma_cross:fast=2,slow=5"])
    return StatusReport(orchestrator=orchestrator, workers=[worker])


def test_avg_entry_is_shown_on_the_symbols_tick() -> None:
    report = _report("")
    worker = msgspec.structs.replace(report.workers[0], avg_entry=102919.22922923,
                                     tick_size="0.01000000")
    table = status_table(msgspec.structs.replace(report, workers=[worker]))
    row = next(line for line in table.splitlines() if line.startswith("BTCUSDT"))
    assert " 102919.23 " in row and "102919.229" not in row, row


def test_the_live_view_fits_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    event = Event(kind=EventKind.STATE, symbol="BTCUSDT", detail="RUNNING " + "x" * 100)
    frame = live_frame(_report("worker exited with code 255 " * 3), [(0, event)])
    assert max(len(line) for line in frame.splitlines()) <= 80, frame
    assert "5m ago: worker exited" in frame
    monkeypatch.setenv("COLUMNS", "300")
    assert "CPU%" in live_frame(_report(""), [])


def test_the_end_of_the_replay_data_is_logged_and_an_event(fleet: FleetCli) -> None:
    fleet.up("SOLUSDT", "--interval", "1d", "--speed", "500")  # 970 bars left after warm-up
    eventually(lambda: fleet.status()["orchestrator"]["feed_ended"], timeout=30,
               what="the replay to end")

    def ended_events() -> list[str]:
        with fleet.journal() as journal:
            return [row["detail"] for row in journal.execute(
                "SELECT detail FROM events WHERE kind = 'fleet' AND detail LIKE 'replay%'")]

    details = eventually(ended_events, what="the replay-ended event")
    assert details == ["replay data ended at 2026-01-01T00:00:00Z: no more bars; the fleet "
                       "keeps its positions and open orders until `multibot down`"]
    log = (fleet.home / "logs" / "orchestrator.log")
    eventually(lambda: "replay data ended at 2026-01-01T00:00:00Z" in log.read_text(),
               what="the log line")
    assert "(ended)" in fleet.run("status", check=True, env=_env(200)).stdout


def test_symbols_lists_the_dates_each_interval_covers() -> None:
    out = subprocess.run([sys.executable, "-m", "multibot.cli.app", "symbols"], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    assert "1m   2025-01-01 .. 2025-01-28  BTCUSDT ETHUSDT SOLUSDT XRPUSDT" in out, out
    assert "     2020-08-11 .. 2026-01-01  SOLUSDT" in out, out  # a later start: its own line


RAISER = '''
from strategies.base import Strategy


class Raiser(Strategy):
    name = "raiser"

    @property
    def warmup(self) -> int:
        return 1

    def on_bar(self, bar):
        raise ValueError("boom")
'''


def test_a_strategy_error_shows_its_age(fleet: FleetCli, tmp_path: Path) -> None:
    path = tmp_path / "raiser.py"
    path.write_text(RAISER)
    fleet.up("BTCUSDT", "-s", f"{path}:Raiser")
    row = eventually(lambda: (w := fleet.workers()["BTCUSDT"])["last_error"] and w,
                     timeout=30, what="the strategy's error in status")
    assert "strategy Raiser on the bar of " in row["last_error"]
    assert row["last_error"].endswith(": ValueError: boom")
    assert row["last_error_age_s"] is not None and row["last_error_age_s"] >= 0
