"""The exchange broker and the rate-limited client, with the REAL python-binance AsyncClient
against the local Binance-protocol server: orders, unknown outcomes, rejections, limits."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from multibot.wire.protocol import ProtocolError
from orchestrator.exchange.watcher import watch
from tests.exchange_support import (
    KEY,
    ORDER_PATH,
    SECRET,
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


def test_market_round_trip_is_journaled_as_the_exchange_booked_it(
        fake: FakeBinance, tmp_path: Path) -> None:
    async def main() -> None:
        desk = await Desk.open(fake, tmp_path / "j.db")
        try:
            bought = await desk.broker.place("BTCUSDT", market(1, "BUY", "0.002"))
            assert bought.order.status == "FILLED" and bought.fills
            assert bought.fills[0].fee_asset == "BTC"  # Binance takes a buy's fee in BTC
            held = Decimal(bought.position.qty)
            assert held == Decimal("0.002") - Decimal(bought.fills[0].fee)
            sold = await desk.broker.place("BTCUSDT", market(2, "SELL", str(held)[:7]))
            assert sold.order.status == "FILLED", sold.order.reason
            again = await desk.broker.place("BTCUSDT", market(1, "BUY", "0.002"))
            assert again.order == bought.order  # a resend is answered from the journal
            assert posts(fake, "mb-BTCUSDT-1") == 1
            assert_journal_matches_exchange(desk, "BTCUSDT", "BTC")
        finally:
            await desk.close()

    run(main())


def test_5xx_after_the_exchange_accepted_leaves_exactly_one_order(
        fake: FakeBinance, tmp_path: Path) -> None:
    async def main() -> None:
        desk = await Desk.open(fake, tmp_path / "j.db")
        try:
            fake.fail("5xx_after_accept", method="POST", path=ORDER_PATH)
            update = await desk.broker.place("BTCUSDT", market(1, "BUY", "0.002"))
            assert update.order.status == "FILLED"  # found by its client order id
            assert posts(fake, "mb-BTCUSDT-1") == 1  # never resent
            assert len(fake.orders("BTCUSDT")) == 1
            assert_journal_matches_exchange(desk, "BTCUSDT", "BTC")
        finally:
            await desk.close()

    run(main())


@pytest.mark.parametrize(("kind", "code", "options"), [
    ("-2010", "insufficient_balance", {}),
    ("-2010", "order_rejected", {"msg": "Duplicate order sent."}),  # -2010 is not only balance
    ("-2010", "order_rejected", {"msg": "Market is closed."}),
    ("-2010", "order_rejected", {"msg": "Filter failure: EXCHANGE_MAX_NUM_ORDERS"}),
    ("-1013", "order_rejected", {}),
])
def test_rejections_are_journaled_reported_and_not_retried(
        fake: FakeBinance, tmp_path: Path, kind: str, code: str,
        options: dict[str, Any]) -> None:
    async def main() -> None:
        desk = await Desk.open(fake, tmp_path / "j.db")
        try:
            fake.fail(kind, method="POST", path=ORDER_PATH, **options)
            update = await desk.broker.place("BTCUSDT", market(1, "BUY", "0.002"))
            assert update.order.status == "REJECTED"
            assert update.order.reason.startswith(f"{code}: binance {kind}")
            again = await desk.broker.place("BTCUSDT", market(1, "BUY", "0.002"))
            assert again.order.status == "REJECTED"
            assert posts(fake, "mb-BTCUSDT-1") == 1
        finally:
            await desk.close()

    run(main())


def test_local_checks_reject_before_anything_is_sent(fake: FakeBinance, tmp_path: Path) -> None:
    async def main() -> None:
        desk = await Desk.open(fake, tmp_path / "j.db")
        try:
            tiny = await desk.broker.place("BTCUSDT", market(1, "BUY", "0.00001"))
            assert tiny.order.status == "REJECTED" and "NOTIONAL" in tiny.order.reason
            oversell = await desk.broker.place("BTCUSDT", market(2, "SELL", "0.01"))
            assert oversell.order.reason.startswith("insufficient_balance")
            garbage = await desk.broker.place("BTCUSDT", market(3, "BUY", "1e-3x"))
            assert garbage.order.status == "REJECTED"
            assert garbage.order.reason.startswith("bad_body: quantity")
            assert fake.count("POST", ORDER_PATH) == 0
        finally:
            await desk.close()

    run(main())


def test_429_makes_every_caller_wait_for_retry_after(fake: FakeBinance, tmp_path: Path) -> None:
    async def main() -> None:
        desk = await Desk.open(fake, tmp_path / "j.db")
        try:
            fake.fail("429", method="POST", path=ORDER_PATH, retry_after=2)
            started = time.monotonic()
            order = asyncio.create_task(desk.broker.place("BTCUSDT", market(1, "BUY", "0.002")))
            await until(lambda: fake.count("POST", ORDER_PATH, status=429), what="its 429")
            await desk.client.account()  # another caller: waits for the same back-off
            account_done = time.monotonic() - started
            update = await order
            assert update.order.status == "FILLED"
            assert account_done >= 1.9
            assert posts(fake, "mb-BTCUSDT-1") == 2  # refused unexecuted once, then placed
            assert len(fake.orders("BTCUSDT")) == 1
            assert desk.client.limiter.snapshot().throttled >= 1
        finally:
            await desk.close()

    run(main())


def test_a_clock_jump_is_resynced_on_1021(fake: FakeBinance, tmp_path: Path) -> None:
    async def main() -> None:
        desk = await Desk.open(fake, tmp_path / "j.db")
        try:
            before = desk.client.sdk.timestamp_offset
            fake.set_clock_offset(-30_000)  # our timestamps are now 30 s in its future
            update = await desk.broker.place("BTCUSDT", market(1, "BUY", "0.002"))
            assert update.order.status == "FILLED"
            assert desk.client.sdk.timestamp_offset < before - 25_000
        finally:
            await desk.close()

    run(main())


def test_a_resting_limit_fills_later_and_the_watcher_reports_it(
        fake: FakeBinance, tmp_path: Path) -> None:
    async def main() -> None:
        desk = await Desk.open(fake, tmp_path / "j.db")
        watcher = asyncio.create_task(watch(desk.broker, period_s=0.1))
        try:
            price = fake.price("BTCUSDT")
            rest_at = str((price * Decimal("0.98")).quantize(Decimal("0.01")))
            resting = await desk.broker.place("BTCUSDT", limit(1, "BUY", "0.002", rest_at))
            assert resting.order.status == "NEW"
            assert fake.balances()["USDT"][1] > 0  # locked on the exchange
            fake.set_price("BTCUSDT", float(price) * 0.97)
            await until(lambda: desk.pushed, what="the watcher's report")
            assert desk.pushed[-1].order.status == "FILLED"
            assert desk.pushed[-1].fills
            assert_journal_matches_exchange(desk, "BTCUSDT", "BTC")
            far = str((price * Decimal("0.5")).quantize(Decimal("0.01")))
            await desk.broker.place("BTCUSDT", limit(2, "BUY", "0.002", far))
            canceled = await desk.broker.cancel("BTCUSDT", "mb-BTCUSDT-2")
            assert canceled.order.status == "CANCELED" and not fake.open_orders("BTCUSDT")
            with pytest.raises(ProtocolError, match="no open order"):
                await desk.broker.cancel("BTCUSDT", "mb-BTCUSDT-2")
        finally:
            watcher.cancel()
            await desk.close()

    run(main())


def test_partial_fills_are_journaled_piece_by_piece_from_my_trades(tmp_path: Path) -> None:
    # ticks 0.5 s apart: the watcher (every ~0.2 s) sees the order between its two halves
    with FakeBinance(api_key=KEY, api_secret=SECRET, symbols=["BTCUSDT"], partial_fills=True,
                     balances={"USDT": "10000"}, tick_s=0.5,
                     start_prices={"BTCUSDT": 50000.0}) as fake:
        async def main() -> None:
            desk = await Desk.open(fake, tmp_path / "j.db")
            watcher = asyncio.create_task(watch(desk.broker, period_s=0.05))
            try:
                price = fake.price("BTCUSDT")
                rest_at = str((price * Decimal("0.98")).quantize(Decimal("0.01")))
                await desk.broker.place("BTCUSDT", limit(1, "BUY", "0.002", rest_at))
                fake.set_price("BTCUSDT", float(price) * 0.97)
                await until(lambda: desk.pushed and desk.pushed[-1].order.status == "FILLED",
                            what="the last piece filled")
                statuses = [u.order.status for u in desk.pushed]
                assert statuses[-1] == "FILLED" and "PARTIALLY_FILLED" in statuses
                assert len(desk.journal.fills("BTCUSDT")) == 2
                assert_journal_matches_exchange(desk, "BTCUSDT", "BTC")
            finally:
                watcher.cancel()
                await desk.close()

        run(main())
