"""The journal cannot be written: trading halts safely, nothing is lost, and it resumes."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import psutil
import pytest

from tests.invariants import assert_all_final, assert_never_doubled
from tests.support import FleetCli, eventually, record_figures, where

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


@pytest.mark.parametrize("how", ["deleted", "replaced", "overwritten in place"])
def test_a_journal_deleted_or_replaced_under_the_fleet_halts_trading(
        fleet: FleetCli, how: str) -> None:
    fleet.up("BTCUSDT", "--speed", "20", "-s", "sma_cross:fast=3,slow=10")
    traded = eventually(lambda: where(fleet.workers(), lambda ws: ws["BTCUSDT"]["trades"] >= 2),
                        timeout=30, what="BTCUSDT to trade")
    pid = fleet.orchestrator_pid()
    db = fleet.home / "multibot.db"
    if how == "deleted":
        db.unlink()
    elif how == "replaced":  # another file renamed over it, as a careless restore would
        other = fleet.home / "other.db"
        other.write_bytes(b"")
        os.replace(other, db)
    else:  # same inode, other bytes: `cp backup.db multibot.db` (a copy of another journal)
        other = fleet.home / "other.db"
        with sqlite3.connect(other) as conn:
            conn.execute("PRAGMA application_id=7")
            conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        with open(db, "r+b") as file:
            file.truncate(0)
            file.write(other.read_bytes())
    halted = eventually(lambda: (s := fleet.status())["orchestrator"]["journal_error"] and s,
                        timeout=10, what="the fleet to notice")
    error = halted["orchestrator"]["journal_error"]
    assert f"was {how}" in error and "multibot down" in error, error
    assert all(w["halted"].startswith("journal unavailable") for w in halted["workers"])
    # the halt holds: bars flow, the orchestrator lives on, and no order reaches the book
    bars = fleet.workers()["BTCUSDT"]["bars"]
    later = eventually(lambda: where(fleet.workers(), lambda ws: ws["BTCUSDT"]["bars"] > bars + 40),
                       timeout=20, what="bars to flow while halted")
    assert later["BTCUSDT"]["halted"] and fleet.orchestrator_pid() == pid
    assert later["BTCUSDT"]["trades"] == halted["workers"][0]["trades"]
    assert fleet.status()["orchestrator"]["journal_error"]  # the probe never lifts it
    # what the open journal held was saved next to it, and the message says where
    rescued = [p for p in fleet.home.iterdir() if p.name.startswith("multibot.db.rescued-")]
    assert len(rescued) == 1 and str(rescued[0]) in error
    fleet.run("down", check=True)
    conn = sqlite3.connect(rescued[0])
    try:
        fills = conn.execute("SELECT count(*) FROM fills").fetchone()[0]
    finally:
        conn.close()
    assert fills >= traded["BTCUSDT"]["trades"]


@pytest.mark.parametrize(("content", "message"), [
    (b"", "is empty (0 bytes)"),
    (b"not a database, not at all " * 200, "is not a readable database"),
], ids=["empty", "not-a-database"])
def test_an_empty_or_corrupt_journal_is_refused_at_start(
        fleet: FleetCli, content: bytes, message: str) -> None:
    fleet.home.mkdir(parents=True)
    (fleet.home / "multibot.db").write_bytes(content)
    proc = fleet.run("up", "BTCUSDT", "--speed", "20")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert message in out and "Traceback" not in out, out
    log = (fleet.home / "logs" / "orchestrator.log").read_text()
    assert message in log and "Traceback" not in log, log
    assert (fleet.home / "multibot.db").read_bytes() == content  # left as it was
    eventually(lambda: not fleet.processes(), timeout=10, what="nothing left running")


def test_every_file_of_a_home_is_private_whatever_the_umask(fleet: FleetCli) -> None:
    previous = os.umask(0)  # inherited by the CLI, the orchestrator and its workers
    try:
        fleet.up("BTCUSDT", "ETHUSDT", "--speed", "20", "-s", "sma_cross:fast=3,slow=10")
    finally:
        os.umask(previous)
    eventually(lambda: where(fleet.workers(), lambda ws: all(w["trades"] >= 1
                                                             for w in ws.values())),
               timeout=30, what="both symbols to trade")
    names = {"multibot.db", "multibot.db-wal", "multibot.db-shm", "orchestrator.log",
             "BTCUSDT.log", "ETHUSDT.log", "orchestrator.pid"}
    found = {path.name: path.stat().st_mode for path in [fleet.home, *fleet.home.rglob("*")]}
    assert names <= set(found), sorted(found)
    public = {name: oct(mode) for name, mode in found.items() if mode & 0o077}
    assert not public


def test_a_fatal_signal_leaves_its_trace_in_the_log(fleet: FleetCli) -> None:
    """SQLite's shared memory file truncated or unwritable under it kills a process with
    SIGBUS: the orchestrator's log must say so, not end in silence."""
    fleet.up("BTCUSDT", "--speed", "20")
    pid = fleet.orchestrator_pid()
    assert pid is not None
    os.kill(pid, signal.SIGBUS)
    eventually(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie",
               timeout=10, what="the orchestrator to die of SIGBUS")
    log = (fleet.home / "logs" / "orchestrator.log").read_text()
    assert "Fatal Python error: Bus error" in log, log[-2000:]
    eventually(lambda: not fleet.processes(), timeout=15, what="its workers to exit")
