"""MemoryJournal: the SQLite Journal's interface and semantics, in memory (for backtests).

The same broker scenarios run on both journals must give the same order updates, journaled
orders and fills, positions and sequence numbers; the journal-level contract (ordering,
maxima, atomic fills, the errors that matter) is checked on both implementations.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from decimal import Decimal
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from multibot.market.bar import Bar
from multibot.market.orders import OrderStatus, OrderType, Side
from multibot.market.rules import bundled_rules
from multibot.wire.protocol import FillView, OrderUpdate, OrderView, PlaceOrder, ProtocolError
from orchestrator.broker.journal import Journal, JournalError, OrderJournal
from orchestrator.broker.memory_journal import MemoryJournal
from orchestrator.broker.paper import PaperBroker, client_order_id

D = Decimal
RULES = bundled_rules()
KINDS = ["sqlite", "memory"]
AnyJournal = Journal | MemoryJournal


def open_journal(kind: str, directory: Path) -> AnyJournal:
    return Journal(directory / "multibot.db") if kind == "sqlite" else MemoryJournal()


@pytest.fixture(params=KINDS)
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AnyJournal]:
    with open_journal(request.param, tmp_path) as j:
        yield j


def order(coid: str = "mb-BTCUSDT-1", symbol: str = "BTCUSDT", **kw: Any) -> OrderView:
    fields: dict[str, Any] = dict(
        side=Side.BUY, type=OrderType.LIMIT, quantity="0.001", price="50000", created_ns=1
    )
    fields.update(kw)
    return OrderView(client_order_id=coid, symbol=symbol, **fields)


def fill(trade_id: int = 1, coid: str = "mb-BTCUSDT-1", symbol: str = "BTCUSDT") -> FillView:
    return FillView(
        trade_id=trade_id, client_order_id=coid, symbol=symbol, side=Side.BUY, price="50000",
        qty="0.001", fee="0.05", fee_asset="USDT", time_ns=7,
    )  # fmt: skip


def bar(symbol: str, close: D, low: D, high: D) -> Bar:
    return Bar(symbol=symbol, open_time=0, close_time=59_999, open=float(close),
               high=float(high), low=float(low), close=float(close), volume=1.0)


# --- the journal contract, on both implementations --------------------------------------------


def test_both_implement_what_the_broker_uses() -> None:
    journals: list[OrderJournal] = [MemoryJournal()]  # type-checked against the protocol
    assert journals[0].next_trade_id() == 1 and journals[0].max_seq("BTCUSDT") == 0


def test_orders_in_journal_order_with_filters_and_maxima(journal: AnyJournal) -> None:
    journal.insert_order(order("b2", status=OrderStatus.NEW), seq=2)
    journal.insert_order(order("e1", symbol="ETHUSDT", status=OrderStatus.PARTIALLY_FILLED), seq=1)
    journal.insert_order(order("b1", status=OrderStatus.FILLED), seq=1)
    rejected = order("b3", status=OrderStatus.REJECTED, price=None, type=OrderType.MARKET)
    journal.insert_order(rejected, seq=3)
    assert [o.client_order_id for o in journal.orders()] == ["b2", "e1", "b1", "b3"]
    assert [o.client_order_id for o in journal.orders("BTCUSDT")] == ["b2", "b1", "b3"]
    assert [o.client_order_id for o in journal.orders(open_only=True)] == ["b2", "e1"]
    assert journal.get_order("b3") == rejected
    assert (journal.max_seq("BTCUSDT"), journal.max_seq("ETHUSDT")) == (3, 1)
    assert journal.max_seq("XRPUSDT") == 0 and journal.get_order("nope") is None
    journal.update_order("b2", "CANCELED", "0", "by user", 9)
    got = journal.get_order("b2")
    assert got is not None
    assert (got.status, got.reason, got.updated_ns) == ("CANCELED", "by user", 9)
    assert [o.client_order_id for o in journal.orders()] == ["b2", "e1", "b1", "b3"]


def test_fills_by_trade_id_and_a_fill_updates_its_order(journal: AnyJournal) -> None:
    journal.insert_order(order("b", reason="why"), seq=0)
    journal.insert_order(order("e", symbol="ETHUSDT"), seq=0)
    assert journal.next_trade_id() == 1
    for trade_id, coid, symbol in [(3, "b", "BTCUSDT"), (1, "e", "ETHUSDT"), (2, "b", "BTCUSDT")]:
        journal.record_fill(fill(trade_id, coid, symbol), "PARTIALLY_FILLED", "0.0005")
    assert [f.trade_id for f in journal.fills()] == [1, 2, 3]
    assert [f.trade_id for f in journal.fills("BTCUSDT")] == [2, 3]
    assert [f.trade_id for f in journal.order_fills("b")] == [2, 3]
    assert journal.order_fills("nope") == [] and journal.next_trade_id() == 4
    got = journal.get_order("b")
    assert got is not None
    assert (got.status, got.executed_qty, got.updated_ns, got.reason) == (
        "PARTIALLY_FILLED", "0.0005", 7, "why")


def test_refused_writes_are_journal_errors_and_leave_no_trace(journal: AnyJournal) -> None:
    journal.insert_order(order(), seq=1)
    with pytest.raises(JournalError, match="insert order mb-BTCUSDT-1"):
        journal.insert_order(order(status=OrderStatus.FILLED), seq=1)  # duplicate client_order_id
    with pytest.raises(JournalError, match="no journaled order"):
        journal.update_order("ghost", "CANCELED", "0", "", 1)
    journal.record_fill(fill(1), "PARTIALLY_FILLED", "0.0005")
    with pytest.raises(JournalError, match="record fill 1"):
        journal.record_fill(fill(1), "FILLED", "0.001")  # duplicate trade id
    with pytest.raises(JournalError, match="record fill 2 of ghost"):
        journal.record_fill(fill(2, coid="ghost"), "FILLED", "1")  # no such order
    with pytest.raises(JournalError, match="too large"):
        journal.insert_order(order("big"), seq=2**63)
    got = journal.get_order("mb-BTCUSDT-1")
    assert got is not None and (got.status, got.executed_qty) == ("PARTIALLY_FILLED", "0.0005")
    assert [f.trade_id for f in journal.fills()] == [1] and journal.get_order("big") is None
    assert journal.max_seq("BTCUSDT") == 1


def test_events_meta_and_close(journal: AnyJournal) -> None:
    for i in range(5):
        journal.add_event("state", "BTCUSDT", f"step {i}")
    assert [e.detail for e in journal.events(limit=3)] == ["step 2", "step 3", "step 4"]
    assert [e.id for e in journal.events()] == [1, 2, 3, 4, 5]
    assert journal.events(limit=0) == [] and len(journal.events(limit=-1)) == 5
    assert journal.get_meta("mode") is None
    journal.set_meta("mode", "paper")
    journal.set_meta("mode", "live")
    assert journal.get_meta("mode") == "live"
    journal.close()
    journal.close()  # idempotent
    calls: list[Callable[[], object]] = [
        journal.orders, journal.fills, journal.next_trade_id, lambda: journal.get_order("x"),
        lambda: journal.insert_order(order(), seq=1), lambda: journal.max_seq("BTCUSDT"),
        lambda: journal.record_fill(fill(), "FILLED", "0.001"),
    ]
    for call in calls:
        with pytest.raises(JournalError, match="closed"):
            call()


# --- the paper broker on either journal: identical in every observable ---------------------


def scenario(journal: AnyJournal,
             ops: list[tuple[str, int, int]]) -> tuple[list[object], list[object]]:
    """Run ``ops`` on a broker over ``journal``; (what it answered, what it journaled)."""
    clock = count(1_000)
    broker = PaperBroker(journal, RULES, clock=lambda: next(clock))
    broker.on_bar(bar("XRPUSDT", D(1), D(1), D(1)))
    answers: list[object] = []
    for seq, (kind, a, b) in enumerate(ops, start=1):
        coid, qty = client_order_id("XRPUSDT", seq), str(D(a) / 10)
        last = broker.last_price("XRPUSDT") or D(1)
        try:
            if kind == "bar":
                close, wick = D(a) / 10_000, abs(D(b)) / 100_000
                answers.append(broker.on_bar(bar("XRPUSDT", close, close - wick, close + wick)))
            elif kind in ("BUY", "SELL"):
                answers.append(broker.place_now("XRPUSDT", PlaceOrder(
                    client_order_id=coid, side=Side(kind), type=OrderType.MARKET, quantity=qty,
                    bar_time=seq)))
            elif kind in ("LBUY", "LSELL"):
                price = str(max(last + D(b) / 10_000, D("0.01")))
                answers.append(broker.place_now("XRPUSDT", PlaceOrder(
                    client_order_id=coid, side=Side(kind[1:]), type=OrderType.LIMIT, quantity=qty,
                    price=price, bar_time=seq)))
            elif kind == "cancel":
                opened = broker.open_orders("XRPUSDT")
                target = opened[a % len(opened)].client_order_id if opened else "none"
                answers.append(broker.cancel_now("XRPUSDT", target))
            elif kind == "resend":  # an id used before: answered from the journal
                answers.append(broker.place_now("XRPUSDT", PlaceOrder(
                    client_order_id=client_order_id("XRPUSDT", max(1, seq - 1 - a % 3)),
                    side=Side.BUY, type=OrderType.MARKET, quantity=qty, bar_time=seq)))
        except ProtocolError as exc:
            answers.append(("error", exc.code, exc.reason))
    answers.append(broker.positions())
    restarted = PaperBroker(journal, RULES, clock=lambda: next(clock))  # rebuilt from it
    answers += [restarted.positions(), restarted.open_orders("XRPUSDT"),
                restarted.next_seq("XRPUSDT")]
    journaled: list[object] = [journal.orders(), journal.fills(), journal.next_trade_id(),
                               journal.orders(open_only=True)]
    return answers, journaled


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["bar", "BUY", "SELL", "LBUY", "LSELL", "cancel", "resend"]),
        st.integers(100, 10_000),  # bar: close x 1e-4 (0.01-1.0); order: quantity x 0.1
        st.integers(-500, 500),  # bar: wick x 1e-4; limit: offset from the last price x 1e-4
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_OPS)
def test_the_paper_broker_behaves_the_same_on_both_journals(
    ops: list[tuple[str, int, int]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for kind in KINDS:
            with open_journal(kind, Path(tmp)) as journal:
                results[kind] = scenario(journal, ops)
    assert results["memory"] == results["sqlite"]


def test_a_fixed_scenario_trades_and_is_identical_on_both_journals(tmp_path: Path) -> None:
    ops = [("BUY", 300, 0), ("LSELL", 100, 50), ("bar", 10_000, 400), ("LBUY", 200, -300),
           ("resend", 0, 0), ("cancel", 0, 0), ("SELL", 150, 0), ("bar", 9_000, 100),
           ("SELL", 9_999, 0), ("cancel", 0, 0)]
    answers = {}
    for kind in KINDS:
        with open_journal(kind, tmp_path) as journal:
            answers[kind] = scenario(journal, ops)
    assert answers["memory"] == answers["sqlite"]
    updates = [a for a in answers["memory"][0] if isinstance(a, OrderUpdate)]
    statuses = {u.order.status for u in updates}
    assert {"FILLED", "NEW", "CANCELED", "REJECTED"} <= statuses  # the scenario covers them
    assert any(isinstance(a, tuple) and a[0] == "error" for a in answers["memory"][0])
