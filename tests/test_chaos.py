"""Chaos: random SIGKILLs of workers and of the orchestrator while orders flow.

Bounded in time (CI runs it). The figures each run produces are printed and, when
MULTIBOT_RELIABILITY_FIGURES names a file, merged into it (RELIABILITY.md quotes them).
"""

from __future__ import annotations

import functools
import os
import random
import re
import signal
import time
from decimal import Decimal
from pathlib import Path

import psutil
import pytest

from tests.invariants import assert_all_final, assert_never_doubled, fill_positions
from tests.support import FleetCli, eventually, record_figures, where

pytestmark = [pytest.mark.process, pytest.mark.chaos]

SYMBOLS = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "SOLUSDT", "BNBUSDT", "ADAUSDT", "DOGEUSDT",
           "LTCUSDT")
FAST = ("--feed", "synthetic", "--speed", "40", "-s", "sma_cross:fast=2,slow=5",
        "--max-restarts", "1000")
CHAOS_SECONDS = float(os.environ.get("MULTIBOT_CHAOS_SECONDS", "20"))


def _alive(pid: int) -> bool:
    try:  # (psutil has no type hints: its comparison is Any)
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _none_alive(pids: list[int]) -> bool:
    return not any(_alive(p) for p in pids)


def _final_worker_positions(home: Path) -> dict[str, Decimal]:
    """What each worker said it held as it stopped (the last line of its log says so)."""
    out = {}
    for symbol in SYMBOLS:
        found = re.findall(r"stopped; position (\S+)", (home / "logs" / f"{symbol}.log")
                           .read_text())
        out[symbol] = Decimal(found[-1])
    return out


def _warmup_position(home: Path, symbol: str) -> Decimal:
    """The position the newest worker of ``symbol`` was handed by the broker at start."""
    log = (home / "logs" / f"{symbol}.log").read_text()
    return Decimal(re.findall(r"warmed up on \d+ bars; target \w+, position (\S+)", log)[-1])


def test_random_worker_kills_lose_and_double_nothing(fleet: FleetCli) -> None:
    rng = random.Random(int(os.environ.get("MULTIBOT_CHAOS_SEED", "20261124")))
    fleet.up(*SYMBOLS, *FAST)
    orchestrator = fleet.orchestrator_pid()
    assert orchestrator is not None
    kills, killed_pids = 0, set()
    deadline = time.monotonic() + CHAOS_SECONDS
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.05, 0.6))
        running = [w for w in fleet.workers().values() if w["state"] == "RUNNING"]
        if not running:
            continue
        victim = rng.choice(running)
        try:
            os.kill(victim["pid"], signal.SIGKILL)
        except ProcessLookupError:
            continue
        kills += 1
        killed_pids.add(victim["pid"])
    assert _alive(orchestrator) and fleet.orchestrator_pid() == orchestrator

    workers = eventually(lambda: where(fleet.workers(), lambda ws: bool(ws) and all(
        w["state"] == "RUNNING" and w["pid"] not in killed_pids for w in ws.values())),
        timeout=30, what="every killed worker to come back")
    restarts = sum(w["restarts"] for w in workers.values())
    assert restarts >= kills * 0.9  # (a kill may land on a worker that was just replaced)

    fleet.run("kill", *SYMBOLS, check=True)  # stop trading: now everything must add up
    db = fleet.home / "multibot.db"
    journaled = fill_positions(db)
    reported = _final_worker_positions(fleet.home)
    for symbol, worker in fleet.workers().items():
        assert Decimal(str(worker["position"])) == journaled.get(symbol, Decimal(0)), symbol
        assert reported[symbol] == journaled.get(symbol, Decimal(0)), symbol
    fleet.run("down", check=True)
    assert fleet.processes() == []
    assert_all_final(db)
    assert_never_doubled(db)
    with fleet.journal() as journal:
        orders = journal.execute("SELECT count(*) FROM orders").fetchone()[0]
        fills = journal.execute("SELECT count(*) FROM fills").fetchone()[0]
    assert fills > 50  # orders really flowed while the kills happened
    record_figures({"worker_kills": kills, "worker_restarts": restarts,
                    "chaos_symbols": len(SYMBOLS),
             "chaos_seconds": CHAOS_SECONDS, "chaos_orders": orders, "chaos_fills": fills,
             "chaos_lost_or_doubled": 0})


def test_orchestrator_killed_at_random_moments_resumes_exactly(fleet: FleetCli) -> None:
    rng = random.Random(int(os.environ.get("MULTIBOT_CHAOS_SEED", "20261124")) + 1)
    symbols = SYMBOLS[:4]
    rounds = 4
    db = fleet.home / "multibot.db"
    at_kill: dict[str, Decimal] = {}
    for _ in range(rounds):
        fleet.up(*symbols, *FAST)
        for symbol in symbols:  # each new worker started from the journal's position
            assert _warmup_position(fleet.home, symbol) == at_kill.get(symbol, Decimal(0))
        time.sleep(rng.uniform(0.3, 2.0))  # orders in flight at a random moment
        orchestrator = fleet.orchestrator_pid()
        workers = [w["pid"] for w in fleet.workers().values()]
        assert orchestrator is not None
        os.kill(orchestrator, signal.SIGKILL)
        eventually(functools.partial(_none_alive, workers), timeout=10,
                   what="orphaned workers to exit")
        at_kill = fill_positions(db)
    second = fleet.up(*symbols, *FAST)  # no stale lock or socket blocks the restart
    assert "started orchestrator" in second.stdout
    fleet.run("down", check=True)
    assert_all_final(db)
    assert_never_doubled(db)
    with fleet.journal() as journal:
        expired = journal.execute(
            "SELECT count(*) FROM orders WHERE status = 'EXPIRED'").fetchone()[0]
    record_figures({"orchestrator_kills": rounds, "orders_expired_by_crash": expired})
