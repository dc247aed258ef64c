"""The runner with the paper broker: fills reach the strategies that listen, and nothing of a
finished order stays behind in the runner."""

from __future__ import annotations

from multibot.market.bar import Bar, Signal
from multibot.market.rules import bundled_rules
from multibot.wire.protocol import PlaceOrder, PositionView, WorkerConfig
from orchestrator.broker.memory_journal import MemoryJournal
from orchestrator.broker.paper import PaperBroker
from strategies.base import Strategy
from worker.runner import Runner


class _Flip(Strategy):
    """LONG on even bars, FLAT on odd ones: an order on every bar."""

    name = "flip"
    warmup = 0

    def on_bar(self, bar: Bar) -> Signal | None:
        return Signal.LONG if (bar.open_time // 1000) % 2 == 0 else Signal.FLAT


class _Listener(_Flip):
    def __init__(self) -> None:
        super().__init__()
        self.fills: list[tuple[str, float, float]] = []

    def on_fill(self, side: str, qty: float, price: float) -> None:
        self.fills.append((side, qty, price))


class _Broken(_Flip):
    def on_fill(self, side: str, qty: float, price: float) -> None:
        raise RuntimeError("on_fill broke")


def _bar(i: int, close: float) -> Bar:
    t = i * 1000
    return Bar(symbol="BTCUSDT", open_time=t, close_time=t + 999, open=close, high=close,
               low=close, close=close, volume=1.0)


def _trade(strategies: list[Strategy], bars: int, order_type: str = "MARKET") -> Runner:
    rules = bundled_rules()["BTCUSDT"]
    broker = PaperBroker(MemoryJournal(), {"BTCUSDT": rules})
    config = WorkerConfig(symbol="BTCUSDT", strategies=[], stake="100", order_type=order_type)
    runner = Runner(config, rules, strategies, PositionView(symbol="BTCUSDT"), [], 1)
    for i in range(bars):
        bar = _bar(i, 50_000.0 + i)
        for update in broker.on_bar(bar):
            runner.on_update(update)
        for action in runner.on_bar(bar):
            assert isinstance(action, PlaceOrder)
            runner.on_update(broker.place_now("BTCUSDT", action))
    return runner


def test_on_fill_reaches_the_strategies_that_define_it() -> None:
    listener, quiet = _Listener(), _Flip()
    hook_calls: list[str] = []
    by_instance = _Flip()
    by_instance.on_fill = lambda side, qty, price: hook_calls.append(side)  # type: ignore[method-assign]
    runner = _trade([listener, quiet, by_instance], bars=4)
    # bar 0 buys at 50000 + 2 bps slippage, bar 1 sells at 50001 - 2 bps (down to the tick)
    assert [side for side, _, _ in listener.fills] == ["BUY", "SELL", "BUY", "SELL"]
    assert listener.fills[0] == ("BUY", 0.002, 50010.0)  # 100 USDT / 50000
    assert listener.fills[1] == ("SELL", 0.002, 49990.99)
    assert hook_calls == ["BUY", "SELL", "BUY", "SELL"]
    assert runner.strategy_errors == 0


def test_a_failing_on_fill_is_counted_and_trading_goes_on() -> None:
    runner = _trade([_Broken()], bars=4)
    assert runner.strategy_errors == 4  # one per fill
    assert "on_fill broke" in runner.last_error
    assert runner.position == 0


def test_finished_orders_leave_nothing_behind() -> None:
    """A worker runs for months: what it keeps per order must go when the order is done."""
    for order_type in ("MARKET", "LIMIT"):
        runner = _trade([_Flip()], bars=200, order_type=order_type)
        assert runner.bars == 200
        assert not runner.open_orders and not runner.pending
        assert len(runner._placed_at_bar) <= 1, order_type  # at most the one still resting
        assert not runner._cancels
