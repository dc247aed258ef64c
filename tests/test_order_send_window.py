"""When an order's request is signed, and so when the exchange can no longer execute it: an
order goes out within ``ExchangeClient.order_send_within_s`` of its intent or not at all, and
the never-booked evidence waits for the recvWindow counted from that bound, not from the
intent (a request signed late is still valid after the intent's own window). Against the
local Binance-protocol server with the REAL python-binance client."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.exchange_support import (
    ORDER_PATH,
    Desk,
    assert_journal_matches_exchange,
    fake_server as fake,
    market,
    posts,
    run,
)
from tests.fake_binance_support import until
from tests.fakes.binance import FakeBinance
from tests.test_unknown_outcomes import unknown_buy, watched

__all__ = ["fake"]  # the fixture


@pytest.fixture(autouse=True)
def short_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if requests were signed with a 0.3 s recvWindow (python-binance's is 10 s)."""
    monkeypatch.setattr("orchestrator.exchange.broker._LOOKUPS_S", (0.05, 0.05))
    monkeypatch.setattr("orchestrator.exchange.ledger.RECV_WINDOW_NS", 200_000_000)
    monkeypatch.setattr("orchestrator.exchange.ledger.SETTLE_MARGIN_NS", 100_000_000)


def test_an_order_that_cannot_go_out_in_time_is_not_sent_late(
        fake: FakeBinance, tmp_path: Path) -> None:
    async def main() -> None:
        desk = await Desk.open(fake, tmp_path / "j.db")
        desk.client.order_send_within_s = 0.5
        try:
            fake.fail("-1021", method="POST", path=ORDER_PATH)  # refused for its timestamp
            fake.fail("slow", delay=1.0, method="GET", path="/api/v3/time")  # slow resync
            update = await desk.broker.place("BTCUSDT", market(1, "BUY", "0.002"))
            assert update.order.status == "REJECTED"
            assert "not sent" in update.order.reason
            assert posts(fake, "mb-BTCUSDT-1") == 1 and not fake.orders("BTCUSDT")
        finally:
            await desk.close()

    run(main())


def test_the_evidence_waits_for_the_recv_window_of_a_request_signed_late(
        fake: FakeBinance, tmp_path: Path) -> None:
    async def main() -> None:
        async with watched(fake, tmp_path / "j.db", reconcile_every_s=3600) as desk:
            # signed up to 2 s after its intent: valid until 2.3 s after it, not 0.3 s
            desk.client.order_send_within_s = 2.0
            fake.fail("late_booking", delay=1.2)
            await unknown_buy(desk, 1)
            await until(lambda: desk.order_status("mb-BTCUSDT-1") != "PENDING_NEW",
                        timeout=10, what="the order's outcome")
            assert desk.order_status("mb-BTCUSDT-1") == "FILLED"  # never closed by guess
            assert [u.order.status for u in desk.pushed
                    if u.order.client_order_id == "mb-BTCUSDT-1"] == ["FILLED"]
            assert_journal_matches_exchange(desk, "BTCUSDT", "BTC")

    run(main())
