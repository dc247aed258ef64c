"""Paper broker: Binance-like fills, fees and rejections; idempotence; crash-only restarts."""

from __future__ import annotations

import itertools
import sqlite3
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import cast

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from multibot.market.bar import Bar
from multibot.market.orders import OrderType, Side
from multibot.market.position import Position
from multibot.market.rules import bundled_rules, synthetic_rules
from multibot.wire.protocol import FillView, OrderUpdate, OrderView, PlaceOrder, ProtocolError
from orchestrator.broker.journal import Journal, JournalError
from orchestrator.broker.paper import PaperBroker, client_order_id, parse_seq

D = Decimal
RULES = bundled_rules()


def bar(symbol: str, close: str, low: str | None = None, high: str | None = None) -> Bar:
    c = float(close)
    lo, hi = float(low or close), float(high or close)
    return Bar(
        symbol=symbol, open_time=0, close_time=59_999, open=c, high=max(hi, c), low=min(lo, c),
        close=c, volume=1.0,
    )  # fmt: skip


_BARS = itertools.count(1)  # each new intent a decision on a bar of its own


def market(coid: str, side: str, qty: str) -> PlaceOrder:
    # any text: some tests send what the wire would refuse, to see the broker refuse it too
    return PlaceOrder(client_order_id=coid, side=cast(Side, side), type=OrderType.MARKET,
                      quantity=qty, bar_time=next(_BARS))


def limit(coid: str, side: str, qty: str, price: str) -> PlaceOrder:
    return PlaceOrder(client_order_id=coid, side=cast(Side, side), type=OrderType.LIMIT,
                      quantity=qty, price=price, bar_time=next(_BARS))


def status(journal: Journal, coid: str) -> str:
    order = journal.get_order(coid)
    assert order is not None, coid
    return order.status


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "multibot.db"


@pytest.fixture
def journal(path: Path) -> Iterator[Journal]:
    with Journal(path) as j:
        yield j


@pytest.fixture
def broker(journal: Journal) -> PaperBroker:
    return PaperBroker(journal, RULES)


def test_market_fill_price_has_slippage_on_the_tick_and_a_fee(broker: PaperBroker) -> None:
    broker.on_bar(bar("BTCUSDT", "50001.23"))
    update = broker.place_now("BTCUSDT", market("mb-BTCUSDT-1", "BUY", "0.001"))
    assert update.order.status == "FILLED" and update.order.executed_qty == "0.001"
    [fill] = update.fills
    # 50001.23 * 1.0002 = 50011.230246 -> up to the 0.01 tick; fee 0.1% of 50.01124 USDT
    assert (fill.price, fill.qty, fill.fee) == ("50011.24", "0.001", "0.05001124")
    assert fill.fee_asset == "USDT"
    assert update.position.qty == "0.001" and update.position.avg_entry == "50011.24"
    assert update.position.realized_pnl == "-0.05001124"
    # a sell is pushed down: 50001.23 * 0.9998 = 49991.229754 -> 49991.22
    sell = broker.place_now("BTCUSDT", market("mb-BTCUSDT-2", "SELL", "0.001"))
    assert sell.fills[0].price == "49991.22"


def test_round_trip_realized_pnl_is_net_of_both_fees(broker: PaperBroker) -> None:
    broker.on_bar(bar("BTCUSDT", "50000"))
    broker.place_now("BTCUSDT", market("mb-BTCUSDT-1", "BUY", "0.002"))
    assert broker.unrealized_pnl("BTCUSDT") == D("0.002") * (D("50000") - D("50010"))
    broker.on_bar(bar("BTCUSDT", "51000"))
    update = broker.place_now("BTCUSDT", market("mb-BTCUSDT-2", "SELL", "0.002"))
    buy_fee, sell_fee = D("0.002") * D("50010") / 1000, D("0.002") * D("50989.80") / 1000
    expected = D("0.002") * (D("50989.80") - D("50010")) - buy_fee - sell_fee
    position = update.position
    assert D(position.realized_pnl) == expected == D("1.7576004")
    assert D(position.fees_paid) == buy_fee + sell_fee
    assert (position.qty, position.avg_entry, position.trades) == ("0", "0", 2)
    assert broker.unrealized_pnl("BTCUSDT") == 0


def test_limit_rests_until_a_bar_crosses_it(broker: PaperBroker, journal: Journal) -> None:
    broker.on_bar(bar("XRPUSDT", "0.52"))
    placed = broker.place_now("XRPUSDT", limit("mb-XRPUSDT-1", "BUY", "20", "0.5"))
    assert placed.order.status == "NEW" and placed.fills == []
    assert status(journal, "mb-XRPUSDT-1") == "NEW"  # committed before any fill
    assert broker.on_bar(bar("XRPUSDT", "0.51", low="0.5001")) == []
    [update] = broker.on_bar(bar("XRPUSDT", "0.51", low="0.4999"))
    assert update.order.status == "FILLED" and update.order.client_order_id == "mb-XRPUSDT-1"
    assert [(f.price, f.qty, f.fee) for f in update.fills] == [("0.5", "20", "0.01")]
    assert update.position.qty == "20" and broker.open_orders("XRPUSDT") == []
    broker.place_now("XRPUSDT", limit("mb-XRPUSDT-2", "SELL", "20", "0.55"))
    assert broker.on_bar(bar("XRPUSDT", "0.54", high="0.5499")) == []
    [sold] = broker.on_bar(bar("XRPUSDT", "0.54", high="0.55"))
    assert sold.fills[0].price == "0.55" and sold.position.qty == "0"
    assert status(journal, "mb-XRPUSDT-2") == "FILLED"


def test_a_marketable_limit_fills_at_once_at_the_market(broker: PaperBroker) -> None:
    broker.on_bar(bar("XRPUSDT", "0.52"))
    update = broker.place_now("XRPUSDT", limit("mb-XRPUSDT-1", "BUY", "20", "0.53"))
    assert update.order.status == "FILLED" and update.fills[0].price == "0.52"
    update = broker.place_now("XRPUSDT", limit("mb-XRPUSDT-2", "SELL", "20", "0.51"))
    assert update.order.status == "FILLED" and update.fills[0].price == "0.52"


def test_same_client_order_id_twice_trades_once(broker: PaperBroker, journal: Journal) -> None:
    broker.on_bar(bar("BTCUSDT", "50000"))
    first = broker.place_now("BTCUSDT", market("mb-BTCUSDT-1", "BUY", "0.001"))
    again = broker.place_now("BTCUSDT", market("mb-BTCUSDT-1", "BUY", "0.001"))
    assert again.order == first.order and again.fills == first.fills
    assert again.position == first.position and first.position.qty == "0.001"
    assert len(journal.orders()) == 1 and len(journal.fills()) == 1
    # a resend after an orchestrator restart is just as harmless
    restarted = PaperBroker(journal, RULES)
    restarted.on_bar(bar("BTCUSDT", "40000"))
    again = restarted.place_now("BTCUSDT", market("mb-BTCUSDT-1", "BUY", "0.001"))
    assert again.order == first.order
    assert len(journal.fills()) == 1 and restarted.position("BTCUSDT").qty == "0.001"


def test_oversell_is_insufficient_balance(broker: PaperBroker, journal: Journal) -> None:
    broker.on_bar(bar("XRPUSDT", "2"))
    naked = broker.place_now("XRPUSDT", market("mb-XRPUSDT-1", "SELL", "10"))
    assert naked.order.status == "REJECTED"
    assert naked.order.reason.startswith("insufficient_balance: ")
    broker.place_now("XRPUSDT", market("mb-XRPUSDT-2", "BUY", "10"))
    resting = broker.place_now("XRPUSDT", limit("mb-XRPUSDT-3", "SELL", "6", "3"))
    assert resting.order.status == "NEW"
    over = broker.place_now("XRPUSDT", market("mb-XRPUSDT-4", "SELL", "5"))
    assert over.order.status == "REJECTED" and "4 is free" in over.order.reason
    assert broker.place_now("XRPUSDT", market("mb-XRPUSDT-5", "SELL", "4")).order.status == "FILLED"
    assert status(journal, "mb-XRPUSDT-4") == "REJECTED"
    assert broker.position("XRPUSDT").qty == "6"


@pytest.mark.parametrize(
    ("symbol", "order", "reason"),
    [
        ("BTCUSDT", market("c1", "BUY", "0.0001"), "order_rejected: NOTIONAL: "),
        ("BTCUSDT", market("c2", "BUY", "0.000015"), "order_rejected: LOT_SIZE: "),
        ("BTCUSDT", limit("c3", "BUY", "0.001", "50000.005"), "order_rejected: PRICE_FILTER: "),
        ("XRPUSDT", market("c4", "BUY", "1000.1"), "order_rejected: MARKET_LOT_SIZE: "),
        ("BTCUSDT", market("c5", "BUY", "lots"), "bad_body: quantity"),
        ("BTCUSDT", market("c6", "SHORT", "1"), "bad_body: side"),
        ("NOPEUSDT", market("c7", "BUY", "1"), "unknown_symbol: "),
    ],
)
def test_rejections_are_journaled_and_returned_not_raised(
    broker: PaperBroker, journal: Journal, symbol: str, order: PlaceOrder, reason: str
) -> None:
    broker.on_bar(bar("BTCUSDT", "45000"))
    broker.on_bar(bar("XRPUSDT", "0.5"))
    update = broker.place_now(symbol, order)
    assert update.order.status == "REJECTED" and update.fills == []
    assert update.order.reason.startswith(reason), update.order.reason
    assert journal.get_order(order.client_order_id) == update.order
    assert journal.fills() == []


def test_market_order_without_a_price_is_rejected(broker: PaperBroker) -> None:
    update = broker.place_now("BTCUSDT", market("mb-BTCUSDT-1", "BUY", "0.001"))
    assert update.order.status == "REJECTED" and "no market price yet" in update.order.reason
    resting = broker.place_now("BTCUSDT", limit("mb-BTCUSDT-2", "BUY", "0.001", "50000"))
    assert resting.order.status == "NEW"


def test_bad_or_foreign_client_order_ids_raise(broker: PaperBroker, journal: Journal) -> None:
    for coid in ["", "x" * 37, "has space", "semi;colon", "ok\n"]:
        with pytest.raises(ProtocolError) as info:
            broker.place_now("XRPUSDT", limit(coid, "BUY", "20", "0.5"))
        assert info.value.code == "bad_body"  # codes are stable strings scripts match on
    assert journal.orders() == []
    broker.place_now("XRPUSDT", limit("shared-1", "BUY", "20", "0.5"))
    with pytest.raises(ProtocolError) as info:
        broker.place_now("BTCUSDT", limit("shared-1", "BUY", "0.001", "50000"))
    assert info.value.code == "conflict"


def test_cancel_and_cancel_all(broker: PaperBroker, journal: Journal) -> None:
    for seq in (1, 2, 3):
        broker.place_now("XRPUSDT", limit(client_order_id("XRPUSDT", seq), "BUY", "20", "0.5"))
    canceled = broker.cancel_now("XRPUSDT", "mb-XRPUSDT-2")
    assert canceled.order.status == "CANCELED"
    assert status(journal, "mb-XRPUSDT-2") == "CANCELED"
    # already canceled, another symbol's, never placed
    for coid, symbol in [("mb-XRPUSDT-2", "XRPUSDT"), ("mb-XRPUSDT-1", "BTCUSDT"), ("x", "XRP")]:
        with pytest.raises(ProtocolError) as info:
            broker.cancel_now(symbol, coid)
        assert info.value.code == "unknown_order"
    canceled_all = [u.order.client_order_id for u in broker.cancel_all_now("XRPUSDT")]
    assert canceled_all == ["mb-XRPUSDT-1", "mb-XRPUSDT-3"]
    assert broker.open_orders("XRPUSDT") == [] and journal.orders(open_only=True) == []
    assert broker.on_bar(bar("XRPUSDT", "0.1")) == []


def test_a_new_broker_on_the_same_journal_resumes_exactly(path: Path) -> None:
    journal = Journal(path)
    old = PaperBroker(journal, RULES)
    old.on_bar(bar("XRPUSDT", "0.6"))
    old.on_bar(bar("BTCUSDT", "50000"))
    old.place_now("XRPUSDT", market("mb-XRPUSDT-1", "BUY", "30"))
    old.place_now("XRPUSDT", market("mb-XRPUSDT-2", "SELL", "10"))
    old.place_now("XRPUSDT", limit("mb-XRPUSDT-3", "SELL", "15", "0.7"))
    old.place_now("BTCUSDT", limit("mb-BTCUSDT-7", "BUY", "0.001", "49000"))
    journal.close()  # the orchestrator dies

    journal = Journal(path)
    new = PaperBroker(journal, RULES)
    for symbol in ("XRPUSDT", "BTCUSDT"):
        assert new.position(symbol) == old.position(symbol)
        assert new.open_orders(symbol) == old.open_orders(symbol)
    assert new.next_seq("XRPUSDT") == 4 and new.next_seq("BTCUSDT") == 8
    assert new.last_price("XRPUSDT") is None  # prices come back with the next bar
    over = new.place_now("XRPUSDT", limit("mb-XRPUSDT-4", "SELL", "8", "0.7"))
    assert "insufficient_balance" in over.order.reason  # 15 of 20 still locked after restart
    [update] = new.on_bar(bar("XRPUSDT", "0.69", high="0.71"))
    assert update.order.client_order_id == "mb-XRPUSDT-3" and update.position.qty == "5"
    journal.close()


def test_orphaned_market_order_expires_on_restart(broker: PaperBroker, journal: Journal) -> None:
    broker.on_bar(bar("BTCUSDT", "50000"))
    broker.place_now("BTCUSDT", limit("keep", "BUY", "0.001", "40000"))
    # what a crash between "journal the order" and "journal its fill" leaves behind
    orphan = OrderView(
        client_order_id="mb-BTCUSDT-9", symbol="BTCUSDT", side=Side.BUY, type=OrderType.MARKET,
        quantity="1"
    )
    journal.insert_order(orphan, seq=9)
    restarted = PaperBroker(journal, RULES)
    assert status(journal, "mb-BTCUSDT-9") == "EXPIRED"
    assert [o.client_order_id for o in restarted.open_orders("BTCUSDT")] == ["keep"]
    resend = restarted.place_now("BTCUSDT", market("mb-BTCUSDT-9", "BUY", "1"))
    assert resend.order.status == "EXPIRED" and journal.fills() == []


def test_client_order_ids_carry_the_sequence(broker: PaperBroker, journal: Journal) -> None:
    assert client_order_id("BTCUSDT", 12) == "mb-BTCUSDT-12"
    assert parse_seq("BTCUSDT", "mb-BTCUSDT-12") == 12
    assert parse_seq("ETHUSDT", "mb-BTCUSDT-12") == 0
    assert parse_seq("BTCUSDT", "mb-BTCUSDT-x1") == 0
    assert parse_seq("BTCUSDT", "mb-BTCUSDT-" + "9" * 19) == 0  # beyond SQLite INTEGER
    assert broker.next_seq("BTCUSDT") == 1
    broker.place_now("BTCUSDT", limit("mb-BTCUSDT-41", "BUY", "0.001", "50000"))
    broker.place_now("BTCUSDT", limit("custom", "BUY", "0.001", "50000"))
    assert broker.next_seq("BTCUSDT") == 42 and journal.max_seq("BTCUSDT") == 41


def test_hot_added_symbols_trade_with_their_rules(broker: PaperBroker) -> None:
    broker.on_bar(bar("PEPEUSDT", "0.00001234"))
    assert broker.place_now("PEPEUSDT", market("p1", "BUY", "1000000")).order.status == "REJECTED"
    broker.add_rules(synthetic_rules("PEPEUSDT", 0.00001234))
    update = broker.place_now("PEPEUSDT", market("p2", "BUY", "1000000"))
    assert update.order.status == "FILLED" and update.fills[0].fee_asset == "USDT"


def test_position_accounting_uses_weighted_average_cost() -> None:
    position = Position("BTCUSDT")
    trade = FillView(
        trade_id=1, client_order_id="x", symbol="BTCUSDT", side=Side.BUY, price="100", qty="1",
        fee="0.1", fee_asset="USDT", time_ns=0,
    )  # fmt: skip
    position.apply(trade)
    position.apply(msgspec.structs.replace(trade, trade_id=2, price="200", fee="0.2"))
    assert position.avg_entry == 150 and position.unrealized(D(160)) == 20
    position.apply(msgspec.structs.replace(trade, side=Side.SELL, qty="0.5", price="180", fee="0"))
    assert position.avg_entry == 150 and position.realized_pnl == D("15") - D("0.3")
    with pytest.raises(ValueError, match=r"only 1\.5 is held"):
        position.apply(msgspec.structs.replace(trade, side=Side.SELL, qty="2"))
    with pytest.raises(ValueError, match="ETHUSDT"):
        position.apply(msgspec.structs.replace(trade, symbol="ETHUSDT"))
    position.apply(msgspec.structs.replace(trade, side=Side.SELL, qty="1.5", price="100", fee="0"))
    view = position.view()
    assert (view.qty, view.avg_entry, view.realized_pnl, view.trades) == ("0", "0", "-60.3", 4)


def test_journal_errors_propagate_and_leave_no_phantom_state(path: Path) -> None:
    journal = Journal(path, timeout=0.05)
    broker = PaperBroker(journal, RULES)
    broker.on_bar(bar("XRPUSDT", "0.5"))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(JournalError):
            broker.place_now("XRPUSDT", market("mb-XRPUSDT-1", "BUY", "20"))
        with pytest.raises(JournalError):
            broker.place_now("XRPUSDT", limit("mb-XRPUSDT-2", "BUY", "20", "0.4"))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert broker.position("XRPUSDT").qty == "0" and broker.open_orders("XRPUSDT") == []
    assert broker.place_now("XRPUSDT", market("mb-XRPUSDT-1", "BUY", "20")).order.status == "FILLED"
    journal.close()
    with pytest.raises(JournalError):
        broker.place_now("XRPUSDT", market("mb-XRPUSDT-3", "BUY", "20"))


# --- property: positions are a pure function of the journaled fills --------------------------

_ops = st.lists(
    st.tuples(
        st.sampled_from(["bar", "BUY", "SELL", "LBUY", "LSELL", "cancel"]),
        st.integers(100, 10_000),  # bar: close x 1e-4 (0.01-1.0); order: quantity x 0.1
        st.integers(-500, 500),  # bar: wick x 1e-4; limit: offset from the last price x 1e-4
    ),
    min_size=6,
    max_size=40,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ops, st.booleans())
def test_positions_rebuilt_from_journal_fills_equal_the_live_broker(
    ops: list[tuple[str, int, int]], flatten: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp, Journal(Path(tmp) / "multibot.db") as journal:
        broker = PaperBroker(journal, RULES)
        broker.on_bar(bar("XRPUSDT", "1"))
        updates: list[OrderUpdate] = []
        for seq, (kind, a, b) in enumerate(ops, start=1):
            coid, qty = client_order_id("XRPUSDT", seq), str(D(a) / 10)
            last = broker.last_price("XRPUSDT") or D(1)
            if kind == "bar":
                close, wick = D(a) / 10_000, abs(D(b)) / 100_000
                low, high = str(close - wick), str(close + wick)
                updates += broker.on_bar(bar("XRPUSDT", str(close), low, high))
            elif kind in ("BUY", "SELL"):
                updates.append(broker.place_now("XRPUSDT", market(coid, kind, qty)))
            elif kind in ("LBUY", "LSELL"):
                price = str(max(last + D(b) / 10_000, D("0.01")))
                updates.append(broker.place_now("XRPUSDT", limit(coid, kind[1:], qty, price)))
            elif kind == "cancel" and broker.open_orders("XRPUSDT"):
                opened = broker.open_orders("XRPUSDT")
                target = opened[a % len(opened)].client_order_id
                updates.append(broker.cancel_now("XRPUSDT", target))
            assert D(broker.position("XRPUSDT").qty) >= 0  # spot never goes short
        if flatten:  # close out (it may be rejected, e.g. below min notional: also fine)
            updates += broker.cancel_all_now("XRPUSDT")
            held = broker.position("XRPUSDT").qty
            if held != "0":
                updates.append(broker.place_now("XRPUSDT", market("flat", "SELL", held)))

        fills = journal.fills()
        assert sorted(f.trade_id for u in updates for f in u.fills) == [f.trade_id for f in fills]
        rebuilt: dict[str, Position] = {}
        for fill in fills:
            rebuilt.setdefault(fill.symbol, Position(fill.symbol)).apply(fill)
        assert {symbol: pos.view() for symbol, pos in rebuilt.items()} == broker.positions()
        restarted = PaperBroker(journal, RULES)
        assert restarted.positions() == broker.positions()
        assert restarted.open_orders("XRPUSDT") == broker.open_orders("XRPUSDT")
        position = broker.position("XRPUSDT")
        event(f"flat after trading: {position.qty == '0'}" if fills else "no fills")
        # realized = cash out - cash in - fees + cost of what is still held; exact when flat
        cash = sum((D(f.qty) * D(f.price) * (1 if f.side == "SELL" else -1) for f in fills), D(0))
        held_cost = D(position.avg_entry) * D(position.qty)
        expected = cash - D(position.fees_paid) + held_cost
        if position.qty == "0":
            assert D(position.realized_pnl) == expected
        else:
            assert abs(D(position.realized_pnl) - expected) < D("1e-18")


def test_an_intent_journaled_before_a_failed_fill_is_completed_once_on_resend(
    broker: PaperBroker, journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker.on_bar(bar("BTCUSDT", "50000"))
    order = market("mb-BTCUSDT-1", "BUY", "0.001")

    def disk_full(*args: object) -> None:
        raise JournalError("database or disk is full")

    with monkeypatch.context() as patch:  # the intent commits, the fill's write fails
        patch.setattr(journal, "record_fill", disk_full)
        with pytest.raises(JournalError):
            broker.place_now("BTCUSDT", order)
    assert status(journal, "mb-BTCUSDT-1") == "NEW" and journal.fills() == []
    first = broker.place_now("BTCUSDT", order)  # the worker resends the same id
    again = broker.place_now("BTCUSDT", order)
    assert first.order.status == again.order.status == "FILLED"
    assert len(journal.fills()) == 1 and broker.position("BTCUSDT").qty == "0.001"
