"""Start-up reconciliation against the local Binance-protocol server: what happened while the
bot was away is journaled; what cannot be explained keeps that symbol from trading."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from multibot.market.orders import OrderStatus, OrderType, Side
from multibot.wire.protocol import OrderView
from orchestrator.broker.base import NotReconciled
from orchestrator.exchange.reconcile import reconcile
from orchestrator.exchange.watcher import watch
from tests.exchange_support import (
    KEY,
    SECRET,
    Desk,
    assert_journal_matches_exchange,
    fake_server as fake,
    limit,
    market,
    run,
)
from tests.fake_binance_support import until
from tests.fakes.binance import FakeBinance
from tests.support import eventually

__all__ = ["fake"]  # the fixture


def test_an_order_that_filled_while_we_were_away_is_journaled(
        fake: FakeBinance, tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    price = fake.price("BTCUSDT")
    rest_at = str((price * Decimal("0.98")).quantize(Decimal("0.01")))

    async def before_the_crash() -> None:
        desk = await Desk.open(fake, path)
        try:
            assert (await desk.broker.place("BTCUSDT", limit(1, "BUY", "0.002", rest_at))
                    ).order.status == "NEW"
        finally:
            await desk.close()

    async def after_the_restart() -> None:
        desk = await Desk.open(fake, path)
        try:
            assert [o.status for o in desk.broker.open_orders("BTCUSDT")] == ["NEW"]
            changes = await reconcile(desk.broker.ledger, "BTCUSDT")
            assert changes and "NEW -> FILLED" in changes[0]
            assert not desk.broker.open_orders("BTCUSDT")
            assert desk.order_status("mb-BTCUSDT-1") == "FILLED"
            assert_journal_matches_exchange(desk, "BTCUSDT", "BTC")
            assert await reconcile(desk.broker.ledger, "BTCUSDT") == []  # settled: nothing more
        finally:
            await desk.close()

    run(before_the_crash())
    fake.set_price("BTCUSDT", float(price) * 0.97)  # fills while nobody watches
    eventually(lambda: not fake.open_orders("BTCUSDT"), timeout=10,
               what="the resting order to fill on the exchange")
    run(after_the_restart())


def test_an_unknown_open_order_keeps_only_that_symbol_from_trading(
        fake: FakeBinance, tmp_path: Path) -> None:
    price = fake.price("ETHUSDT")
    far = str((price * Decimal("0.5")).quantize(Decimal("0.01")))
    fake.place_external_order("ETHUSDT", "BUY", "LIMIT", "0.01", far, "web_manual_7")

    async def main() -> None:
        desk = await Desk.open(fake, tmp_path / "j.db")
        try:
            with pytest.raises(NotReconciled, match=r"web_manual_7.*not placed by this multibot"):
                await reconcile(desk.broker.ledger, "ETHUSDT")
            assert await reconcile(desk.broker.ledger, "BTCUSDT") == []  # another symbol is fine
        finally:
            await desk.close()

    run(main())


def test_an_intent_that_never_reached_the_exchange_expires_on_evidence(
        fake: FakeBinance, tmp_path: Path) -> None:
    async def main() -> None:
        desk = await Desk.open(fake, tmp_path / "j.db")
        now = desk.broker.ledger.now_ns()
        try:  # journaled, then the process died before (or while) sending
            for seq, age_s in ((1, 40), (2, 1)):
                desk.journal.insert_order(OrderView(
                    client_order_id=f"mb-BTCUSDT-{seq}", symbol="BTCUSDT", side=Side.BUY,
                    type=OrderType.MARKET, quantity="0.002", status=OrderStatus.PENDING_NEW,
                    created_ns=now - age_s * 10**9), seq)
        finally:
            await desk.close()
        desk = await Desk.open(fake, tmp_path / "j.db")
        try:
            # the recent one may still reach the exchange (within its recvWindow): wait
            with pytest.raises(NotReconciled, match=r"mb-BTCUSDT-2 .*outcome is not known "
                                                    r"yet.* try again in 2[89]s"):
                await reconcile(desk.broker.ledger, "BTCUSDT")
            older = desk.journal.get_order("mb-BTCUSDT-1")
            assert older is not None and older.status == "EXPIRED"
            assert older.reason.startswith("never booked: ")  # allOrders, balance agree
            assert desk.order_status("mb-BTCUSDT-2") == "PENDING_NEW"
        finally:
            await desk.close()

    run(main())


def test_another_homes_order_is_refused_and_so_is_a_shortfall(
        fake: FakeBinance, tmp_path: Path) -> None:
    async def main() -> None:
        desk = await Desk.open(fake, tmp_path / "j.db")
        try:
            bought = await desk.broker.place("BTCUSDT", market(1, "BUY", "0.002"))
            assert await reconcile(desk.broker.ledger, "BTCUSDT") == []
            # our id scheme, but not in this journal: another home on the same account
            far = str((fake.price("BTCUSDT") * Decimal("0.5")).quantize(Decimal("0.01")))
            fake.place_external_order("BTCUSDT", "BUY", "LIMIT", "0.002", far, "mb-BTCUSDT-2")
            with pytest.raises(NotReconciled, match=r"mb-BTCUSDT-2 .*not placed by this"):
                await reconcile(desk.broker.ledger, "BTCUSDT")
            assert desk.journal.get_order("mb-BTCUSDT-2") is None  # never adopted
            await desk.client.cancel_order("BTCUSDT", "mb-BTCUSDT-2")
            # the BTC leaves the account behind the bot's back: it cannot sell what is gone
            held = Decimal(bought.position.qty)
            fake.place_external_order("BTCUSDT", "SELL", "MARKET", str(held)[:7], None,
                                      "web_sell_1")
            with pytest.raises(NotReconciled, match="the account has only"):
                await reconcile(desk.broker.ledger, "BTCUSDT")
        finally:
            await desk.close()

    run(main())


def test_a_shortfall_found_while_trading_halts_the_symbol_until_it_agrees_again(
        tmp_path: Path) -> None:
    with FakeBinance(api_key=KEY, api_secret=SECRET, symbols=["BTCUSDT"],
                     balances={"USDT": "10000"}, tick_s=0.05, weight_limit=120_000,
                     start_prices={"BTCUSDT": 50000.0}) as fake:  # reconciled every 0.1 s
        run(_shortfall_while_trading(fake, tmp_path))


async def _shortfall_while_trading(fake: FakeBinance, tmp_path: Path) -> None:
    desk = await Desk.open(fake, tmp_path / "j.db")
    watcher = asyncio.create_task(watch(desk.broker, period_s=0.05, reconcile_every_s=0.1))
    try:
        await desk.broker.reconcile("BTCUSDT")
        bought = await desk.broker.place("BTCUSDT", market(1, "BUY", "0.002"))
        held = str(Decimal(bought.position.qty))[:7]
        # the coins leave the account behind the bot's back (the user's own order)
        fake.place_external_order("BTCUSDT", "SELL", "MARKET", held, None, "web_sell_1")
        halt = await until(lambda: desk.broker.halted("BTCUSDT"), timeout=10,
                           what="the shortfall seen twice: the symbol halted")
        assert halt.startswith("not reconciled with the exchange: the journal says")
        refused = await desk.broker.place("BTCUSDT", market(2, "SELL", held))
        assert refused.order.status == "REJECTED" and "not reconciled" in refused.order.reason
        assert desk.journal.get_order("web_sell_1") is None  # the user's: not adopted
        fake.place_external_order("BTCUSDT", "BUY", "MARKET", "0.002", None, "web_buy_1")
        await until(lambda: desk.broker.halted("BTCUSDT") == "", timeout=10,
                    what="the halt lifted once the account holds enough again")
    finally:
        watcher.cancel()
        await desk.close()
