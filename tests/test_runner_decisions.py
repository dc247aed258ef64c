"""The runner's half of "one decision per symbol per bar": every order carries the open time
of the bar it was decided on, and a bar at or before the last journaled decision is evaluated
but never acted on again."""

from __future__ import annotations

from decimal import Decimal

from multibot.market.bar import Bar, Signal
from multibot.market.rules import bundled_rules
from multibot.wire.protocol import PlaceOrder, PositionView, WorkerConfig
from strategies.base import Strategy
from worker.runner import Runner


class _Flip(Strategy):
    """LONG on even bars, FLAT on odd ones: a new target on every bar."""

    name = "flip"
    warmup = 0

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def on_bar(self, bar: Bar) -> Signal | None:
        self.seen.append(bar.open_time)
        return Signal.LONG if (bar.open_time // 1000) % 2 == 0 else Signal.FLAT


def _bar(i: int) -> Bar:
    t = i * 1000
    return Bar(symbol="BTCUSDT", open_time=t, close_time=t + 999, open=50_000.0,
               high=50_000.0, low=50_000.0, close=50_000.0, volume=1.0)


def _runner(strategy: Strategy, last_decision_bar: int | None, qty: str = "0") -> Runner:
    config = WorkerConfig(symbol="BTCUSDT", strategies=[], stake="100")
    return Runner(config, bundled_rules()["BTCUSDT"], [strategy],
                  PositionView(symbol="BTCUSDT", qty=qty), [], 1, last_decision_bar)


def test_every_order_carries_the_open_time_of_its_bar() -> None:
    runner = _runner(_Flip(), None)
    (order,) = runner.on_bar(_bar(2))
    assert isinstance(order, PlaceOrder)
    assert order.bar_time == 2000 and not order.exit_retry


def test_a_bar_already_decided_is_evaluated_but_not_acted_on() -> None:
    strategy = _Flip()
    runner = _runner(strategy, last_decision_bar=4000)
    assert runner.on_bar(_bar(4)) == []  # decided before the restart: not again
    assert strategy.seen == [4000]  # but the strategy saw it, so its state stays right
    assert runner.duplicate_bars == 1
    assert runner.on_bar(_bar(5)) == []  # FLAT: nothing held, nothing to sell
    (order,) = runner.on_bar(_bar(6))  # a new bar, a new decision
    assert isinstance(order, PlaceOrder) and order.side == "BUY" and order.bar_time == 6000


def test_the_target_of_a_decided_bar_stands_so_the_next_bar_does_not_repeat_it() -> None:
    runner = _runner(_Flip(), last_decision_bar=4000, qty="0.002")
    assert runner.on_bar(_bar(4)) == []  # the BUY of bar 4 was placed and filled before
    assert runner.on_bar(_bar(6)) == []  # still LONG, already held: no second BUY
    (sell,) = runner.on_bar(_bar(7))
    assert isinstance(sell, PlaceOrder) and sell.side == "SELL" and sell.bar_time == 7000


def test_a_flatten_on_stop_is_an_exit_retry_not_a_new_decision() -> None:
    runner = _runner(_Flip(), None, qty="0.002")
    runner.on_bar(_bar(3))
    (order,) = runner.close_position(Decimal("50000"), exit_retry=True)
    assert isinstance(order, PlaceOrder) and order.exit_retry and order.side == "SELL"
