"""A worker that dies while the exchange is still answering its order: its successor, which
got the order as still open in its welcome, learns what became of it, so what it believes it
holds is what the account holds and its exits sell it. Real fleet, real worker processes, the
REAL python-binance client against the local Binance-protocol server."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psutil
import pytest

from multibot.market.rules import bundled_rules
from tests.backtest_support import strategy_file
from tests.fakes.binance import FakeBinance
from tests.support import FleetCli, eventually, worker_running

pytestmark = pytest.mark.process

STRATEGIES = Path(__file__).with_name("steered_strategies.py")
ORDER_PATH = "/api/v3/order"
KEY, SECRET = "restarts-key-8Hq2", "restarts-secret-Vb7mW3xT"
STEP = Decimal(bundled_rules()["BTCUSDT"].step_size)


@pytest.fixture
def exchange() -> Iterator[FakeBinance]:
    with FakeBinance(api_key=KEY, api_secret=SECRET, symbols=["BTCUSDT"],
                     balances={"USDT": "100000"}, tick_s=0.05, volatility=0.0,
                     start_prices={"BTCUSDT": 50_000.0}) as fake:
        yield fake


def _held(fake: FakeBinance) -> Decimal:
    free, locked = fake.balances().get("BTC", (Decimal(0), Decimal(0)))
    return free + locked


def _buy_status(fleet: FleetCli) -> str | None:
    with fleet.journal() as conn:
        row = conn.execute("SELECT status FROM orders WHERE side='BUY'").fetchone()
    return None if row is None else str(row[0])


def test_the_successor_of_a_worker_killed_mid_order_learns_its_fill_and_exits(
        fleet: FleetCli, exchange: FakeBinance, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("flat")
    env = dict(os.environ, MULTIBOT_BINANCE_REST_URL=exchange.rest_url,
               MULTIBOT_BINANCE_STREAM_URL=exchange.stream_url,
               MULTIBOT_BINANCE_TESTNET_API_KEY=KEY, MULTIBOT_BINANCE_TESTNET_API_SECRET=SECRET)
    fleet.run("up", "BTCUSDT", "--mode", "testnet", "--interval", "1s", "-s",
              f"{STRATEGIES}:Steered:path={target}", env=env, check=True, timeout=90)
    first = eventually(lambda: worker_running(fleet, "BTCUSDT"), timeout=30,
                       what="BTCUSDT running")
    # the exchange takes 5 s to answer the entry: the worker dies meanwhile and is restarted
    exchange.fail("slow", times=1, method="POST", path=ORDER_PATH, delay=5.0)
    target.write_text("long")
    eventually(lambda: _buy_status(fleet) == "PENDING_NEW", timeout=30,
               what="the entry journaled and on its way")
    psutil.Process(first["pid"]).send_signal(signal.SIGKILL)
    eventually(lambda: worker_running(fleet, "BTCUSDT", not_pid=first["pid"]), timeout=30,
               what="BTCUSDT restarted")
    eventually(lambda: _buy_status(fleet) == "FILLED", timeout=30, what="the entry filled")
    held = _held(exchange)
    assert held >= STEP
    # the new worker got the entry as still open, and the exchange's answer went to the dead
    # one: it must learn the fill, or it believes it holds nothing and never sells
    target.write_text("flat")
    eventually(lambda: _held(exchange) < STEP, timeout=30, what="flat on the exchange")


def test_kill_flatten_sells_the_expired_remainder_until_flat(
        fleet: FleetCli, exchange: FakeBinance, tmp_path: Path) -> None:
    """``kill --flatten`` on a thin book: each MARKET SELL finds 0.0007 BTC and the rest of
    it expires; the stopping worker sells what is left until flat, not once."""
    target = tmp_path / "target"
    target.write_text("flat")
    env = dict(os.environ, MULTIBOT_BINANCE_REST_URL=exchange.rest_url,
               MULTIBOT_BINANCE_STREAM_URL=exchange.stream_url,
               MULTIBOT_BINANCE_TESTNET_API_KEY=KEY, MULTIBOT_BINANCE_TESTNET_API_SECRET=SECRET)
    fleet.run("up", "BTCUSDT", "--mode", "testnet", "--interval", "1s", "-s",
              f"{STRATEGIES}:Steered:path={target}", env=env, check=True, timeout=90)
    target.write_text("long")
    held = eventually(lambda: _held(exchange), timeout=30, what="the entry filled")
    assert held > Decimal("0.0015")
    exchange.set_liquidity("BTCUSDT", levels=["0.0007"])
    fleet.run("kill", "BTCUSDT", "--flatten", check=True, timeout=60)
    assert _held(exchange) < STEP
    statuses = [o["status"] for o in exchange.orders("BTCUSDT") if o["side"] == "SELL"]
    assert statuses == ["EXPIRED", "EXPIRED", "FILLED"]
    worker = fleet.workers()["BTCUSDT"]
    assert worker["state"] == "STOPPED" and Decimal(str(worker["position"])) < STEP


# Runs inside the worker: LONG from its 3rd bar; once it holds (a fill came), every later
# start of its worker process dies at once, so the symbol ends FAILED holding a position.
CRASHER = """\
import os


class Crasher(Strategy):
    name = "crasher"
    warmup = 0

    def on_start(self):
        self.bars = 0
        if os.path.exists({held!r}):
            os._exit(3)

    def on_fill(self, side, qty, price):
        open({held!r}, "w").close()
        os._exit(3)

    def on_bar(self, bar):
        self.bars += 1
        return Signal.LONG if self.bars >= 3 else Signal.FLAT
"""


@pytest.mark.parametrize("command", ["kill", "down"])
def test_flatten_sells_what_a_failed_symbol_holds(fleet: FleetCli, tmp_path: Path,
                                                  command: str) -> None:
    """A symbol whose worker gave up (FAILED, no worker to ask) still holds a position:
    ``kill --flatten`` and ``down --flatten`` sell it, not leave it."""
    held = tmp_path / "held"
    strategy = strategy_file(tmp_path, "crasher", CRASHER.format(held=str(held)))
    fleet.up("BTCUSDT", "--speed", "20", "-s", f"{strategy}:Crasher", "--max-restarts", "0")
    eventually(lambda: fleet.workers()["BTCUSDT"]["state"] == "FAILED", timeout=30,
               what="BTCUSDT failed")
    assert held.exists() and Decimal(str(fleet.workers()["BTCUSDT"]["position"])) >= STEP
    args = ("kill", "BTCUSDT") if command == "kill" else ("down",)
    fleet.run(*args, "--flatten", check=True, timeout=60)
    with fleet.journal() as conn:
        bought, sold = (sum((Decimal(q) for (q,) in conn.execute(
            "SELECT qty FROM fills WHERE side=?", (side,))), Decimal(0))
            for side in ("BUY", "SELL"))
        exits = [tuple(r) for r in conn.execute(
            "SELECT exit_retry, type FROM orders WHERE side='SELL'")]
    assert bought >= STEP and abs(bought - sold) < STEP  # fees are paid in USDT on paper
    assert exits == [(1, "MARKET")]


def test_an_exit_in_flight_when_the_orchestrator_dies_is_not_sold_twice(
        fleet: FleetCli, tmp_path: Path) -> None:
    """The orchestrator is SIGKILLed while the exchange is still executing an exit (a 3 s
    slow answer); the next `up` must find out what became of it, not close it as never
    filled: else the worker sells again and the first SELL, executed late, sells the
    account's other coins (the user's own BTC here)."""
    with FakeBinance(api_key=KEY, api_secret=SECRET, symbols=["BTCUSDT"],
                     balances={"USDT": "100000", "BTC": "1"}, tick_s=0.05, volatility=0.0,
                     start_prices={"BTCUSDT": 50_000.0}) as exchange:
        target = tmp_path / "target"
        target.write_text("flat")
        env = dict(os.environ, MULTIBOT_BINANCE_REST_URL=exchange.rest_url,
                   MULTIBOT_BINANCE_STREAM_URL=exchange.stream_url,
                   MULTIBOT_BINANCE_TESTNET_API_KEY=KEY,
                   MULTIBOT_BINANCE_TESTNET_API_SECRET=SECRET)
        up = ("up", "BTCUSDT", "--mode", "testnet", "--interval", "1s", "-s",
              f"{STRATEGIES}:Steered:path={target}")
        fleet.run(*up, env=env, check=True, timeout=90)
        target.write_text("long")
        eventually(lambda: _held(exchange) > 1, timeout=30, what="the entry filled")
        exchange.fail("slow", times=1, method="POST", path=ORDER_PATH, delay=3.0)
        target.write_text("flat")

        def sells(status: str) -> int:
            with fleet.journal() as conn:
                return int(conn.execute("SELECT count(*) FROM orders WHERE side='SELL' AND "
                                        "status=?", (status,)).fetchone()[0])

        eventually(lambda: sells("PENDING_NEW"), timeout=30, what="the exit on its way")
        orchestrator = fleet.orchestrator_pid()
        assert orchestrator is not None
        os.kill(orchestrator, signal.SIGKILL)
        eventually(lambda: not psutil.pid_exists(orchestrator)
                   or psutil.Process(orchestrator).status() == psutil.STATUS_ZOMBIE,
                   what="the orchestrator gone")
        # `up` refuses the symbol while the exit's outcome is unknown; it is asked again
        eventually(lambda: fleet.run(*up, env=env, timeout=90).returncode == 0, timeout=60,
                   interval=1.0, what="BTCUSDT up again once its exit's outcome is known")
        eventually(lambda: _held(exchange) < 1 + STEP, timeout=30, what="the exit executed")
        eventually(lambda: sells("FILLED"), timeout=30, what="the exit journaled")
        posted = len([r for r in exchange.requests()
                      if r.method == "POST" and r.params.get("side") == "SELL"])
        worker = fleet.workers()["BTCUSDT"]
        eventually(lambda: fleet.workers()["BTCUSDT"]["bars"] >= worker["bars"] + 5,
                   timeout=30, what="5 more bars")
        assert _held(exchange) > 1 - STEP  # the user's own coin untouched
        assert posted == 1 and sells("FILLED") == 1
