"""A whole fleet on Binance's protocol: `multibot up --mode testnet --feed binance` against the
local server (the REAL python-binance client inside the orchestrator), as a user runs it."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psutil
import pytest

from tests.fakes.binance import FakeBinance
from tests.support import FleetCli, eventually, where, worker_running

pytestmark = pytest.mark.process

KEY, SECRET = "fleet-key-7Hq2", "fleet-secret-Zw9pQ4mN8xR2"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "XRPUSDT")
FAST = ("-s", "sma_cross:fast=2,slow=4", "--interval", "1s")
ORDER_PATH = "/api/v3/order"


@pytest.fixture
def exchange() -> Iterator[FakeBinance]:
    with FakeBinance(api_key=KEY, api_secret=SECRET, symbols=[*SYMBOLS, "SOLUSDT"],
                     balances={"USDT": "100000"}, tick_s=0.05, volatility=0.002) as fake:
        yield fake


def env_for(fake: FakeBinance, **extra: str) -> dict[str, str]:
    return dict(os.environ, MULTIBOT_BINANCE_REST_URL=fake.rest_url,
                MULTIBOT_BINANCE_STREAM_URL=fake.stream_url,
                MULTIBOT_BINANCE_TESTNET_API_KEY=KEY,
                MULTIBOT_BINANCE_TESTNET_API_SECRET=SECRET, **extra)


def up(fleet: FleetCli, fake: FakeBinance, *args: str, check: bool = True) -> Any:
    return fleet.run("up", "--mode", "testnet", *FAST, *args, env=env_for(fake),
                     check=check, timeout=90)


def journal_fills(fleet: FleetCli, symbol: str) -> dict[int, tuple[Decimal, Decimal]]:
    with sqlite3.connect(fleet.home / "multibot.db") as conn:
        rows = conn.execute("SELECT exchange_trade_id, qty, price FROM fills WHERE symbol=?",
                            (symbol,)).fetchall()
    return {int(t): (Decimal(q), Decimal(p)) for t, q, p in rows}


def exchange_fills(fake: FakeBinance, symbol: str) -> dict[int, tuple[Decimal, Decimal]]:
    return {int(t["id"]): (Decimal(t["qty"]), Decimal(t["price"])) for t in fake.trades(symbol)}


def held(fake: FakeBinance, asset: str) -> Decimal:
    free, locked = fake.balances().get(asset, (Decimal(0), Decimal(0)))
    return free + locked


def test_three_symbols_trade_on_testnet_and_agree_with_the_account(
        fleet: FleetCli, exchange: FakeBinance) -> None:
    up(fleet, exchange, *SYMBOLS)
    eventually(lambda: all(w["trades"] >= 2 for w in fleet.workers().values()), timeout=60,
               what="every symbol buying and selling on the exchange")
    status = fleet.status()
    link = status["orchestrator"]["exchange"]
    assert link["network"] == "testnet" and link["trading"] and link["endpoint"].startswith(
        "http://127.0.0.1:")
    assert 0 < link["used_weight_1m"] <= link["weight_limit"]
    assert status["orchestrator"]["feed"] == "binance"
    fleet.run("kill", *SYMBOLS, check=True)  # quiet: nothing in flight while we compare
    for symbol, base in (("BTCUSDT", "BTC"), ("ETHUSDT", "ETH"), ("XRPUSDT", "XRP")):
        assert journal_fills(fleet, symbol) == exchange_fills(exchange, symbol)
        worker = fleet.workers()[symbol]
        assert Decimal(str(worker["position"])) == held(exchange, base)
        assert worker["duplicate_bars"] == 0 and worker["foreign_bars"] == 0
    posted = [r.params["newClientOrderId"] for r in exchange.requests()
              if r.method == "POST" and r.path == ORDER_PATH]
    assert len(posted) == len(set(posted))  # every intent sent once


def test_a_dropped_stream_reconnects_and_fills_the_gap_without_duplicates(
        fleet: FleetCli, exchange: FakeBinance) -> None:
    up(fleet, exchange, "BTCUSDT", "ETHUSDT")
    before = eventually(lambda: worker_running(fleet, "BTCUSDT")
                        if (fleet.workers()["BTCUSDT"]["bars"] >= 3) else None, timeout=30)
    exchange.drop_streams()
    time.sleep(0.1)  # not a wait for a condition: bars are missed while it reconnects
    exchange.drop_streams()
    eventually(lambda: fleet.status()["orchestrator"]["exchange"]["stream_reconnects"] >= 1,
               timeout=30, what="a reconnect")
    after = eventually(lambda: where(fleet.workers()["BTCUSDT"],
                                     lambda w: w["bars"] >= before["bars"] + 5),
                       timeout=30, what="bars flowing again")
    # one bar per second of market time: every bar in between arrived once, none twice
    assert after["bars"] - before["bars"] == (after["last_bar_time"]
                                              - before["last_bar_time"]) // 1000
    assert after["duplicate_bars"] == 0
    # the reconnect takes >= 1 s of 1 s bars: the bars that closed meanwhile came from REST
    assert fleet.status()["orchestrator"]["exchange"]["gap_filled_bars"] >= 1


def test_exchange_faults_never_double_an_order_nor_storm(
        fleet: FleetCli, exchange: FakeBinance) -> None:
    exchange.fail("5xx_after_accept", times=1, method="POST", path=ORDER_PATH)
    exchange.fail("-2010", times=1, method="POST", path=ORDER_PATH)
    exchange.fail("429", times=1, method="POST", path=ORDER_PATH, retry_after=1)
    up(fleet, exchange, "BTCUSDT")
    eventually(lambda: len(exchange.orders("BTCUSDT")) >= 4, timeout=60,
               what="orders through all three faults")
    records = [r for r in exchange.requests() if r.method == "POST" and r.path == ORDER_PATH]
    by_id: dict[str, list[int]] = {}
    for record in records:
        by_id.setdefault(record.params["newClientOrderId"], []).append(record.status)
    statuses = list(by_id.values())  # per client order id, in the order first sent
    # 5xx after acceptance: looked up, not resent; -2010: reported, not retried; 429:
    # refused unexecuted, so sent again after its Retry-After
    assert statuses[:3] == [[503], [400], [429, 200]]
    assert all(s == [200] for s in statuses[3:])
    limited = [r for r in records if r.params["newClientOrderId"] == list(by_id)[2]]
    assert limited[1].at - limited[0].at >= 0.95  # waited out Retry-After: 1
    ids = [o["clientOrderId"] for o in exchange.orders("BTCUSDT")]
    assert len(ids) == len(set(ids))
    fleet.run("kill", "BTCUSDT", check=True)
    with sqlite3.connect(fleet.home / "multibot.db") as conn:
        rejected = conn.execute("SELECT reason FROM orders WHERE status='REJECTED'").fetchall()
    assert [r[0].split(":")[0] for r in rejected] == ["insufficient_balance"]
    assert journal_fills(fleet, "BTCUSDT") == exchange_fills(exchange, "BTCUSDT")


def test_restart_reconciles_an_order_left_open_and_refuses_a_foreign_one(
        fleet: FleetCli, exchange: FakeBinance) -> None:
    up(fleet, exchange, "BTCUSDT", "--order-type", "LIMIT", "--stake", "500")
    resting = eventually(lambda: exchange.open_orders("BTCUSDT"), timeout=60,
                         what="a LIMIT order resting on the exchange")[0]
    pid = fleet.orchestrator_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # crash: the order stays on the exchange
    eventually(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status()
               == psutil.STATUS_ZOMBIE, what="the orchestrator gone")
    price = Decimal(resting["price"])
    exchange.set_price("BTCUSDT", float(price * (Decimal("0.98") if resting["side"] == "BUY"
                                                 else Decimal("1.02"))))
    eventually(lambda: not exchange.open_orders("BTCUSDT"), what="the order filled meanwhile")
    far = str((exchange.price("ETHUSDT") * Decimal("0.5")).quantize(Decimal("0.01")))
    exchange.place_external_order("ETHUSDT", "BUY", "LIMIT", "0.01", far, "web_by_hand_1")
    proc = up(fleet, exchange, "BTCUSDT", "ETHUSDT", "--order-type", "LIMIT", "--stake",
              "500", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "web_by_hand_1" in proc.stdout and "not placed by this multibot" in proc.stdout
    workers = fleet.workers()
    assert workers["BTCUSDT"]["state"] == "RUNNING"
    assert workers["ETHUSDT"]["state"] == "FAILED"
    assert "web_by_hand_1" in workers["ETHUSDT"]["last_error"]
    with sqlite3.connect(fleet.home / "multibot.db") as conn:
        status = conn.execute("SELECT status FROM orders WHERE client_order_id=?",
                              (resting["clientOrderId"],)).fetchone()[0]
    assert status == "FILLED"
    fleet.run("kill", "BTCUSDT", check=True)
    assert journal_fills(fleet, "BTCUSDT") == exchange_fills(exchange, "BTCUSDT")
    assert Decimal(str(fleet.workers()["BTCUSDT"]["position"])) == held(exchange, "BTC")


def test_the_secret_appears_nowhere(fleet: FleetCli, exchange: FakeBinance) -> None:
    up(fleet, exchange, "BTCUSDT")
    eventually(lambda: fleet.workers()["BTCUSDT"]["trades"] >= 1, timeout=60, what="a trade")
    texts = [fleet.run("status", check=True).stdout, fleet.run("status", "--json").stdout]
    texts += [" ".join(p.cmdline()) for p in fleet.processes()]
    for worker in fleet.workers().values():
        texts += list(psutil.Process(worker["pid"]).environ().values())
    fleet.run("down", check=True)
    texts += [p.read_text(errors="replace") for p in (fleet.home / "logs").glob("*.log")]
    with sqlite3.connect(fleet.home / "multibot.db") as journal:
        texts.append("\n".join(journal.iterdump()))
    assert not [t for t in texts if SECRET in t or KEY in t]


def test_unknown_symbols_and_unsafe_live_starts_are_refused(
        fleet: FleetCli, exchange: FakeBinance) -> None:
    proc = up(fleet, exchange, "BTCUSDT", "NOPEUSDT", check=False)
    assert proc.returncode == 2 and "unknown symbol NOPEUSDT" in proc.stderr
    assert "not a trading symbol" in proc.stderr
    fleet.run("down")
    live = fleet.run("up", "--mode", "live", "BTCUSDT", env=env_for(exchange))
    assert live.returncode == 2 and "--confirm-live" in live.stderr
    keyless = fleet.run("up", "--mode", "live", "--confirm-live", "BTCUSDT",
                        env=env_for(exchange))
    assert keyless.returncode == 2
    assert "testnet keys are set, but they are never used for live" in keyless.stderr
    assert fleet.orchestrator_pid() is None  # nothing was started


def test_paper_mode_on_live_prices_sends_nothing_to_the_exchange(
        fleet: FleetCli, exchange: FakeBinance) -> None:
    env = {k: v for k, v in env_for(exchange).items() if "API_" not in k}  # no keys at all
    fleet.run("up", "--feed", "binance", *FAST, "BTCUSDT", "ETHUSDT", env=env, check=True,
              timeout=90)
    eventually(lambda: all(w["trades"] >= 2 for w in fleet.workers().values()), timeout=60,
               what="paper fills on live prices")
    link = fleet.status()["orchestrator"]["exchange"]
    assert link["trading"] is False and link["network"] == "live"
    assert exchange.count("POST", ORDER_PATH) == 0  # simulated fills only
    assert not [r for r in exchange.requests() if r.path == "/api/v3/account"]  # no keys used
    btc = fleet.workers()["BTCUSDT"]
    assert btc["last_price"] is not None and btc["duplicate_bars"] == 0


def test_an_order_booked_late_halts_its_symbol_in_status_until_the_exchange_answers(
        fleet: FleetCli, exchange: FakeBinance) -> None:
    exchange.fail("late_booking", delay=6.0)  # the first order: 503 -1007, booked 6 s later
    up(fleet, exchange, "BTCUSDT", "ETHUSDT")
    eventually(lambda: fleet.status()["orchestrator"]["exchange"]["user_stream"]
               == "subscribed", timeout=30, what="the user data stream in status")
    halted = eventually(lambda: fleet.workers()["BTCUSDT"]["halted"]
                        or fleet.workers()["ETHUSDT"]["halted"], timeout=60,
                        what="the symbol of the unknown order halted in status")
    first = next(r for r in exchange.requests() if r.method == "POST" and r.path == ORDER_PATH)
    symbol, coid = first.params["symbol"], first.params["newClientOrderId"]
    assert coid in halted and "outcome unknown" in halted
    eventually(lambda: exchange.pending_bookings() == 0
               and not fleet.workers()[symbol]["halted"], timeout=60,
               what="the late booking found and the symbol trading again")
    fleet.run("kill", "BTCUSDT", "ETHUSDT", check=True)
    with sqlite3.connect(fleet.home / "multibot.db") as conn:
        status = conn.execute("SELECT status FROM orders WHERE client_order_id=?",
                              (coid,)).fetchone()
    assert status == ("FILLED",)
    for name in ("BTCUSDT", "ETHUSDT"):
        assert journal_fills(fleet, name) == exchange_fills(exchange, name)
    posted = [r.params["newClientOrderId"] for r in exchange.requests()
              if r.method == "POST" and r.path == ORDER_PATH]
    assert len(posted) == len(set(posted))  # nothing sent twice


@pytest.mark.parametrize("fault", ["late_booking", "never_booked"])
def test_an_orchestrator_killed_while_an_outcome_is_unknown_resolves_it_on_evidence(
        fleet: FleetCli, exchange: FakeBinance, fault: str) -> None:
    if fault == "late_booking":
        exchange.fail(fault, delay=3.0)
    else:
        exchange.fail(fault)
    up(fleet, exchange, "BTCUSDT")
    halted = eventually(lambda: fleet.workers()["BTCUSDT"]["halted"], timeout=60,
                        what="the symbol halted while its order's outcome is unknown")
    first = next(r for r in exchange.requests() if r.method == "POST" and r.path == ORDER_PATH)
    sent_at, coid = time.monotonic(), first.params["newClientOrderId"]
    assert coid in halted
    pid = fleet.orchestrator_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # crash while the outcome is unknown
    eventually(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status()
               == psutil.STATUS_ZOMBIE, what="the orchestrator gone")
    with sqlite3.connect(fleet.home / "multibot.db") as conn:
        [(status, reason)] = conn.execute("SELECT status, reason FROM orders WHERE "
                                          "client_order_id=?", (coid,)).fetchall()
    assert status == "PENDING_NEW" and reason.startswith("outcome unknown")
    # past the request's recvWindow (sent within 15 s, + 10 s + 5 s margin): the exchange
    # can answer for it
    eventually(lambda: exchange.pending_bookings() == 0
               and time.monotonic() - sent_at > 31, timeout=45, what="the recvWindow passed")
    up(fleet, exchange, "BTCUSDT")
    assert fleet.workers()["BTCUSDT"]["state"] == "RUNNING"
    fleet.run("kill", "BTCUSDT", check=True)
    with sqlite3.connect(fleet.home / "multibot.db") as conn:
        [(status, reason)] = conn.execute("SELECT status, reason FROM orders WHERE "
                                          "client_order_id=?", (coid,)).fetchall()
    booked = [o for o in exchange.orders("BTCUSDT") if o["clientOrderId"] == coid]
    if fault == "late_booking":
        assert status == "FILLED" and len(booked) == 1
    else:
        assert status == "EXPIRED" and reason.startswith("never booked: ") and not booked
    assert journal_fills(fleet, "BTCUSDT") == exchange_fills(exchange, "BTCUSDT")
    assert Decimal(str(fleet.workers()["BTCUSDT"]["position"])) == held(exchange, "BTC")
    posted = [r.params["newClientOrderId"] for r in exchange.requests()
              if r.method == "POST" and r.path == ORDER_PATH]
    assert posted.count(coid) == 1 and len(posted) == len(set(posted))
