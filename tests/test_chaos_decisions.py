"""Chaos: the orchestrator SIGKILLed again and again under the replay and the synthetic feed
at speed, `up` each time; then the journal must show one decision per symbol per bar, BUY and
SELL fills alternating per symbol, and positions equal to what the fills add up to.

Before the feed cursor was journaled with each step (it was saved once a second), every crash
re-sent up to a second of bars and the new workers traded them again.
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

from tests.invariants import (
    assert_all_final,
    assert_never_doubled,
    assert_one_decision_per_bar,
    fill_positions,
)
from tests.support import FleetCli, eventually, record_figures

pytestmark = [pytest.mark.process, pytest.mark.chaos]

SYMBOLS = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "SOLUSDT")  # bundled 1m data for replay
FLEET = ("--speed", "40", "-s", "sma_cross:fast=2,slow=5", "--max-restarts", "1000")
KILLS = 4


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _none_alive(pids: list[int]) -> bool:
    return not any(_alive(p) for p in pids)


def _warmup_position(home: Path, symbol: str) -> Decimal:
    """The position the newest worker of ``symbol`` was handed by the broker at start."""
    log = (home / "logs" / f"{symbol}.log").read_text()
    return Decimal(re.findall(r"warmed up on \d+ bars; target \w+, position (\S+)", log)[-1])


@pytest.mark.parametrize("feed", ["replay", "synthetic"])
def test_orchestrator_kills_never_make_a_bar_traded_twice(fleet: FleetCli, feed: str) -> None:
    rng = random.Random(int(os.environ.get("MULTIBOT_CHAOS_SEED", "20261207")))
    db = fleet.home / "multibot.db"
    at_kill: dict[str, Decimal] = {}
    for _ in range(KILLS):
        fleet.up(*SYMBOLS, "--feed", feed, *FLEET)
        for symbol in SYMBOLS:  # each new worker starts from the journal's position
            assert _warmup_position(fleet.home, symbol) == at_kill.get(symbol, Decimal(0))
        time.sleep(rng.uniform(1.5, 3.0))  # decisions in flight at a random moment
        orchestrator = fleet.orchestrator_pid()
        pids = [w["pid"] for w in fleet.workers().values()]
        assert orchestrator is not None
        os.kill(orchestrator, signal.SIGKILL)
        eventually(functools.partial(_none_alive, [orchestrator, *pids]), timeout=10,
                   what="the orchestrator and its orphaned workers to exit")
        at_kill = fill_positions(db)
    fleet.up(*SYMBOLS, "--feed", feed, *FLEET)
    time.sleep(1.0)  # the re-sent bars, if any, would come now
    fleet.run("kill", *SYMBOLS, check=True)  # trading stops: now everything must add up
    journaled = fill_positions(db)
    workers = fleet.workers()
    for symbol in SYMBOLS:  # the broker's positions, rebuilt from the journal
        assert Decimal(str(workers[symbol]["position"])) == journaled.get(symbol, Decimal(0))
    duplicates = sum(w["duplicate_bars"] for w in workers.values())
    fleet.run("down", check=True)
    assert_all_final(db)
    decisions = assert_one_decision_per_bar(db)
    assert_never_doubled(db)  # BUY and SELL fills alternate, exit retries included
    assert duplicates == 0  # no live bar was ever sent twice
    assert decisions > 4 * len(SYMBOLS)  # orders really flowed across the kills
    record_figures({f"orchestrator_kills_{feed}": KILLS, f"decisions_{feed}": decisions})
