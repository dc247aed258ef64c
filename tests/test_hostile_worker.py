"""A worker's own fields cannot stop its symbol or the fleet: a decision's ``bar_time`` beyond
the newest bar the feed has produced (a bar that does not exist yet) is refused before it is
journaled, so a buggy or hostile worker can neither lock its symbol out of every later
decision (each refused as stale) nor halt the whole fleet's trading with a number SQLite
cannot store. Real fleet, real worker process, real sockets."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import pytest

from multibot.wire.home import Home
from tests.backtest_support import strategy_file
from tests.support import FleetCli, eventually, worker_running

pytestmark = pytest.mark.process

FAR = 2**62  # fits SQLite: journaled, it would be the symbol's last decision for ever
HUGE = 2**64 - 1  # does not fit SQLite: the journal write fails

# Runs inside the worker: on its 3rd bar it sends, on the worker's own registered
# connection, two BUYs whose bar_time no feed has reached; then it trades normally (LONG and
# FLAT in turn every 2 bars), so its later decisions show whether the symbol still trades.
ROGUE = """\
import gc

from multibot.market.orders import OrderType, Side
from multibot.wire.protocol import PlaceOrder


class Rogue(Strategy):
    name = "rogue"
    warmup = 0

    def on_start(self):
        self.bars = 0

    def on_bar(self, bar):
        self.bars += 1
        if self.bars == 3:
            worker = next(o for o in gc.get_objects() if type(o).__name__ == "WorkerProcess")
            for seq, bar_time in ((900001, {far}), (900002, {huge})):
                worker._send(PlaceOrder(client_order_id=f"mb-BTCUSDT-{{seq}}", side=Side.BUY,
                                        type=OrderType.MARKET, quantity="0.001",
                                        bar_time=bar_time))
            open({sent!r}, "w").close()
        return Signal.LONG if self.bars % 4 < 2 else Signal.FLAT
"""


def _decisions_after(journal: Path, bar_time: int) -> int:
    with sqlite3.connect(journal) as conn:
        row = conn.execute("SELECT count(*) FROM orders WHERE symbol='BTCUSDT' AND "
                           "exit_retry=0 AND bar_time > ? AND bar_time < ?",
                           (bar_time, FAR)).fetchone()
    return int(row[0])


def test_a_decision_on_a_bar_the_feed_has_not_made_is_refused(fleet: FleetCli,
                                                               tmp_path: Path) -> None:
    sent = tmp_path / "sent"
    strategy = strategy_file(tmp_path, "rogue", ROGUE.format(far=FAR, huge=HUGE,
                                                             sent=str(sent)))
    fleet.up("BTCUSDT", "--speed", "20", "-s", f"{strategy}:Rogue")
    journal = fleet.home / "multibot.db"
    log = Home.at(fleet.home).orchestrator_log

    eventually(sent.exists, timeout=30, what="the rogue orders sent")
    with sqlite3.connect(journal) as conn:
        first = conn.execute("SELECT MAX(bar_time) FROM orders WHERE symbol='BTCUSDT' AND "
                             "bar_time < ?", (FAR,)).fetchone()[0] or 0
    # the symbol goes on deciding on its new bars: nothing locked it out
    eventually(lambda: _decisions_after(journal, first) >= 3 or None, timeout=40,
               what="BTCUSDT deciding on later bars")
    with sqlite3.connect(journal) as conn:
        rogue = conn.execute("SELECT count(*) FROM orders WHERE client_order_id IN "
                             "('mb-BTCUSDT-900001', 'mb-BTCUSDT-900002')").fetchone()[0]
        stale = conn.execute("SELECT count(*) FROM orders WHERE bar_time >= ?",
                             (FAR,)).fetchone()[0]
    assert (rogue, stale) == (0, 0)
    status = fleet.status()
    assert not status["orchestrator"].get("journal_error"), status["orchestrator"]
    text = log.read_text(errors="replace")
    assert "trading halted" not in text


# Runs inside the worker: on its 3rd bar it sends, on the worker's own registered connection,
# a heartbeat whose count of duplicate bars SQLite cannot store.
BOASTER = """\
import gc

from multibot.wire.protocol import WorkerHeartbeat


class Boaster(Strategy):
    name = "boaster"
    warmup = 0

    def on_start(self):
        self.bars = 0

    def on_bar(self, bar):
        self.bars += 1
        if self.bars == 3:
            worker = next(o for o in gc.get_objects() if type(o).__name__ == "WorkerProcess")
            worker._send(WorkerHeartbeat(duplicate_bars={huge}))
            open({sent!r}, "w").close()
        return Signal.LONG if self.bars % 4 < 2 else Signal.FLAT
"""


def test_a_heartbeat_with_an_impossible_count_halts_nothing(fleet: FleetCli,
                                                            tmp_path: Path) -> None:
    sent = tmp_path / "sent"
    strategy = strategy_file(tmp_path, "boaster", BOASTER.format(huge=HUGE, sent=str(sent)))
    fleet.up("BTCUSDT", "--speed", "20", "-s", f"{strategy}:Boaster")
    journal = fleet.home / "multibot.db"
    eventually(sent.exists, timeout=30, what="the heartbeat sent")
    with sqlite3.connect(journal) as conn:
        first = conn.execute("SELECT MAX(bar_time) FROM orders").fetchone()[0] or 0
    eventually(lambda: _decisions_after(journal, first) >= 2 or None, timeout=40,
               what="BTCUSDT deciding on later bars")
    text = Home.at(fleet.home).orchestrator_log.read_text(errors="replace")
    assert "trading halted" not in text
    assert fleet.workers()["BTCUSDT"]["duplicate_bars"] == 0


# Runs inside the first worker: on its 3rd bar it sends an exit retry whose client order id
# has the largest sequence number an id may carry; then it trades as ROGUE does.
SKIPPER = """\
import gc
import os

from multibot.market.orders import OrderType, Side
from multibot.wire.protocol import PlaceOrder


class Skipper(Strategy):
    name = "skipper"
    warmup = 0

    def on_start(self):
        self.bars = 0

    def on_bar(self, bar):
        self.bars += 1
        if self.bars == 3 and not os.path.exists({sent!r}):
            worker = next(o for o in gc.get_objects() if type(o).__name__ == "WorkerProcess")
            worker._send(PlaceOrder(client_order_id="mb-BTCUSDT-999999999999999999",
                                    side=Side.SELL, type=OrderType.MARKET, quantity="1",
                                    exit_retry=True))
            open({sent!r}, "w").close()
        return Signal.LONG if self.bars % 4 < 2 else Signal.FLAT
"""


def test_a_client_order_id_far_ahead_cannot_make_later_ids_collide(fleet: FleetCli,
                                                                   tmp_path: Path) -> None:
    """Journaled, the id would make the symbol's next sequence number 10**18, whose ids the
    journal no longer numbers (seq 0): after the next restart the worker's new orders would
    reuse journaled ids and be answered from the journal instead of placed."""
    sent = tmp_path / "sent"
    strategy = strategy_file(tmp_path, "skipper", SKIPPER.format(sent=str(sent)))
    fleet.up("BTCUSDT", "--speed", "20", "-s", f"{strategy}:Skipper")
    journal = fleet.home / "multibot.db"
    eventually(sent.exists, timeout=30, what="the far id sent")
    def deciding() -> None:
        with sqlite3.connect(journal) as conn:
            first = conn.execute("SELECT MAX(bar_time) FROM orders").fetchone()[0] or 0
        eventually(lambda: _decisions_after(journal, first) >= 2 or None, timeout=40,
                   what="BTCUSDT deciding")

    def restart() -> None:
        worker = worker_running(fleet, "BTCUSDT")
        assert worker is not None
        os.kill(worker["pid"], signal.SIGKILL)
        eventually(lambda: worker_running(fleet, "BTCUSDT", not_pid=worker["pid"]),
                   timeout=30, what="BTCUSDT restarted")

    for _ in range(2):  # two restarts: each new worker numbers from the journal
        deciding()
        restart()
    deciding()  # after two restarts
    with sqlite3.connect(journal) as conn:
        far = conn.execute("SELECT count(*) FROM orders WHERE seq >= 1000000000000000 "
                           "OR seq = 0").fetchone()[0]
    assert far == 0
