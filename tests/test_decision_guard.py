"""One decision per symbol per bar, ever, in both brokers: a decision on a bar at or before the
symbol's last journaled decision is refused (STALE_DECISION) before it is journaled or sent,
also by a broker restarted on the same journal; exit retries pass; a resend of a journaled id
is answered from the journal as before. The exchange path runs the REAL python-binance client
against the local Binance-protocol server."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from multibot.market.bar import Bar
from multibot.market.orders import OrderType, Side
from multibot.market.rules import bundled_rules
from multibot.wire.protocol import ErrorCode, PlaceOrder, ProtocolError
from orchestrator.broker.journal import Journal
from orchestrator.broker.memory_journal import MemoryJournal
from orchestrator.broker.paper import PaperBroker
from tests.exchange_support import Desk, fake_server as fake, market, posts, run
from tests.fakes.binance import FakeBinance
from tests.support import FleetCli

__all__ = ["fake"]  # the fixture

RULES = bundled_rules()


def _order(seq: int, side: str, bar_time: int | None, *, qty: str = "0.002",
           exit_retry: bool = False) -> PlaceOrder:
    return PlaceOrder(client_order_id=f"mb-BTCUSDT-{seq}", side=Side(side),
                      type=OrderType.MARKET, quantity=qty, bar_time=bar_time,
                      exit_retry=exit_retry)


def _paper(journal: Journal | MemoryJournal) -> PaperBroker:
    broker = PaperBroker(journal, RULES)
    broker.on_bar(Bar(symbol="BTCUSDT", open_time=0, close_time=59_999, open=50_000.0,
                      high=50_000.0, low=50_000.0, close=50_000.0, volume=1.0))
    return broker


def _refused(broker: PaperBroker, order: PlaceOrder) -> ErrorCode:
    with pytest.raises(ProtocolError) as refused:
        broker.place_now("BTCUSDT", order)
    return refused.value.code


def test_paper_refuses_a_second_decision_on_a_bar_even_after_a_restart(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db") as journal:
        broker = _paper(journal)
        bought = broker.place_now("BTCUSDT", _order(1, "BUY", 60_000))
        assert bought.order.status == "FILLED"
        assert broker.decisions.last("BTCUSDT") == 60_000
        # the same bar again (a re-sent bar), or an older one: refused, nothing journaled
        assert _refused(broker, _order(2, "SELL", 60_000)) == ErrorCode.STALE_DECISION
        assert _refused(broker, _order(3, "BUY", 0)) == ErrorCode.STALE_DECISION
        assert journal.get_order("mb-BTCUSDT-2") is None
        assert journal.get_order("mb-BTCUSDT-3") is None
        # a resend of the journaled id is answered from the journal, not refused
        assert broker.place_now("BTCUSDT", _order(1, "BUY", 60_000)).order == bought.order
    with Journal(tmp_path / "j.db") as journal:  # a new orchestrator on the same journal
        broker = _paper(journal)
        assert broker.decisions.last("BTCUSDT") == 60_000
        assert _refused(broker, _order(4, "SELL", 60_000)) == ErrorCode.STALE_DECISION
        assert broker.decisions.duplicate_bars("BTCUSDT") == 3  # each refusal counted once
        _refused(broker, _order(4, "SELL", 60_000))  # the worker's resend of it
        assert journal.duplicate_bars() == {"BTCUSDT": 3}
        held = broker.position("BTCUSDT").qty
        sold = broker.place_now("BTCUSDT", _order(5, "SELL", 120_000, qty=held))
        assert sold.order.status == "FILLED"
        assert broker.decisions.last("BTCUSDT") == 120_000


def test_paper_lets_exit_retries_through_and_refuses_malformed_decisions() -> None:
    broker = _paper(MemoryJournal())
    broker.place_now("BTCUSDT", _order(1, "BUY", 60_000, qty="0.004"))
    # an exit retry on the same bar (or with no bar) is no new decision
    first = broker.place_now("BTCUSDT", _order(2, "SELL", 60_000, qty="0.002", exit_retry=True))
    second = broker.place_now("BTCUSDT", _order(3, "SELL", None, qty="0.001", exit_retry=True))
    assert first.order.status == second.order.status == "FILLED"
    assert broker.decisions.last("BTCUSDT") == 60_000  # retries do not move it
    assert _refused(broker, _order(4, "BUY", 120_000, exit_retry=True)) == ErrorCode.BAD_BODY
    assert _refused(broker, _order(5, "BUY", None)) == ErrorCode.BAD_BODY
    assert broker.place_now("BTCUSDT", _order(6, "SELL", 120_000, qty="0.0009")).order.status \
        == "FILLED"


def test_a_rejected_decision_is_still_the_decision_of_its_bar() -> None:
    broker = _paper(MemoryJournal())
    rejected = broker.place_now("BTCUSDT", _order(1, "SELL", 60_000))  # nothing held
    assert rejected.order.status == "REJECTED"
    assert _refused(broker, _order(2, "BUY", 60_000)) == ErrorCode.STALE_DECISION


def test_worker_reports_add_up_over_restarts_of_the_worker(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db") as journal:
        decisions = _paper(journal).decisions
        decisions.reported("BTCUSDT", 100, 0)
        decisions.reported("BTCUSDT", 100, 2)
        decisions.reported("BTCUSDT", 100, 2)  # the same count again: nothing new
        decisions.reported("BTCUSDT", 200, 1)  # a new process counts from 0
    with Journal(tmp_path / "j.db") as journal:
        assert _paper(journal).decisions.duplicate_bars("BTCUSDT") == 3


def test_exchange_refuses_a_stale_decision_before_it_reaches_the_exchange(
        fake: FakeBinance, tmp_path: Path) -> None:
    async def main() -> None:
        desk = await Desk.open(fake, tmp_path / "j.db")
        try:
            bought = await desk.broker.place("BTCUSDT", market(5, "BUY", "0.002"))
            assert bought.order.status == "FILLED"
            stale = market(6, "SELL", "0.001")  # decided on bar 6, then ...
            again = msgspec.structs.replace(stale, bar_time=5)  # ... on bar 5 again
            with pytest.raises(ProtocolError) as refused:
                await desk.broker.place("BTCUSDT", again)
            assert refused.value.code == ErrorCode.STALE_DECISION
            assert posts(fake, "mb-BTCUSDT-6") == 0
            assert desk.journal.get_order("mb-BTCUSDT-6") is None
            with pytest.raises(ProtocolError) as bad:
                await desk.broker.place("BTCUSDT", msgspec.structs.replace(
                    market(7, "BUY", "0.002"), exit_retry=True))
            assert bad.value.code == ErrorCode.BAD_BODY and posts(fake, "mb-BTCUSDT-7") == 0
            # the resend of a journaled id is answered from the journal, as before
            assert (await desk.broker.place("BTCUSDT", market(5, "BUY", "0.002"))).order \
                == bought.order
            assert posts(fake, "mb-BTCUSDT-5") == 1
            held = Decimal(bought.position.qty)
            retry = msgspec.structs.replace(market(8, "SELL", str(held)[:7]), bar_time=5,
                                            exit_retry=True)
            assert (await desk.broker.place("BTCUSDT", retry)).order.status == "FILLED"
        finally:
            await desk.close()
        with Journal(tmp_path / "j.db") as journal:  # what a restarted orchestrator reads
            assert journal.last_decision_bars() == {"BTCUSDT": 5}

    run(main())


def test_another_feed_clock_starts_the_decisions_afresh(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db") as journal:
        journal.start_decision_clock("replay:1m")
        _paper(journal).place_now("BTCUSDT", _order(1, "BUY", 1_735_689_600_000))
        journal.start_decision_clock("replay:1m")  # the same clock again: decisions stand
        assert _paper(journal).decisions.last("BTCUSDT") == 1_735_689_600_000
        journal.start_decision_clock("replay:1h")  # older bar times, on a clock of their own
        broker = _paper(journal)
        assert broker.decisions.last("BTCUSDT") is None
        assert broker.place_now("BTCUSDT", _order(2, "BUY", 1_600_000_000_000)).order.status \
            == "FILLED"


@pytest.mark.process
def test_status_shows_the_duplicate_bars_of_the_fleets_life(fleet: FleetCli) -> None:
    fleet.home.mkdir(mode=0o700, parents=True)
    with Journal(fleet.home / "multibot.db") as journal:  # what earlier fleets counted
        journal.add_duplicate_bars("BTCUSDT", 2)
    fleet.up("BTCUSDT", "--speed", "5")
    assert fleet.workers()["BTCUSDT"]["duplicate_bars"] == 2
    table = fleet.run("status", check=True).stdout
    assert "live bars seen twice over the fleet's life: BTCUSDT 2" in table
