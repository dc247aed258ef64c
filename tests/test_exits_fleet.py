"""Exits until flat with real fleets: an exit that expired or was rejected is tried again
until the position is flat, and a rejected entry is never sent again (#16 item 3)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import zmq

from multibot.market.bundled import load_klines
from multibot.market.orders import OrderType, Side
from multibot.market.rules import bundled_rules
from multibot.wire import protocol as p
from multibot.wire.home import Home
from tests.fakes.binance import FakeBinance
from tests.support import FleetCli, eventually, where

pytestmark = pytest.mark.process

STRATEGIES = Path(__file__).with_name("steered_strategies.py")
ORDER_PATH = "/api/v3/order"
KEY, SECRET = "exits-key-4Rt8", "exits-secret-Lp3vN6qZ"
CLOSED = "Market is closed."


def _orders(fleet: FleetCli, symbol: str) -> list[Any]:
    with fleet.journal() as conn:
        return conn.execute("SELECT * FROM orders WHERE symbol=? ORDER BY seq",
                            (symbol,)).fetchall()


def test_an_error_reply_carries_the_id_of_the_request_it_refuses(fleet: FleetCli) -> None:
    """The worker tells which order or cancel an error answers by the reply's envelope id
    (worker.main.request_id), also when the broker refuses at once."""
    fleet.up("BTCUSDT", "--speed", "20")
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, b"EVILUSDT")  # not a registered worker: refused at once
    sock.connect(Home.at(fleet.home).endpoint("broker"))
    try:
        for request in (p.PlaceOrder(client_order_id="mb-EVILUSDT-1", side=Side.SELL,
                                     type=OrderType.MARKET, quantity="1", bar_time=0),
                        p.CancelOrder(client_order_id="mb-EVILUSDT-1")):
            request_id = f"{request.TYPE}:mb-EVILUSDT-1"
            sock.send(p.encode(request, request_id))
            assert sock.poll(5000), "no reply"
            envelope, reply = p.decode(sock.recv())
            assert isinstance(reply, p.Error) and reply.code == "not_allowed"
            assert envelope.id == request_id
    finally:
        sock.close()


def _falling_after(symbol: str, start: int, bars: int) -> int:
    """The first bar from ``start`` on whose close no high of the next ``bars`` bars reaches:
    a SELL LIMIT at that close rests unfilled for that long."""
    klines = load_klines(symbol, "1m")
    high, close = klines["high"], klines["close"]
    for k in range(start, len(klines) - bars):
        if high[k + 1:k + 1 + bars].max() < close[k]:
            return k
    raise AssertionError(f"no falling stretch of {bars} bars in the bundled {symbol} klines")


def test_a_paper_limit_exit_that_expires_is_tried_again_until_flat(fleet: FleetCli) -> None:
    """The worker turns flat half a second late (at 40 bars/s): the market has fallen
    since, and stays below the SELL LIMIT for the next 40 bars, so it expires unfilled after
    limit_ttl_bars. The strategy stays flat: the runner must try again (a new LIMIT at the
    latest close, or after 3 expiries a MARKET order) until nothing tradable is held."""
    klines = load_klines("BTCUSDT", "1m")
    k = _falling_after("BTCUSDT", 1300, 40)  # the replay starts at bar 1000
    long_at, flat_at = int(klines["open_time"][k - 10]), int(klines["open_time"][k])
    fleet.up("BTCUSDT", "-s",
             f"{STRATEGIES}:LateExit:long_at={long_at},flat_at={flat_at},lag_s=0.5",
             "--order-type", "LIMIT", "--speed", "40")
    eventually(lambda: any(o["side"] == "SELL" for o in _orders(fleet, "BTCUSDT")),
               timeout=60, what="the late exit")
    eventually(lambda: where(_orders(fleet, "BTCUSDT"),
                             lambda os_: os_[-1]["side"] == "SELL"
                             and os_[-1]["status"] == "FILLED"),
               timeout=30, what="an exit filled")
    orders = _orders(fleet, "BTCUSDT")
    buys = [o for o in orders if o["side"] == "BUY"]
    sells = [o for o in orders if o["side"] == "SELL"]
    assert [b["status"] for b in buys] == ["FILLED"], "the entry fills at once (no lag then)"
    assert sells[0]["type"] == "LIMIT" and sells[0]["status"] == "CANCELED"  # expired
    assert all(s["status"] == "CANCELED" for s in sells[:-1])
    assert len(sells) <= 4  # after 3 expiries, a MARKET exit
    worker = eventually(lambda: where(fleet.workers()["BTCUSDT"],
                                      lambda w: Decimal(str(w["position"])) == 0),
                        what="the worker flat")
    assert worker["last_error"] == ""


# --- on Binance's protocol ------------------------------------------------------------------


@pytest.fixture
def exchange() -> Iterator[FakeBinance]:
    with FakeBinance(api_key=KEY, api_secret=SECRET, symbols=["BTCUSDT"],
                     balances={"USDT": "100000"}, tick_s=0.05, volatility=0.0,
                     start_prices={"BTCUSDT": 50_000.0}) as fake:
        yield fake


def _up_steered(fleet: FleetCli, fake: FakeBinance, target: Path) -> None:
    env = dict(os.environ, MULTIBOT_BINANCE_REST_URL=fake.rest_url,
               MULTIBOT_BINANCE_STREAM_URL=fake.stream_url,
               MULTIBOT_BINANCE_TESTNET_API_KEY=KEY, MULTIBOT_BINANCE_TESTNET_API_SECRET=SECRET)
    fleet.run("up", "BTCUSDT", "--mode", "testnet", "--interval", "1s", "-s",
              f"{STRATEGIES}:Steered:path={target}", env=env, check=True, timeout=90)


def _posted(fake: FakeBinance, side: str) -> list[Any]:
    return [r for r in fake.requests()
            if r.method == "POST" and r.path == ORDER_PATH and r.params.get("side") == side]


def _bars_later(fleet: FleetCli, bars: int) -> None:
    seen = fleet.workers()["BTCUSDT"]["bars"]
    eventually(lambda: fleet.workers()["BTCUSDT"]["bars"] >= seen + bars, timeout=30,
               what=f"{bars} more bars")


def _held(fake: FakeBinance, asset: str) -> Decimal:
    free, locked = fake.balances().get(asset, (Decimal(0), Decimal(0)))
    return free + locked


def _long(fleet: FleetCli, fake: FakeBinance, target: Path) -> Decimal:
    """Turn the strategy long and wait for the entry to fill; what the account then holds."""
    target.write_text("long")
    return eventually(lambda: _held(fake, "BTC"), timeout=30, what="the entry filled")


STEP = Decimal(bundled_rules()["BTCUSDT"].step_size)


def test_an_exit_rejected_while_the_market_is_closed_is_retried_until_flat(
        fleet: FleetCli, exchange: FakeBinance, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("flat")
    _up_steered(fleet, exchange, target)
    # an entry rejected in maintenance is not sent again: a new entry is a new decision
    exchange.set_maintenance("BTCUSDT")
    target.write_text("long")
    eventually(lambda: _posted(exchange, "BUY"), timeout=30, what="the entry")
    _bars_later(fleet, 4)
    assert [r.code for r in _posted(exchange, "BUY")] == [-2010]
    exchange.set_maintenance("BTCUSDT", on=False)
    _bars_later(fleet, 2)
    assert len(_posted(exchange, "BUY")) == 1
    target.write_text("flat")
    _bars_later(fleet, 2)  # a bar saw it: the next "long" is a new decision
    _long(fleet, exchange, target)
    # the exit is rejected while the market is closed, and tried again until it goes through
    exchange.set_maintenance("BTCUSDT")
    target.write_text("flat")
    eventually(lambda: len(_posted(exchange, "SELL")) >= 3, timeout=30,
               what="three tries at the exit")
    exchange.set_maintenance("BTCUSDT", on=False)
    eventually(lambda: _held(exchange, "BTC") < STEP, timeout=60, what="flat on the exchange")
    sells = _posted(exchange, "SELL")
    assert [r.code for r in sells[:-1]] == [-2010] * (len(sells) - 1) and sells[-1].code is None
    assert len({r.params["newClientOrderId"] for r in sells}) == len(sells)  # each a new order
    waits = [b.at - a.at for a, b in itertools.pairwise(sells)]
    assert waits[0] >= 0.9 and waits[1] >= 1.9  # the growing wait
    assert len(_posted(exchange, "BUY")) == 2  # no entry retried
    worker = eventually(lambda: where(fleet.workers()["BTCUSDT"],
                                      lambda w: Decimal(str(w["position"])) < STEP),
                        what="the worker flat")
    assert Decimal(str(worker["position"])) == _held(exchange, "BTC")
    with fleet.journal() as conn:
        reasons = [r[0] for r in conn.execute(
            "SELECT reason FROM orders WHERE side='SELL' AND status='REJECTED'")]
    assert reasons and all(CLOSED in r for r in reasons)


def test_the_expired_remainder_of_a_market_exit_is_sold_until_flat(
        fleet: FleetCli, exchange: FakeBinance, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("flat")
    _up_steered(fleet, exchange, target)
    held = _long(fleet, exchange, target)
    assert held > Decimal("0.0015")
    # a thin book: each MARKET SELL finds 0.0007 BTC and the rest of it expires
    exchange.set_liquidity("BTCUSDT", levels=["0.0007"])
    target.write_text("flat")
    eventually(lambda: _held(exchange, "BTC") < STEP, timeout=60, what="flat on the exchange")
    statuses = [o["status"] for o in exchange.orders("BTCUSDT") if o["side"] == "SELL"]
    assert statuses == ["EXPIRED", "EXPIRED", "FILLED"]
    assert len(_posted(exchange, "BUY")) == 1
    worker = eventually(lambda: where(fleet.workers()["BTCUSDT"],
                                      lambda w: Decimal(str(w["position"])) < STEP),
                        what="the worker flat")
    assert Decimal(str(worker["position"])) == _held(exchange, "BTC")


def test_a_refused_cancel_is_asked_again_and_nothing_is_sold_before_its_outcome(
        fleet: FleetCli, exchange: FakeBinance, tmp_path: Path) -> None:
    """A BUY LIMIT rests (the market rose while the order was on its way); the strategy turns
    flat; the exchange refuses the cancel twice. The worker asks again (after 1 s, then 2 s)
    until the cancel is confirmed, and sends no SELL meanwhile: nothing was bought."""
    target = tmp_path / "target"
    target.write_text("flat")
    env = dict(os.environ, MULTIBOT_BINANCE_REST_URL=exchange.rest_url,
               MULTIBOT_BINANCE_STREAM_URL=exchange.stream_url,
               MULTIBOT_BINANCE_TESTNET_API_KEY=KEY, MULTIBOT_BINANCE_TESTNET_API_SECRET=SECRET)
    fleet.run("up", "BTCUSDT", "--mode", "testnet", "--interval", "1s", "--order-type",
              "LIMIT", "-s", f"{STRATEGIES}:Steered:path={target}", env=env, check=True,
              timeout=90)
    exchange.fail("slow", times=1, method="POST", path=ORDER_PATH, delay=2.0)
    target.write_text("long")
    eventually(lambda: [o for o in _orders(fleet, "BTCUSDT") if o["side"] == "BUY"],
               timeout=30, what="the entry journaled (and on its way, slowly)")
    exchange.set_price("BTCUSDT", float(exchange.price("BTCUSDT")) * 1.01)
    (resting,) = eventually(lambda: exchange.open_orders("BTCUSDT"), timeout=30,
                            what="the BUY LIMIT resting below the market")
    exchange.fail("-2010", times=2, method="DELETE", path=ORDER_PATH,
                  msg="Unknown error, please check your request or try again later.")
    target.write_text("flat")
    eventually(lambda: not exchange.open_orders("BTCUSDT"), timeout=30,
               what="the BUY cancelled")
    cancels = [r for r in exchange.requests() if r.method == "DELETE" and r.path == ORDER_PATH]
    assert [r.code for r in cancels] == [-2010, -2010, None]
    assert {r.params["origClientOrderId"] for r in cancels} == {resting["clientOrderId"]}
    waits = [b.at - a.at for a, b in itertools.pairwise(cancels)]
    assert waits[0] >= 0.9 and waits[1] >= 1.9
    _bars_later(fleet, 3)
    assert _posted(exchange, "SELL") == [] and _held(exchange, "BTC") == 0
    assert [o["status"] for o in _orders(fleet, "BTCUSDT")] == ["CANCELED"]
