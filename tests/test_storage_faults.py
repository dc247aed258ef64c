"""The journal cannot be written: trading halts safely, nothing is lost, and it resumes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.invariants import assert_all_final, assert_never_doubled
from tests.support import FleetCli, eventually, record_figures

pytestmark = pytest.mark.process


def _orders(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM orders").fetchone()[0])


def test_locked_journal_halts_trading_then_it_resumes(fleet: FleetCli) -> None:
    fleet.up("BTCUSDT", "ETHUSDT", "--speed", "20", "-s", "sma_cross:fast=3,slow=10")
    eventually(lambda: all(w["trades"] >= 2 for w in fleet.workers().values()), timeout=30,
               what="both symbols to trade")
    pids = {s: w["pid"] for s, w in fleet.workers().items()}
    locker = sqlite3.connect(Path(fleet.home) / "multibot.db", timeout=5,
                             isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")  # every write of the orchestrator now fails
        halted = eventually(lambda: (s := fleet.status())["orchestrator"]["journal_error"]
                            and s, timeout=10, what="the fleet to notice")
        assert "locked" in halted["orchestrator"]["journal_error"]
        assert all(w["halted"].startswith("journal unavailable") for w in halted["workers"])
        before = _orders(locker)
        bars = {s: w["bars"] for s, w in fleet.workers().items()}
        # the workers keep running (and signalling) but nothing reaches the book
        eventually(lambda: all(w["bars"] > bars[s] + 30 for s, w in fleet.workers().items()),
                   timeout=20, what="bars to flow while halted")
        assert _orders(locker) == before
        workers = fleet.workers()
        assert {s: w["pid"] for s, w in workers.items()} == pids
        assert all(w["state"] == "RUNNING" for w in workers.values())
        table = fleet.run("status", check=True).stdout
        assert "TRADING HALTED" in table and "HALTED (journal unavailable" in table
    finally:
        locker.rollback()
        locker.close()
    eventually(lambda: fleet.status()["orchestrator"]["journal_error"] == "", timeout=10,
               what="the halt to lift")
    trades = {s: w["trades"] for s, w in fleet.workers().items()}
    eventually(lambda: all(w["trades"] > trades[s] for s, w in fleet.workers().items()),
               timeout=30, what="trading to resume")
    fleet.run("down", check=True)
    db = fleet.home / "multibot.db"
    assert_all_final(db)
    assert_never_doubled(db)
    record_figures({"journal_faults_injected": 1, "orders_lost_in_journal_fault": 0})
