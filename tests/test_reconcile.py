"""Start-up reconciliation against the local Binance-protocol server: what happened while the
bot was away is journaled; what cannot be explained keeps that symbol from trading."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from orchestrator.exchange.reconcile import NotReconciled, reconcile
from orchestrator.protocol import OrderView
from tests.exchange_support import (
    Desk,
    assert_journal_matches_exchange,
    fake_server as fake,
    limit,
    market,
    run,
)
from tests.fakes.binance import FakeBinance

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
            changes = await reconcile(desk.broker, "BTCUSDT")
            assert changes and "NEW -> FILLED" in changes[0]
            assert not desk.broker.open_orders("BTCUSDT")
            assert desk.journal.get_order("mb-BTCUSDT-1").status == "FILLED"
            assert_journal_matches_exchange(desk, "BTCUSDT", "BTC")
            assert await reconcile(desk.broker, "BTCUSDT") == []  # settled: nothing more
        finally:
            await desk.close()

    run(before_the_crash())
    fake.set_price("BTCUSDT", float(price) * 0.97)  # fills while nobody watches
    for _ in range(200):
        if not fake.open_orders("BTCUSDT"):
            break
        run(_sleep(0.05))
    assert not fake.open_orders("BTCUSDT")
    run(after_the_restart())


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def test_an_unknown_open_order_keeps_only_that_symbol_from_trading(
        fake: FakeBinance, tmp_path: Path) -> None:
    price = fake.price("ETHUSDT")
    far = str((price * Decimal("0.5")).quantize(Decimal("0.01")))
    fake.place_external_order("ETHUSDT", "BUY", "LIMIT", "0.01", far, "web_manual_7")

    async def main() -> None:
        desk = await Desk.open(fake, tmp_path / "j.db")
        try:
            with pytest.raises(NotReconciled, match=r"web_manual_7.*not placed by this multibot"):
                await reconcile(desk.broker, "ETHUSDT")
            assert await reconcile(desk.broker, "BTCUSDT") == []  # another symbol is fine
        finally:
            await desk.close()

    run(main())


def test_an_intent_that_never_reached_the_exchange_expires(
        fake: FakeBinance, tmp_path: Path) -> None:
    async def main() -> None:
        desk = await Desk.open(fake, tmp_path / "j.db")
        try:  # journaled, then the process died before sending
            desk.journal.insert_order(OrderView(
                client_order_id="mb-BTCUSDT-1", symbol="BTCUSDT", side="BUY", type="MARKET",
                quantity="0.002", status="PENDING_NEW", created_ns=desk.broker.now_ns()), 1)
        finally:
            await desk.close()
        desk = await Desk.open(fake, tmp_path / "j.db")
        try:
            changes = await reconcile(desk.broker, "BTCUSDT")
            assert changes == ["mb-BTCUSDT-1: never reached the exchange -> EXPIRED"]
            assert desk.journal.get_order("mb-BTCUSDT-1").status == "EXPIRED"
        finally:
            await desk.close()

    run(main())


def test_our_orders_missing_from_the_journal_are_adopted_and_a_shortfall_refused(
        fake: FakeBinance, tmp_path: Path) -> None:
    async def main() -> None:
        desk = await Desk.open(fake, tmp_path / "j.db")
        try:
            await reconcile(desk.broker, "BTCUSDT")  # the journal exists from now on
            # placed with our id but not journaled (e.g. a journal restored from a backup)
            fake.place_external_order("BTCUSDT", "BUY", "MARKET", "0.002",
                                      client_order_id="mb-BTCUSDT-3")
            changes = await reconcile(desk.broker, "BTCUSDT")
            assert len(changes) == 1 and changes[0].startswith("adopted mb-BTCUSDT-3")
            assert_journal_matches_exchange(desk, "BTCUSDT", "BTC")
            assert desk.broker.next_seq("BTCUSDT") == 4
            # the BTC leaves the account behind the bot's back: it cannot sell what is gone
            held = fake.balances()["BTC"][0]
            fake.place_external_order("BTCUSDT", "SELL", "MARKET", str(held)[:7], None,
                                      "web_sell_1")
            with pytest.raises(NotReconciled, match="the account has only"):
                await reconcile(desk.broker, "BTCUSDT")
            assert (await desk.broker.place("BTCUSDT", market(4, "BUY", "0.002"))
                    ).order.status == "FILLED"  # the broker itself still works
        finally:
            await desk.close()

    run(main())
