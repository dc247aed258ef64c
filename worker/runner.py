"""The trading logic of one symbol, free of sockets: bars in, order requests out.

Strategies vote a target (long/flat, see strategies.combine); the runner acts only when the
target CHANGES on a live bar. So a restarted worker, which warms up on history and gets its
position from the broker, never re-buys what it already holds and never doubles an order.
Every order carries the open time of the bar it was decided on (``bar_time``); a bar at or
before the symbol's last journaled decision (``last_decision_bar``, from the broker) is
evaluated but never acted on again, across worker and orchestrator restarts.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal

from multibot.market.bar import Bar, Signal
from multibot.market.orders import OPEN_STATUSES, OrderStatus, OrderType, Side
from multibot.market.rules import fmt, price_decimal, round_step_down
from multibot.wire.protocol import (
    MAX_ERROR_CHARS,
    CancelOrder,
    Message,
    OrderUpdate,
    OrderView,
    PlaceOrder,
    PositionView,
    SymbolRules,
    WorkerConfig,
    WorkerHeartbeat,
    client_order_id,
)
from strategies.base import Strategy
from strategies.combine import Combiner

log = logging.getLogger(__name__)

MAX_STRATEGY_ERRORS = 10  # a strategy that raised this often is disabled (stance forced FLAT)
RESEND_AFTER_S = 5.0  # an unanswered order is resent with the SAME id (the broker dedupes)
_LONG = Signal.LONG  # looked up once: attribute access on an enum class is slow


class Runner:
    def __init__(
        self,
        config: WorkerConfig,
        rules: SymbolRules,
        strategies: list[Strategy],
        position: PositionView,
        open_orders: list[OrderView],
        next_seq: int,
        last_decision_bar: int | None = None,
    ) -> None:
        self.config = config
        self._order_type = OrderType(config.order_type)
        self.symbol = config.symbol
        self._step = Decimal(rules.step_size)
        self._tick = Decimal(rules.tick_size)
        self._min_qty = max(Decimal(rules.min_qty), self._step)
        self._min_notional = Decimal(rules.min_notional)
        self._stake = Decimal(config.stake)
        self.strategies = strategies
        self._errors = [0] * len(strategies)
        # (index, strategy) of the strategies still enabled: what each bar asks
        self._enabled = list(enumerate(strategies))
        self._combiner = Combiner(len(strategies))
        self._target = Signal.FLAT
        # False only while the combiner's target is known to equal _target (set whenever a
        # stance changes), so a bar without a new signal skips recomputing the target
        self._stale_target = False
        self.position = Decimal(position.qty)
        self.open_orders = {o.client_order_id: o for o in open_orders if o.status in OPEN_STATUSES}
        self._placed_at_bar: dict[str, int] = {}  # LIMIT orders' bar count when sent
        # on_fill is called only on strategies that define it (most do not)
        self._fill_listeners = [
            (i, s) for i, s in enumerate(strategies)
            if getattr(type(s), "on_fill", None) is not Strategy.on_fill
            or "on_fill" in getattr(s, "__dict__", ())]
        self.pending: dict[str, tuple[PlaceOrder, float]] = {}
        self._cancelling: set[str] = set()
        self._seq = next_seq
        self.bars = 0
        self.last_bar_time: int | None = None
        self._last_live_time: int | None = None
        self.duplicate_bars = 0
        self._last_decision_bar = last_decision_bar
        self._last_price: Decimal | None = None
        self._last_close: float | None = None  # converted to Decimal only when needed
        self.strategy_errors = 0
        self.last_error = ""

    # --- bars ---------------------------------------------------------------------------------

    @property
    def last_price(self) -> Decimal | None:
        """Close of the latest bar, as the exchange wrote it."""
        if self._last_close is not None:
            self._last_price = price_decimal(self._last_close)
            self._last_close = None
        return self._last_price

    @last_price.setter
    def last_price(self, value: Decimal | None) -> None:
        self._last_price, self._last_close = value, None

    def warmup(self, history: list[Bar]) -> None:
        """Feed history to the strategies without trading, so live signals are meaningful."""
        for bar in history:
            self._evaluate(bar)
            self.last_bar_time = bar.open_time
            self._last_close = bar.close
        self._target = self._combiner.target
        log.info("%s: warmed up on %d bars; target %s, position %s", self.symbol, len(history),
                 self._target.value, self.position)

    def on_bar(self, bar: Bar) -> list[Message]:
        if not self._advance(bar):
            return []
        self._evaluate(bar)
        decided = self._last_decision_bar
        if decided is not None and bar.open_time <= decided:
            # a bar this symbol already acted on, re-sent live: its decision stands (as after
            # warm-up), nothing is sent twice
            self.duplicate_bars += 1
            self._target = self._combiner.target
            self._stale_target = False
            return []
        return self._act()

    def _advance(self, bar: Bar) -> bool:
        """Take ``bar`` as the latest, or False for one already seen."""
        open_time = bar.open_time
        if self.last_bar_time is not None and open_time <= self.last_bar_time:
            # already seen: history/live overlap is normal, a live bar seen twice is not
            if self._last_live_time is not None and open_time <= self._last_live_time:
                self.duplicate_bars += 1
            return False
        self._last_live_time = open_time
        self.bars += 1
        self.last_bar_time = open_time
        self._last_close = bar.close
        return True

    def _act(self) -> list[Message]:
        """The orders the latest bar calls for: LIMIT expiries, then a change of target."""
        actions: list[Message] = self._expire_limits() if self.open_orders else []
        if self._stale_target:
            self._stale_target = False
            target = self._combiner.target
            if target != self._target:
                self._target = target
                price = self.last_price
                assert price is not None
                actions += self._rebalance(target, price)
        return actions

    def _evaluate(self, bar: Bar) -> None:
        """Ask every enabled strategy about ``bar`` and record the signals."""
        for i, strategy in self._enabled:
            try:
                signal = strategy.on_bar(bar)
            except Exception as exc:  # user code: contain, report, never crash the worker
                self._strategy_failed(i, exc)
                continue
            if signal is not None:  # None: no change of opinion
                self._combiner.update(i, signal)
                self._stale_target = True

    def _strategy_failed(self, index: int, exc: Exception) -> None:
        name = type(self.strategies[index]).__name__
        self._errors[index] += 1
        self.strategy_errors += 1
        self.last_error = f"strategy {name}: {type(exc).__name__}: {exc}"
        log.error("%s: %s", self.symbol, self.last_error, exc_info=exc)
        if self._errors[index] >= MAX_STRATEGY_ERRORS:
            # asked nothing more: neither on_bar nor on_fill, and its signals are ignored
            self._enabled = [(i, s) for i, s in self._enabled if i != index]
            self._fill_listeners = [(i, s) for i, s in self._fill_listeners if i != index]
            self._combiner.update(index, Signal.FLAT)
            self._stale_target = True
            self.last_error += f" (disabled after {MAX_STRATEGY_ERRORS} errors)"
            log.error("%s: strategy %s disabled", self.symbol, name)

    # --- orders -------------------------------------------------------------------------------

    def _busy(self, side: Side) -> bool:
        if self.pending and any(p.side == side for p, _ in self.pending.values()):
            return True
        return bool(self.open_orders) and any(o.side == side for o in self.open_orders.values())

    def _rebalance(self, target: Signal, price: Decimal) -> list[Message]:
        if target == _LONG:
            if self._holds_tradable(price) or self._busy(Side.BUY):
                return []
            qty = round_step_down(self._stake / price, self._step)
            return self._order(Side.BUY, qty, price)
        actions = (
            self.cancel([c for c, o in self.open_orders.items() if o.side == Side.BUY])
            if self.open_orders
            else []
        )
        if not self._busy(Side.SELL):
            actions += self.close_position(price)
        return actions

    def _holds_tradable(self, price: Decimal) -> bool:
        """Long means a position the exchange would let us sell. Dust left by fees taken in
        the base asset (Binance, on buys) is below that and must not block the next entry."""
        if not self.position:
            return False
        qty = round_step_down(self.position, self._step)
        return qty >= self._min_qty and qty * price >= self._min_notional

    def close_position(self, price: Decimal, exit_retry: bool = False) -> list[Message]:
        """SELL the position. ``exit_retry``: an exit already decided (or commanded, as a
        flatten on stop), not a new decision on the latest bar."""
        qty = round_step_down(self.position, self._step)
        return self._order(Side.SELL, qty, price, exit_retry) if qty > 0 else []

    def _order(self, side: Side, qty: Decimal, price: Decimal,
               exit_retry: bool = False) -> list[Message]:
        if qty < self._min_qty or qty * price < self._min_notional:
            log.warning("%s: %s %s @ %s is below the exchange minimum; not sent", self.symbol,
                        side, qty, price)
            return []
        coid = client_order_id(self.symbol, self._seq)
        self._seq += 1
        order_type = self._order_type
        limit = order_type == OrderType.LIMIT
        order = PlaceOrder(
            client_order_id=coid, side=side, type=order_type,
            quantity=fmt(qty), price=fmt(round_step_down(price, self._tick)) if limit else None,
            bar_time=self.last_bar_time, exit_retry=exit_retry,
        )
        self.pending[coid] = (order, time.monotonic())
        if limit:
            self._placed_at_bar[coid] = self.bars
        return [order]  # logged by the caller once sent: logging first would delay the order

    def _expire_limits(self) -> list[Message]:
        ttl = self.config.limit_ttl_bars
        return self.cancel([
            coid for coid, order in self.open_orders.items()
            if order.type == OrderType.LIMIT and self.bars - self._placed_at_bar.get(coid, 0) >= ttl
        ])

    def cancel(self, coids: list[str]) -> list[Message]:
        fresh = [c for c in coids if c not in self._cancelling]
        self._cancelling.update(fresh)
        return [CancelOrder(client_order_id=c) for c in fresh]

    def resends(self) -> list[Message]:
        now = time.monotonic()
        out: list[Message] = []
        for coid, (order, sent) in list(self.pending.items()):
            if now - sent > RESEND_AFTER_S:
                self.pending[coid] = (order, now)
                out.append(order)
        return out

    def on_update(self, update: OrderUpdate) -> None:
        order = update.order
        coid = order.client_order_id
        self.pending.pop(coid, None)
        if order.status in OPEN_STATUSES:
            self.open_orders[coid] = order
        else:
            self._cancelling.discard(coid)
            self.open_orders.pop(coid, None)
            self._placed_at_bar.pop(coid, None)
        if order.status == OrderStatus.REJECTED:
            self.last_error = f"order {order.client_order_id} rejected: {order.reason}"
            log.warning("%s: %s", self.symbol, self.last_error)
        self.position = Decimal(update.position.qty)
        for fill in update.fills:
            log.info("%s: filled %s %s @ %s; position %s", self.symbol, fill.side, fill.qty,
                     fill.price, self.position)
            for i, strategy in self._fill_listeners:
                try:
                    strategy.on_fill(fill.side, float(fill.qty), float(fill.price))
                except Exception as exc:
                    self._strategy_failed(i, exc)

    def stats(self) -> WorkerHeartbeat:
        return WorkerHeartbeat(
            bars=self.bars, last_bar_time=self.last_bar_time,
            last_close=float(self.last_price) if self.last_price is not None else None,
            position=str(self.position), strategy_errors=self.strategy_errors,
            duplicate_bars=self.duplicate_bars,
            last_error=self.last_error[:MAX_ERROR_CHARS],  # the broker socket's size limit
        )
