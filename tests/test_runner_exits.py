"""Exits until flat, entries once, cancels until confirmed: the runner with the paper broker,
on a clock the test moves. Where an exchange would answer otherwise than paper does (a SELL
rejected in maintenance, a MARKET order's EXPIRED remainder), the answer is the broker's
OrderUpdate as the exchange broker writes it."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from multibot.market.bar import Bar, Signal
from multibot.market.orders import OrderStatus, OrderType, Side
from multibot.market.rules import bundled_rules
from multibot.wire.protocol import (
    CancelOrder,
    ErrorCode,
    Message,
    OrderUpdate,
    OrderView,
    PlaceOrder,
    PositionView,
    ProtocolError,
    WorkerConfig,
)
from orchestrator.broker.memory_journal import MemoryJournal
from orchestrator.broker.paper import PaperBroker
from strategies.base import Strategy
from worker.retries import EXPIRIES_BEFORE_MARKET, MAX_RETRY_S
from worker.runner import Runner

SYMBOL = "BTCUSDT"
LONG, FLAT = Signal.LONG, Signal.FLAT
CLOSED = "Market is closed."


class _Script(Strategy):
    """The signal of each bar (by index) from a script; silent on the others."""

    name = "script"
    warmup = 0

    def __init__(self, script: dict[int, Signal]) -> None:
        super().__init__()
        self.script = script

    def on_bar(self, bar: Bar) -> Signal | None:
        return self.script.get(bar.open_time // 60_000)


def _bar(i: int, close: float, low: float | None = None, high: float | None = None) -> Bar:
    t = i * 60_000
    return Bar(symbol=SYMBOL, open_time=t, close_time=t + 59_999, open=close,
               high=close if high is None else high, low=close if low is None else low,
               close=close, volume=1.0)


class Desk:
    """A runner wired to a paper broker as the worker and the worker link wire them: bars
    go to the broker first, then to the runner; its requests go to the broker and the
    answers (updates, or errors) come back. ``closed``: the exchange rejects every order
    (maintenance) while set."""

    def __init__(self, script: dict[int, Signal], order_type: str = "MARKET",
                 position: str = "0", history: list[Bar] | None = None) -> None:
        rules = bundled_rules()[SYMBOL]
        self.now = 1000.0
        self.broker = PaperBroker(MemoryJournal(), {SYMBOL: rules})
        config = WorkerConfig(symbol=SYMBOL, strategies=[], stake="100", order_type=order_type,
                              limit_ttl_bars=2)
        self.runner = Runner(config, rules, [_Script(script)],
                             PositionView(symbol=SYMBOL, qty=position), [], 1,
                             clock=lambda: self.now)
        if history:
            self.runner.warmup(history)
        self.sent: list[Message] = []
        self.closed = False
        self.held_back: list[OrderUpdate] = []  # answers not delivered yet

    def bar(self, bar: Bar, ahead: Bar | None = None, deliver: bool = True) -> list[Message]:
        """``bar`` to the broker, then to the runner, whose requests are answered. ``ahead``:
        the next bar reaches the broker before the runner's requests do (the market moved
        away from a LIMIT's price). ``deliver=False``: what the broker says of ``bar`` (and
        the requests) is held back until ``deliver``."""
        updates = self.broker.on_bar(bar)
        if deliver:
            for update in updates:
                self.runner.on_update(update)
        else:
            self.held_back += updates
        actions = self.runner.on_bar(bar)
        if ahead is not None:
            for update in self.broker.on_bar(ahead):
                self.runner.on_update(update)
        return self.execute(actions, answer=deliver)

    def tick(self, seconds: float) -> list[Message]:
        self.now += seconds
        return self.execute(self.runner.on_timer())

    def deliver(self, actions: list[Message]) -> None:
        """The held-back updates, then the answers to ``actions``, in the order the broker
        sends them."""
        for update in self.held_back:
            self.runner.on_update(update)
        self.held_back = []
        for action in actions:
            self.answer(action)

    def execute(self, actions: list[Message], answer: bool = True) -> list[Message]:
        self.sent += actions
        if answer:
            for action in actions:
                self.answer(action)
        return actions

    def answer(self, action: Message) -> None:
        if isinstance(action, PlaceOrder):
            if self.closed:
                self.runner.on_update(_rejected(action, CLOSED, self.broker.position(SYMBOL)))
            else:
                self.runner.on_update(self.broker.place_now(SYMBOL, action))
        elif isinstance(action, CancelOrder):
            try:
                self.runner.on_update(self.broker.cancel_now(SYMBOL, action.client_order_id))
            except ProtocolError as exc:
                self.runner.cancel_refused(action.client_order_id, exc.code.value)

    def orders(self, side: Side | None = None) -> list[PlaceOrder]:
        return [a for a in self.sent if isinstance(a, PlaceOrder)
                and (side is None or a.side == side)]


def _rejected(order: PlaceOrder, reason: str, position: PositionView) -> OrderUpdate:
    """The exchange broker's answer to an order the exchange rejected (-2010)."""
    view = OrderView(client_order_id=order.client_order_id, symbol=SYMBOL, side=order.side,
                     type=order.type, quantity=order.quantity, price=order.price,
                     status=OrderStatus.REJECTED, reason=f"order_rejected: {reason}")
    return OrderUpdate(order=view, position=position)


def test_a_limit_exit_that_keeps_expiring_is_resent_then_goes_as_market() -> None:
    """A falling market that moves before each SELL LIMIT arrives: every one rests above it
    and expires unfilled; the runner tries again at once and, after EXPIRIES_BEFORE_MARKET
    of them, sells at market."""
    desk = Desk({0: LONG, 1: FLAT}, order_type="LIMIT")
    desk.bar(_bar(0, 50_000.0))  # a marketable BUY LIMIT: filled at once
    assert desk.runner.position == Decimal("0.002")
    bars = [_bar(i, 50_000.0 - 100 * i) for i in range(1, 40)]
    for bar, ahead in itertools.pairwise(bars):
        desk.bar(bar, ahead=ahead)
        desk.tick(0.2)
        if desk.runner.position == 0:
            break
    sells = desk.orders(Side.SELL)
    assert desk.runner.position == 0, sells
    assert [s.type for s in sells] == [OrderType.LIMIT] * EXPIRIES_BEFORE_MARKET + [
        OrderType.MARKET]
    assert not sells[0].exit_retry and all(s.exit_retry for s in sells[1:])
    assert all(s.quantity == "0.002" for s in sells)
    assert len(desk.orders(Side.BUY)) == 1
    assert desk.runner.idle


def test_a_rejected_exit_is_retried_with_a_growing_wait_until_flat() -> None:
    desk = Desk({0: LONG, 1: FLAT})
    desk.bar(_bar(0, 50_000.0))
    desk.closed = True  # maintenance: -2010 "Market is closed."
    (first,) = desk.bar(_bar(1, 50_000.0))
    assert isinstance(first, PlaceOrder) and first.side == Side.SELL and not first.exit_retry
    waits = []
    waited = 0.0
    while len(desk.orders(Side.SELL)) < 9:
        sent = desk.tick(0.25)  # the timer: no bar needed
        waited += 0.25
        if sent:
            waits.append(waited)
            waited = 0.0
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, MAX_RETRY_S, MAX_RETRY_S, MAX_RETRY_S]
    assert all(s.exit_retry and s.bar_time == 60_000 for s in desk.orders(Side.SELL)[1:])
    assert "Market is closed." in desk.runner.last_error
    desk.closed = False  # maintenance over
    desk.tick(MAX_RETRY_S)
    assert desk.runner.position == 0
    assert len(desk.orders(Side.BUY)) == 1  # the entry was never repeated
    assert desk.tick(MAX_RETRY_S) == [] and desk.runner.wake_at() is None


def test_the_wait_starts_afresh_at_the_next_flat_decision() -> None:
    desk = Desk({0: LONG, 1: FLAT, 2: LONG, 3: FLAT})
    desk.bar(_bar(0, 50_000.0))
    desk.closed = True
    desk.bar(_bar(1, 50_000.0))
    for _ in range(5):
        desk.tick(MAX_RETRY_S)
    desk.closed = False
    desk.tick(MAX_RETRY_S)
    assert desk.runner.position == 0
    desk.bar(_bar(2, 50_000.0))  # a new entry
    desk.closed = True
    desk.bar(_bar(3, 50_000.0))  # a new exit: rejected, and tried again after 1 s
    assert len(desk.tick(1.0)) == 1


def test_a_rejected_entry_is_not_resent() -> None:
    desk = Desk({0: LONG})
    desk.closed = True
    (buy,) = desk.bar(_bar(0, 50_000.0))
    assert isinstance(buy, PlaceOrder) and buy.side == Side.BUY
    desk.closed = False
    for i in range(1, 5):
        assert desk.tick(MAX_RETRY_S) == []
        assert desk.bar(_bar(i, 50_000.0)) == []
    assert desk.runner.position == 0 and desk.runner.idle


def test_an_expired_limit_entry_is_not_resent() -> None:
    desk = Desk({0: LONG}, order_type="LIMIT")
    bars = [_bar(i, 50_000.0 + 100 * i) for i in range(10)]  # rising: a BUY never fills
    for bar, ahead in itertools.pairwise(bars):
        desk.bar(bar, ahead=ahead)
        desk.tick(MAX_RETRY_S)
    assert len(desk.orders(Side.BUY)) == 1 and desk.runner.position == 0
    assert [a.client_order_id for a in desk.sent if isinstance(a, CancelOrder)] == [
        "mb-BTCUSDT-1"]  # expired after limit_ttl_bars, and not sent again


def test_the_expired_remainder_of_a_market_exit_is_sold_next() -> None:
    desk = Desk({0: LONG, 1: FLAT})
    desk.bar(_bar(0, 50_000.0))
    (sell,) = desk.execute(desk.runner.on_bar(_bar(1, 50_000.0)), answer=False)
    assert isinstance(sell, PlaceOrder)
    # the exchange filled 0.001 of the 0.002 and expired the rest (thin book)
    view = OrderView(client_order_id=sell.client_order_id, symbol=SYMBOL, side=Side.SELL,
                     type=OrderType.MARKET, quantity="0.002", status=OrderStatus.EXPIRED,
                     executed_qty="0.001")
    desk.runner.on_update(OrderUpdate(order=view, position=PositionView(symbol=SYMBOL,
                                                                          qty="0.001")))
    assert desk.runner.wake_at() == pytest.approx(desk.now + 1.0)
    desk.now += 0.5
    assert desk.runner.on_timer() == []
    desk.now += 0.5
    (rest,) = desk.runner.on_timer()
    assert isinstance(rest, PlaceOrder)
    assert rest.side == Side.SELL and rest.quantity == "0.001" and rest.exit_retry


def test_a_flat_target_cancels_the_resting_buy_and_sells_what_its_outcome_leaves() -> None:
    """The BUY fills on the very bar the target turns flat, before the runner hears of it:
    the SELL must wait for the cancel's outcome and sell the fill (not the 0 held before)."""
    desk = Desk({0: LONG, 2: FLAT}, order_type="LIMIT")
    bar1 = _bar(1, 50_100.0)
    desk.bar(_bar(0, 50_000.0), ahead=bar1)  # the BUY LIMIT at 50000 rests
    desk.bar(bar1)
    assert desk.runner.open_orders and desk.runner.position == 0
    actions = desk.bar(_bar(2, 49_500.0, low=49_000.0), deliver=False)  # fills the BUY
    assert [type(a) for a in actions] == [CancelOrder]  # and no SELL sized from 0
    assert not desk.runner.idle and desk.tick(5.0) == []  # the outcome is awaited
    desk.deliver(actions)  # the fill, then the cancel's answer: unknown_order (final)
    (sell,) = desk.tick(0.01)
    assert isinstance(sell, PlaceOrder) and sell.side == Side.SELL and sell.quantity == "0.002"
    assert not sell.exit_retry  # the decision's own exit
    assert desk.runner.position == 0


def test_a_cancelled_buy_that_did_not_fill_leaves_nothing_to_sell() -> None:
    desk = Desk({0: LONG, 2: FLAT}, order_type="LIMIT")
    bar1 = _bar(1, 50_100.0)
    desk.bar(_bar(0, 50_000.0), ahead=bar1)
    desk.bar(bar1)
    assert [type(a) for a in desk.bar(_bar(2, 50_200.0))] == [CancelOrder]
    assert desk.tick(MAX_RETRY_S) == [] and desk.runner.idle and desk.runner.position == 0


def test_a_long_target_cancels_the_resting_sell_and_buys_only_if_it_filled() -> None:
    desk = Desk({0: LONG, 1: FLAT, 3: LONG}, order_type="LIMIT")
    desk.bar(_bar(0, 50_000.0))  # BUY filled at once
    bar2 = _bar(2, 49_900.0, high=49_950.0)
    desk.bar(_bar(1, 50_000.0), ahead=bar2)  # the SELL LIMIT at 50000 rests
    desk.bar(bar2)
    assert desk.runner.position == Decimal("0.002") and desk.runner.open_orders
    # the SELL fills on the bar the target turns long again, before the runner hears
    actions = desk.bar(_bar(3, 50_500.0, high=51_000.0), deliver=False)
    assert [type(a) for a in actions] == [CancelOrder]  # no BUY until the cancel settles
    assert desk.tick(5.0) == []
    desk.deliver(actions)
    (buy,) = desk.tick(0.01)
    assert isinstance(buy, PlaceOrder) and buy.side == Side.BUY
    assert desk.tick(MAX_RETRY_S) == []


def test_a_long_target_keeps_the_position_when_the_cancelled_sell_did_not_fill() -> None:
    desk = Desk({0: LONG, 1: FLAT, 3: LONG}, order_type="LIMIT")
    desk.bar(_bar(0, 50_000.0))
    bar2 = _bar(2, 49_900.0, high=49_950.0)
    desk.bar(_bar(1, 50_000.0), ahead=bar2)
    desk.bar(bar2)
    actions = desk.bar(_bar(3, 49_800.0, high=49_850.0))  # the SELL cannot fill: cancelled
    assert [type(a) for a in actions] == [CancelOrder]
    assert desk.tick(MAX_RETRY_S) == [] and desk.runner.position == Decimal("0.002")
    assert len(desk.orders(Side.BUY)) == 1


def test_a_refused_cancel_is_asked_again_until_an_update_confirms_it() -> None:
    desk = Desk({0: LONG, 1: FLAT}, order_type="LIMIT")
    desk.bar(_bar(0, 50_000.0), ahead=_bar(1, 50_100.0))  # the BUY LIMIT rests
    (cancel,) = desk.execute(desk.runner.on_bar(_bar(1, 50_100.0)), answer=False)
    assert isinstance(cancel, CancelOrder)
    coid = cancel.client_order_id
    desk.runner.cancel_refused(coid, ErrorCode.TIMEOUT.value)  # the exchange was unreachable
    assert desk.execute(desk.runner.on_timer(), answer=False) == []
    desk.now += 1.0
    (again,) = desk.execute(desk.runner.on_timer(), answer=False)
    assert again == cancel
    desk.runner.cancel_refused(coid, ErrorCode.ORDER_REJECTED.value)
    desk.now += 1.0
    assert desk.execute(desk.runner.on_timer(), answer=False) == []  # the wait doubled
    desk.now += 1.0
    (third,) = desk.execute(desk.runner.on_timer(), answer=False)
    desk.answer(third)  # this time it goes through: CANCELED
    assert not desk.runner.open_orders and desk.runner.idle
    assert desk.tick(MAX_RETRY_S) == [] and desk.orders(Side.SELL) == []  # nothing held


def test_an_unanswered_cancel_is_asked_again() -> None:
    desk = Desk({0: LONG, 1: FLAT}, order_type="LIMIT")
    desk.bar(_bar(0, 50_000.0), ahead=_bar(1, 50_100.0))  # the BUY LIMIT rests
    (cancel,) = desk.execute(desk.runner.on_bar(_bar(1, 50_100.0)), answer=False)
    assert desk.runner.wake_at() == pytest.approx(desk.now + 30.0)
    desk.now += 30.0
    assert desk.execute(desk.runner.on_timer(), answer=False) == [cancel]


def test_a_cancel_of_an_order_the_broker_does_not_hold_open_is_forgotten() -> None:
    desk = Desk({0: LONG, 1: FLAT}, order_type="LIMIT")
    desk.bar(_bar(0, 50_000.0), ahead=_bar(1, 50_100.0))  # the BUY LIMIT rests
    (cancel,) = desk.execute(desk.runner.on_bar(_bar(1, 50_100.0)), answer=False)
    assert isinstance(cancel, CancelOrder)
    desk.runner.cancel_refused(cancel.client_order_id, ErrorCode.UNKNOWN_ORDER.value)
    assert not desk.runner.open_orders and desk.runner.idle
    assert desk.tick(MAX_RETRY_S) == []


def test_a_restarted_worker_that_is_flat_by_its_strategy_sells_what_it_holds() -> None:
    """The SELL decided before a restart expired: the new worker warms up flat, holding."""
    history = [_bar(i, 50_000.0) for i in range(3)]
    desk = Desk({0: LONG, 1: FLAT}, position="0.002", history=history)
    (sell,) = desk.tick(0.01)  # no bar needed
    assert isinstance(sell, PlaceOrder) and sell.side == Side.SELL and sell.exit_retry
    assert sell.bar_time == 2 * 60_000  # the latest bar's open time
    assert desk.runner.position == 0


def test_a_stale_decision_is_forgotten_and_the_exit_tried_again_as_a_retry() -> None:
    desk = Desk({0: LONG, 1: FLAT})
    desk.bar(_bar(0, 50_000.0))
    (sell,) = desk.execute(desk.runner.on_bar(_bar(1, 50_000.0)), answer=False)
    assert isinstance(sell, PlaceOrder) and not sell.exit_retry
    desk.runner.place_refused(sell.client_order_id, ErrorCode.STALE_DECISION.value)
    assert not desk.runner.pending
    desk.now += 1.0
    (retry,) = desk.runner.on_timer()
    assert isinstance(retry, PlaceOrder) and retry.exit_retry and retry.quantity == "0.002"
    assert retry.client_order_id != sell.client_order_id


def test_an_order_with_an_unknown_outcome_blocks_the_exit_and_is_resent_as_is() -> None:
    desk = Desk({0: LONG, 1: FLAT})
    desk.bar(_bar(0, 50_000.0))
    (sell,) = desk.execute(desk.runner.on_bar(_bar(1, 50_000.0)), answer=False)
    assert isinstance(sell, PlaceOrder)
    desk.runner.place_refused(sell.client_order_id, ErrorCode.TIMEOUT.value)
    assert desk.tick(2.0) == []  # no new SELL while the outcome is unknown
    desk.now += 3.01
    assert desk.runner.on_timer() == [sell]  # the same id: answered from the journal


def test_dust_is_flat() -> None:
    desk = Desk({0: FLAT}, position="0.000001")  # below BTCUSDT's step: nothing to sell
    assert desk.bar(_bar(0, 50_000.0)) == [] and desk.tick(MAX_RETRY_S) == []
    assert desk.runner.idle and desk.runner.wake_at() is None
