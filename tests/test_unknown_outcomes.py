"""Orders of unknown outcome (a 5xx -1007 after the request went out) against the local
Binance-protocol server's matching engine, with the REAL python-binance client: the symbol
is blocked until the exchange answers, an order is closed as never booked only on evidence,
and an order the engine books late is journaled once (adopted if it had been closed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import pytest

from multibot.wire.protocol import ErrorCode, ProtocolError
from orchestrator.exchange.client import ExchangeClient
from orchestrator.exchange.watcher import watch
from tests.exchange_support import (
    Desk,
    assert_journal_matches_exchange,
    fake_server as fake,
    limit,
    market,
    posts,
    run,
)
from tests.fake_binance_support import until
from tests.fakes.binance import FakeBinance

__all__ = ["fake"]  # the fixture

ALL_ORDERS = "/api/v3/allOrders"


@pytest.fixture(autouse=True)
def quick_lookups(monkeypatch: pytest.MonkeyPatch) -> None:
    """The broker gives up waiting for an answer after two quick look-ups (then the watcher
    carries on)."""
    monkeypatch.setattr("orchestrator.exchange.broker._LOOKUPS_S", (0.05, 0.05))


def short_recv_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if requests were signed with a 0.3 s recvWindow (python-binance's is 10 s), orders
    sent within 0.1 s of their intent or not at all (15 s)."""
    monkeypatch.setattr("orchestrator.exchange.ledger.RECV_WINDOW_NS", 200_000_000)
    monkeypatch.setattr("orchestrator.exchange.ledger.SETTLE_MARGIN_NS", 100_000_000)
    monkeypatch.setattr(ExchangeClient, "order_send_within_s", 0.1)


@asynccontextmanager
async def watched(fake: FakeBinance, path: Path, reconcile_every_s: float = 0.2
                  ) -> AsyncIterator[Desk]:
    desk = await Desk.open(fake, path)
    watcher = asyncio.create_task(watch(desk.broker, period_s=0.05,
                                        reconcile_every_s=reconcile_every_s))
    try:
        await desk.broker.reconcile("BTCUSDT")
        yield desk
    finally:
        watcher.cancel()
        await desk.close()


async def unknown_buy(desk: Desk, seq: int) -> None:
    with pytest.raises(ProtocolError) as info:
        await desk.broker.place("BTCUSDT", market(seq, "BUY", "0.002"))
    assert info.value.code == ErrorCode.TIMEOUT
    assert desk.order_status(f"mb-BTCUSDT-{seq}") == "PENDING_NEW"


def test_a_late_booking_is_journaled_once_and_no_second_entry_is_placed(
        fake: FakeBinance, tmp_path: Path) -> None:
    async def main() -> None:
        async with watched(fake, tmp_path / "j.db") as desk:
            fake.fail("late_booking", delay=1.5)
            await unknown_buy(desk, 1)
            assert fake.pending_bookings() == 1
            # the next LONG, while the first one's outcome is unknown: refused, not sent
            second = await desk.broker.place("BTCUSDT", market(2, "BUY", "0.002"))
            assert second.order.status == "REJECTED"
            assert second.order.reason.startswith("not_available: BTCUSDT places nothing new")
            assert "mb-BTCUSDT-1" in second.order.reason
            assert "mb-BTCUSDT-1" in desk.broker.halted("BTCUSDT")
            other = await desk.broker.place("ETHUSDT", market(1, "BUY", "0.01", "ETHUSDT"))
            assert other.order.status == "FILLED"  # only that symbol waits
            await until(lambda: desk.order_status("mb-BTCUSDT-1") == "FILLED", timeout=10,
                        what="the late booking found and journaled")
            assert desk.broker.halted("BTCUSDT") == ""
            [fill] = desk.journal.order_fills("mb-BTCUSDT-1")
            [trade] = fake.trades("BTCUSDT")
            assert fill.exchange_trade_id == trade["id"]
            assert posts(fake, "mb-BTCUSDT-1") == 1 and posts(fake, "mb-BTCUSDT-2") == 0
            assert len(fake.orders("BTCUSDT")) == 1
            assert_journal_matches_exchange(desk, "BTCUSDT", "BTC")
            assert [u.order.status for u in desk.pushed
                    if u.order.client_order_id == "mb-BTCUSDT-1"][-1] == "FILLED"
            again = await desk.broker.place("BTCUSDT", market(1, "BUY", "0.002"))
            assert again.order.status == "FILLED" and posts(fake, "mb-BTCUSDT-1") == 1
            held = str(Decimal(again.position.qty))[:7]
            sold = await desk.broker.place("BTCUSDT", market(3, "SELL", held))
            assert sold.order.status == "FILLED"  # trading goes on once it is known
            assert_journal_matches_exchange(desk, "BTCUSDT", "BTC")

    run(main())


def test_an_order_never_booked_is_closed_on_evidence_not_on_time(
        fake: FakeBinance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    short_recv_window(monkeypatch)

    async def main() -> None:
        # the user's own 0.01 BTC: while the account holds more than a BUY would have
        # brought, the balance cannot tell whether that BUY was booked
        fake.place_external_order("BTCUSDT", "BUY", "MARKET", "0.01", None, "web_buy_1")
        own = fake.balances()["BTC"][0]
        async with watched(fake, tmp_path / "j.db") as desk:
            fake.fail("never_booked")
            await unknown_buy(desk, 1)
            await until(lambda: fake.count("GET", ALL_ORDERS) >= 3, timeout=10,
                        what="the watcher asking allOrders, again and again")
            assert desk.order_status("mb-BTCUSDT-1") == "PENDING_NEW"  # no guess
            blocked = await desk.broker.place("BTCUSDT", market(2, "BUY", "0.002"))
            assert blocked.order.status == "REJECTED" and "mb-BTCUSDT-1" in blocked.order.reason
            # the user sells their own coins: now the balance agrees with the journal
            fake.place_external_order("BTCUSDT", "SELL", "MARKET", str(own), None, "web_sell_1")
            await until(lambda: desk.order_status("mb-BTCUSDT-1") == "EXPIRED", timeout=10,
                        what="the order closed on the evidence")
            order = desk.journal.get_order("mb-BTCUSDT-1")
            assert order is not None and order.reason.startswith("never booked: ")
            assert "allOrders" in order.reason
            assert posts(fake, "mb-BTCUSDT-1") == 1 and desk.broker.halted("BTCUSDT") == ""
            assert [u.order.status for u in desk.pushed
                    if u.order.client_order_id == "mb-BTCUSDT-1"] == ["EXPIRED"]
            placed = await desk.broker.place("BTCUSDT", market(3, "BUY", "0.002"))
            assert placed.order.status == "FILLED"

    run(main())


def test_an_order_closed_as_never_booked_then_booked_is_adopted_by_reconciliation(
        fake: FakeBinance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    short_recv_window(monkeypatch)

    async def main() -> None:
        async with watched(fake, tmp_path / "j.db") as desk:
            fake.fail("late_booking", delay=2.0)  # later than the evidence is gathered
            await unknown_buy(desk, 1)
            await until(lambda: desk.order_status("mb-BTCUSDT-1") == "EXPIRED", timeout=10,
                        what="the order closed as never booked")
            assert fake.pending_bookings() == 1
            fake.place_external_order("BTCUSDT", "BUY", "MARKET", "0.001", None, "web_buy_1")
            await until(lambda: desk.order_status("mb-BTCUSDT-1") == "FILLED", timeout=10,
                        what="the late trade adopted")
            order = desk.journal.get_order("mb-BTCUSDT-1")
            assert order is not None and order.reason.startswith("adopted: reconciliation")
            ours = next(o for o in fake.orders("BTCUSDT") if o["clientOrderId"] == "mb-BTCUSDT-1")
            ours_trades = [t["id"] for t in fake.trades("BTCUSDT")
                           if t["orderId"] == ours["orderId"]]
            # ours journaled with its trade id, once; the user's own trade is not adopted
            assert [f.exchange_trade_id for f in desk.journal.fills("BTCUSDT")] == ours_trades
            assert desk.journal.get_order("web_buy_1") is None
            assert Decimal(desk.broker.position("BTCUSDT").qty) == Decimal(
                ours["executedQty"]) - sum(Decimal(t["commission"]) for t in fake.trades(
                    "BTCUSDT") if t["orderId"] == ours["orderId"])
            assert any("adopted" in e.detail for e in desk.journal.events())
            assert [u.order.status for u in desk.pushed
                    if u.order.client_order_id == "mb-BTCUSDT-1"] == ["EXPIRED", "FILLED"]
            assert desk.broker.halted("BTCUSDT") == ""

    run(main())


def test_a_resting_order_booked_after_it_was_closed_is_adopted_from_open_orders(
        fake: FakeBinance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    short_recv_window(monkeypatch)

    async def main() -> None:
        async with watched(fake, tmp_path / "j.db") as desk:
            far = str((fake.price("BTCUSDT") * Decimal("0.5")).quantize(Decimal("0.01")))
            fake.fail("late_booking", delay=2.0)
            with pytest.raises(ProtocolError):
                await desk.broker.place("BTCUSDT", limit(1, "BUY", "0.002", far))
            await until(lambda: desk.order_status("mb-BTCUSDT-1") == "EXPIRED", timeout=10,
                        what="the order closed as never booked")
            # booked later: it rests, with no trade to give it away
            await until(lambda: desk.order_status("mb-BTCUSDT-1") == "NEW", timeout=15,
                        what="the resting order adopted")
            assert [o.client_order_id for o in desk.broker.open_orders("BTCUSDT")] == [
                "mb-BTCUSDT-1"]
            canceled = await desk.broker.cancel("BTCUSDT", "mb-BTCUSDT-1")  # ours to cancel
            assert canceled.order.status == "CANCELED" and not fake.open_orders("BTCUSDT")

    run(main())


def test_start_up_reconciliation_adopts_an_order_booked_while_the_bot_was_away(
        fake: FakeBinance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    short_recv_window(monkeypatch)
    path = tmp_path / "j.db"

    async def before_the_crash() -> None:
        async with watched(fake, path, reconcile_every_s=3600) as desk:
            fake.fail("late_booking", delay=2.0)
            await unknown_buy(desk, 1)
            await until(lambda: desk.order_status("mb-BTCUSDT-1") == "EXPIRED", timeout=10,
                        what="the order closed as never booked")

    async def after_the_restart() -> None:
        desk = await Desk.open(fake, path)
        try:
            assert desk.order_status("mb-BTCUSDT-1") == "EXPIRED"
            await desk.broker.reconcile("BTCUSDT")
            assert desk.order_status("mb-BTCUSDT-1") == "FILLED"
            assert_journal_matches_exchange(desk, "BTCUSDT", "BTC")
            await desk.broker.reconcile("BTCUSDT")  # once only
            assert len(desk.journal.fills("BTCUSDT")) == 1
        finally:
            await desk.close()

    run(before_the_crash())
    assert fake.pending_bookings() == 1
    run(until(lambda: fake.pending_bookings() == 0, timeout=10, what="the late booking"))
    run(after_the_restart())
