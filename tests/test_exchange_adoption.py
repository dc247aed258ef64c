"""Which trades reconciliation and the user data stream may adopt into the journal, against
the local Binance-protocol server with the REAL python-binance client:
- an order closed as never booked that the engine books after all is adopted even when the
  next entry filled before reconciliation looked (its trades then lie before the newest
  journaled one);
- a trade under one of our client order ids whose journaled order the exchange had already
  confirmed final (or never received) is another order's (another home's: ids are unique only
  among open orders) and is never adopted."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from multibot.wire.protocol import ProtocolError
from orchestrator.exchange.watcher import reconcile_all
from tests.exchange_support import (
    Desk,
    assert_journal_matches_exchange,
    fake_server as fake,
    limit,
    market,
    run,
)
from tests.fake_binance_support import until
from tests.fakes.binance import FakeBinance
from tests.test_unknown_outcomes import short_recv_window, unknown_buy, watched
from tests.test_user_stream import streaming

__all__ = ["fake"]  # the fixture


@pytest.fixture(autouse=True)
def quick_lookups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("orchestrator.exchange.broker._LOOKUPS_S", (0.05, 0.05))


@pytest.mark.parametrize("found_by", ["periodic", "restart"])
def test_a_late_booking_is_adopted_after_the_next_entry_filled(
        fake: FakeBinance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        found_by: str) -> None:
    short_recv_window(monkeypatch)
    path = tmp_path / "j.db"

    async def before() -> None:
        async with watched(fake, path, reconcile_every_s=3600) as desk:  # no stream
            fake.fail("late_booking", delay=2.0)  # later than the evidence is gathered
            await unknown_buy(desk, 1)
            await until(lambda: desk.order_status("mb-BTCUSDT-1") == "EXPIRED", timeout=10,
                        what="the order closed as never booked")
            await until(lambda: fake.pending_bookings() == 0, timeout=10,
                        what="the engine booking it after all")
            # the next entry fills before reconciliation looks: its trade is newer
            second = await desk.broker.place("BTCUSDT", market(2, "BUY", "0.002"))
            assert second.order.status == "FILLED"
            if found_by == "periodic":
                await reconcile_all(desk.broker)
                check(desk)

    async def after() -> None:
        desk = await Desk.open(fake, path)
        try:
            await desk.broker.reconcile("BTCUSDT")
            check(desk)
        finally:
            await desk.close()

    def check(desk: Desk) -> None:
        order = desk.journal.get_order("mb-BTCUSDT-1")
        assert order is not None and order.status == "FILLED", order
        assert order.reason.startswith("adopted: ")
        # both entries held: the account's coins are all journaled
        assert_journal_matches_exchange(desk, "BTCUSDT", "BTC")

    run(before())
    if found_by == "restart":
        run(after())


def foreign_twin(fake: FakeBinance, coid: str) -> None:
    """Another multibot home on the same account places its own order of that id."""
    fake.place_external_order("BTCUSDT", "BUY", "MARKET", "0.002", None, coid)


async def rejected_in_maintenance(desk: Desk, fake: FakeBinance) -> None:
    fake.set_maintenance("BTCUSDT")
    rejected = await desk.broker.place("BTCUSDT", market(1, "BUY", "0.002"))
    assert rejected.order.status == "REJECTED"
    fake.set_maintenance("BTCUSDT", on=False)


def assert_not_adopted(desk: Desk, fake: FakeBinance) -> None:
    assert desk.order_status("mb-BTCUSDT-1") == "REJECTED"
    assert desk.journal.order_fills("mb-BTCUSDT-1") == []
    twin = next(o["orderId"] for o in fake.orders("BTCUSDT")
                if o["clientOrderId"] == "mb-BTCUSDT-1")
    twins = {t["id"] for t in fake.trades("BTCUSDT") if t["orderId"] == twin}
    assert twins and not twins & {f.exchange_trade_id for f in desk.journal.fills("BTCUSDT")}


def test_reconciliation_never_adopts_another_homes_order_of_a_closed_id(
        fake: FakeBinance, tmp_path: Path) -> None:
    async def main() -> None:
        async with watched(fake, tmp_path / "j.db", reconcile_every_s=3600) as desk:
            await rejected_in_maintenance(desk, fake)
            foreign_twin(fake, "mb-BTCUSDT-1")
            await reconcile_all(desk.broker)
            assert_not_adopted(desk, fake)
            assert Decimal(desk.broker.position("BTCUSDT").qty) == 0
            assert desk.broker.halted("BTCUSDT") == ""  # more coins than ours: not a problem

    run(main())


def test_the_user_stream_never_adopts_another_homes_order_of_a_closed_id(
        fake: FakeBinance, tmp_path: Path) -> None:
    async def main() -> None:
        async with streaming(fake, tmp_path / "j.db") as desk:
            await rejected_in_maintenance(desk, fake)
            foreign_twin(fake, "mb-BTCUSDT-1")
            # a fill of our own after it: once the stream told that, it told the twin's too
            price = fake.price("BTCUSDT")
            rest_at = str((price * Decimal("0.98")).quantize(Decimal("0.01")))
            resting = await desk.broker.place("BTCUSDT", limit(2, "BUY", "0.002", rest_at))
            assert resting.order.status == "NEW"
            fake.set_price("BTCUSDT", float(price) * 0.97)
            await until(lambda: desk.order_status("mb-BTCUSDT-2") == "FILLED", timeout=10,
                        what="our own fill by the stream")
            assert_not_adopted(desk, fake)  # its event came first, in the symbol's order

    run(main())


def test_a_cancel_asked_before_a_late_booking_is_carried_out_once_it_is_adopted(
        fake: FakeBinance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    short_recv_window(monkeypatch)

    async def main() -> None:
        async with watched(fake, tmp_path / "j.db") as desk:
            far = str((fake.price("BTCUSDT") * Decimal("0.5")).quantize(Decimal("0.01")))
            fake.fail("late_booking", delay=2.0)
            with pytest.raises(ProtocolError):
                await desk.broker.place("BTCUSDT", limit(1, "BUY", "0.002", far))
            with pytest.raises(ProtocolError, match="it will be cancelled once it is"):
                await desk.broker.cancel("BTCUSDT", "mb-BTCUSDT-1")
            await until(lambda: desk.order_status("mb-BTCUSDT-1") == "EXPIRED", timeout=10,
                        what="the order closed as never booked")
            # booked after all, resting: the broker promised to cancel it once it is
            await until(lambda: fake.pending_bookings() == 0, timeout=10, what="the booking")
            await until(lambda: desk.order_status("mb-BTCUSDT-1") == "CANCELED", timeout=15,
                        what="the adopted order cancelled as asked")
            assert not fake.open_orders("BTCUSDT") and desk.broker.halted("BTCUSDT") == ""

    run(main())
