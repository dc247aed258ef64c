"""Cancels retried until the exchange confirms the order final, a new order that waits for a
cancel's outcome, myTrades paged with fromId, and MAX_NUM_ORDERS over our open orders: the
exchange broker with the REAL python-binance client against the local Binance-protocol
server."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from multibot.wire.protocol import ErrorCode, ProtocolError
from orchestrator.exchange import ledger
from orchestrator.exchange.watcher import watch
from tests.exchange_support import (
    ORDER_PATH,
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

OVERLOADED = "Server is currently overloaded with other requests. Please try again."


def far_below(fake: FakeBinance) -> str:
    return str((fake.price("BTCUSDT") * Decimal("0.5")).quantize(Decimal("0.01")))


def test_a_cancel_rejected_with_another_code_is_retried_until_confirmed(
        fake: FakeBinance, tmp_path: Path) -> None:
    async def main() -> None:
        desk = await Desk.open(fake, tmp_path / "j.db")
        watcher = asyncio.create_task(watch(desk.broker, period_s=0.05))
        try:
            await desk.broker.place("BTCUSDT", limit(1, "BUY", "0.002", far_below(fake)))
            fake.fail("-1013", times=2, method="DELETE", path=ORDER_PATH, msg=OVERLOADED)
            with pytest.raises(ProtocolError, match="it will be tried again") as info:
                await desk.broker.cancel("BTCUSDT", "mb-BTCUSDT-1")
            assert info.value.code == ErrorCode.ORDER_REJECTED
            assert "cancel of order mb-BTCUSDT-1" in desk.broker.halted("BTCUSDT")
            await until(lambda: desk.order_status("mb-BTCUSDT-1") == "CANCELED", timeout=10,
                        what="the cancel retried until confirmed")
            assert not fake.open_orders("BTCUSDT")
            assert fake.count("DELETE", ORDER_PATH) == 3  # refused twice, then confirmed
            assert desk.pushed[-1].order.status == "CANCELED"
            assert desk.broker.halted("BTCUSDT") == ""
        finally:
            watcher.cancel()
            await desk.close()

    run(main())


@pytest.mark.parametrize("cancel_failures", [1, 2])
def test_a_new_order_waits_for_the_outcome_of_a_failed_cancel(
        fake: FakeBinance, tmp_path: Path, cancel_failures: int) -> None:
    async def main() -> None:
        desk = await Desk.open(fake, tmp_path / "j.db")
        try:
            await desk.broker.place("BTCUSDT", limit(1, "BUY", "0.002", far_below(fake)))
            fake.fail("5xx", times=cancel_failures, method="DELETE", path=ORDER_PATH)
            with pytest.raises(ProtocolError, match="tried again") as info:
                await desk.broker.cancel("BTCUSDT", "mb-BTCUSDT-1")
            assert info.value.code == ErrorCode.TIMEOUT
            # the target flips: the new order first has the cancel tried again
            update = await desk.broker.place("BTCUSDT", market(2, "BUY", "0.002"))
            if cancel_failures == 1:  # confirmed now: the order goes out after it
                assert desk.order_status("mb-BTCUSDT-1") == "CANCELED"
                assert update.order.status == "FILLED"
                calls = [(r.method, r.params.get("newClientOrderId")) for r in fake.requests()
                         if r.path == ORDER_PATH and r.method in ("DELETE", "POST")]
                assert calls[-1] == ("POST", "mb-BTCUSDT-2") and calls[-2][0] == "DELETE"
            else:  # still not confirmed: the new order is refused, naming the cancel
                assert desk.order_status("mb-BTCUSDT-1") == "NEW"
                assert update.order.status == "REJECTED"
                assert "cancel of order mb-BTCUSDT-1 is not confirmed" in update.order.reason
                assert posts(fake, "mb-BTCUSDT-2") == 0
                assert len(fake.open_orders("BTCUSDT")) == 1
        finally:
            await desk.close()

    run(main())


def test_an_order_with_more_trades_than_a_page_is_journaled_in_full(
        fake: FakeBinance, tmp_path: Path) -> None:
    async def main() -> None:
        desk = await Desk.open(fake, tmp_path / "j.db")
        try:
            # a thin book: a MARKET BUY of 0.012 takes 1200 levels of 0.00001, one trade each
            fake.set_liquidity("BTCUSDT", levels=["0.00001"] * 1200, level_ticks=0)
            fake.fail("5xx_after_accept", method="POST", path=ORDER_PATH)  # its fills are lost
            update = await desk.broker.place("BTCUSDT", market(1, "BUY", "0.012"))
            assert update.order.status == "FILLED"  # found, with every trade from myTrades
            assert len(update.fills) == len(fake.trades("BTCUSDT")) == 1200
            pages = [r.params for r in fake.requests() if r.path == "/api/v3/myTrades"]
            assert len(pages) == 2 and pages[1]["fromId"] == str(
                fake.trades("BTCUSDT")[1000]["id"])
            assert_journal_matches_exchange(desk, "BTCUSDT", "BTC")
        finally:
            await desk.close()

    run(main())


def test_max_num_orders_counts_the_symbols_open_orders(
        fake: FakeBinance, tmp_path: Path) -> None:
    async def main() -> None:
        desk = await Desk.open(fake, tmp_path / "j.db")
        try:
            rules = desk.broker.book.rules["BTCUSDT"]
            desk.broker.add_rules(msgspec.structs.replace(rules, max_num_orders=1))
            first = await desk.broker.place("BTCUSDT", limit(1, "BUY", "0.002", far_below(fake)))
            assert first.order.status == "NEW"
            second = await desk.broker.place("BTCUSDT", limit(2, "BUY", "0.002",
                                                                 far_below(fake)))
            assert second.order.status == "REJECTED"
            assert "MAX_NUM_ORDERS" in second.order.reason
            assert posts(fake, "mb-BTCUSDT-2") == 0
        finally:
            await desk.close()

    run(main())


def test_every_signed_request_carries_the_recv_window_the_evidence_assumes(
        fake: FakeBinance, tmp_path: Path) -> None:
    async def main() -> None:
        desk = await Desk.open(fake, tmp_path / "j.db")
        try:
            await desk.broker.place("BTCUSDT", market(1, "BUY", "0.002"))
        finally:
            await desk.close()

    run(main())
    [posted] = [r for r in fake.requests() if r.method == "POST" and r.path == ORDER_PATH]
    assert int(posted.params["recvWindow"]) * 1_000_000 == ledger.RECV_WINDOW_NS


def test_all_orders_and_my_trades_are_paged_to_the_end(
        fake: FakeBinance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.set_max_page(2)  # Binance's pages are 1000 rows: ours as well, shrunk alike
    monkeypatch.setattr("orchestrator.exchange.client.PAGE", 2)
    for n in range(5):
        fake.place_external_order("BTCUSDT", "BUY", "MARKET", "0.001", None, f"web_{n}")

    async def main() -> None:
        desk = await Desk.open(fake, tmp_path / "j.db")
        try:
            orders = await desk.client.all_orders("BTCUSDT", start_ms=0)
            assert [o.client_order_id for o in orders] == [f"web_{n}" for n in range(5)]
            trades = await desk.client.my_trades("BTCUSDT")
            assert [t.trade_id for t in trades] == [t["id"] for t in fake.trades("BTCUSDT")]
        finally:
            await desk.close()

    run(main())
    assert fake.count("GET", "/api/v3/allOrders") == 3  # 2 + 2 + 1
    assert fake.count("GET", "/api/v3/myTrades") == 3


def test_cancel_all_also_cancels_an_order_placed_while_it_runs(
        fake: FakeBinance, tmp_path: Path) -> None:
    """The worker's next order is inside the broker (retrying a failed cancel first, slowly)
    when the worker is gone: the broker's cancel-all listed the open orders before that order
    existed, and must not leave it resting unwatched."""
    async def main() -> None:
        desk = await Desk.open(fake, tmp_path / "j.db")
        try:
            price = far_below(fake)
            await desk.broker.place("BTCUSDT", limit(1, "BUY", "0.002", price))
            fake.fail("5xx", method="DELETE", path=ORDER_PATH)
            with pytest.raises(ProtocolError, match="tried again"):
                await desk.broker.cancel("BTCUSDT", "mb-BTCUSDT-1")
            fake.fail("slow", method="DELETE", path=ORDER_PATH, delay=1.0)
            worker_place = asyncio.create_task(
                desk.broker.place("BTCUSDT", limit(2, "BUY", "0.002", price)))
            lock = desk.broker.ledger.lock("BTCUSDT")
            await until(lambda: lock.locked() and not worker_place.done(), timeout=5,
                        what="the new order to be retrying the cancel first")
            await desk.broker.cancel_all("BTCUSDT")
            await worker_place
            assert desk.order_status("mb-BTCUSDT-1") == "CANCELED"
            assert desk.order_status("mb-BTCUSDT-2") == "CANCELED"
            assert fake.open_orders("BTCUSDT") == []
        finally:
            await desk.close()

    run(main())
