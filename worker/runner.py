"""The trading logic of one symbol, free of sockets: bars in, order requests out.

Strategies vote a target (long/flat, see strategies.combine); the runner decides only when
the target CHANGES on a live bar. So a restarted worker, which warms up on history and gets its
position from the broker, never re-buys what it already holds and never doubles an order.
An entry is tried once per decision. An exit is tried until flat: while the target is flat and
the position is one the exchange would let us sell, a SELL goes out whenever no order is in
flight, after a growing wait (worker.retries), on a bar or on the worker's timer. A new order
waits for the outcome of every cancel in flight, so it is sized from the final position.
Every order carries the open time of the bar it was decided on (``bar_time``); a bar at or
before the symbol's last journaled decision (``last_decision_bar``, from the broker) is
evaluated but never acted on again, across worker and orchestrator restarts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from decimal import Decimal

from multibot.market.bar import Bar, Signal
from multibot.market.orders import OPEN_STATUSES, OrderStatus, OrderType, Side
from multibot.market.rules import fmt, price_decimal, round_step_down
from multibot.market.times import iso
from multibot.wire.protocol import (
    MAX_ERROR_CHARS,
    ErrorCode,
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
from worker.retries import Cancels, ExitPlan

log = logging.getLogger(__name__)

MAX_STRATEGY_ERRORS = 10  # a strategy that raised this often is disabled (stance forced FLAT)
RESEND_AFTER_S = 5.0  # an unanswered order is resent with the SAME id (the broker dedupes)
_LONG = Signal.LONG  # looked up once: attribute access on an enum class is slow
_BUY, _SELL = Side.BUY, Side.SELL
# a SELL LIMIT that ended so is an exit that expired unfilled (our TTL cancel, or the venue's)
_UNFILLED_ENDS = frozenset({OrderStatus.CANCELED, OrderStatus.EXPIRED})


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
        clock: Callable[[], float] = time.monotonic,
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
        self._set_position(Decimal(position.qty))
        self.open_orders = {o.client_order_id: o for o in open_orders if o.status in OPEN_STATUSES}
        self._placed_at_bar: dict[str, int] = {}  # LIMIT orders' bar count when sent
        # on_fill is called only on strategies that define it (most do not)
        self._fill_listeners = [
            (i, s) for i, s in enumerate(strategies)
            if getattr(type(s), "on_fill", None) is not Strategy.on_fill
            or "on_fill" in getattr(s, "__dict__", ())]
        self._clock = clock  # seconds: waits between tries (a backtest passes the bars' time)
        self.pending: dict[str, tuple[PlaceOrder, float]] = {}
        self._cancels = Cancels()
        self._exit = ExitPlan()
        self._entry_wanted = False  # a LONG decision whose BUY waits for cancels to settle
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
        """The orders the latest bar calls for: LIMIT expiries, a new decision if the target
        changed, and what the target asks of the position and the orders in flight."""
        actions: list[Message] = self._expire_limits() if self.open_orders else []
        if self._stale_target:
            self._stale_target = False
            target = self._combiner.target
            if target != self._target:
                self._target = target
                if target == _LONG:
                    self._entry_wanted = True
                    self._exit.reset()
                else:
                    self._entry_wanted = False
                    self._exit.decide()
        if (self._target is not _LONG and self.position) or self.open_orders or self._entry_wanted:
            actions += self._pursue()
        return actions

    def _evaluate(self, bar: Bar) -> None:
        """Ask every enabled strategy about ``bar`` and record the signals."""
        for i, strategy in self._enabled:
            try:
                signal = strategy.on_bar(bar)
            except Exception as exc:  # user code: contain, report, never crash the worker
                self._strategy_failed(i, exc, f"on the bar of {iso(bar.open_time)}")
                continue
            if signal is not None:  # None: no change of opinion
                self._combiner.update(i, signal)
                self._stale_target = True

    @property
    def disabled(self) -> list[str]:
        """The class names of the strategies disabled for raising too often."""
        return [type(strategy).__name__ for i, strategy in enumerate(self.strategies)
                if self._errors[i] >= MAX_STRATEGY_ERRORS]

    def _strategy_failed(self, index: int, exc: Exception, where: str) -> None:
        """``where``: when it raised, for people ("on the bar of <UTC time>", "in on_fill")."""
        name = type(self.strategies[index]).__name__
        self._errors[index] += 1
        self.strategy_errors += 1
        self.last_error = f"strategy {name} {where}: {type(exc).__name__}: {exc}"
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

    def _pursue(self) -> list[Message]:
        """What the target asks now: cancel the orders against it, then (once no order is in
        flight and no cancel unsettled) the entry it decided, or the next try at an exit."""
        if self._target == _LONG:
            return self._pursue_long()
        return self._pursue_flat()

    def _against(self, side: Side) -> list[str]:
        return [c for c, o in self.open_orders.items() if o.side == side and c not in self._cancels]

    def _settled(self) -> bool:
        """No order whose outcome could still change the position, and no cancel unsettled."""
        return not (self.pending or self.open_orders or self._cancels)

    def _pursue_long(self) -> list[Message]:
        actions = self.cancel(self._against(_SELL)) if self.open_orders else []
        if not self._entry_wanted or self.pending or self._cancels:
            return actions
        if any(o.side == _SELL for o in self.open_orders.values()):
            return actions
        self._entry_wanted = False  # tried once: a rejected or expired entry is not re-sent
        price = self.last_price
        if price is None or self.holds_tradable() or self.open_orders:
            return actions
        qty = round_step_down(self._stake / price, self._step)
        return actions + self._order(_BUY, qty, price)

    def _pursue_flat(self) -> list[Message]:
        actions = self.cancel(self._against(_BUY)) if self.open_orders else []
        if not self._settled():
            return actions  # a cancelled BUY may yet fill: sell what the outcome leaves
        if not self.holds_tradable():
            self._exit.reset()  # flat (dust at most): the next exit starts afresh
            return actions
        now = self._clock()
        if not self._exit.ready(now):
            return actions
        retry = self._exit.tried(now)
        qty, price = self._for_sale, self.last_price
        assert price is not None  # holds_tradable saw it
        order_type = self._exit.order_type(self._order_type)
        if retry:
            log.info("%s: flat but holding %s: exit try %d (%s)", self.symbol, qty,
                     self._exit.tries, order_type)
        return actions + self._order(_SELL, qty, price, retry, order_type)

    def _exit_wanted(self) -> bool:
        """An exit try waits only for its time (nothing else has to happen first)."""
        return self._target != _LONG and self._settled() and self.holds_tradable()

    def _set_position(self, qty: Decimal) -> None:
        self.position = qty
        self._for_sale = round_step_down(qty, self._step)  # what a SELL of it may carry

    def holds_tradable(self) -> bool:
        """Long means a position the exchange would let us sell. Dust left by fees taken in
        the base asset (Binance, on buys) is below that and must not block the next entry."""
        qty = self._for_sale
        if qty < self._min_qty:
            return False
        price = self.last_price
        return price is not None and qty * price >= self._min_notional

    def close_position(self, price: Decimal, exit_retry: bool = False) -> list[Message]:
        """SELL the position. ``exit_retry``: an exit already decided (or commanded, as a
        flatten on stop), not a new decision on the latest bar."""
        qty = round_step_down(self.position, self._step)
        return self._order(Side.SELL, qty, price, exit_retry) if qty > 0 else []

    def _order(self, side: Side, qty: Decimal, price: Decimal, exit_retry: bool = False,
               order_type: OrderType | None = None) -> list[Message]:
        if qty < self._min_qty or qty * price < self._min_notional:
            log.warning("%s: %s %s @ %s is below the exchange minimum; not sent", self.symbol,
                        side, qty, price)
            return []
        coid = client_order_id(self.symbol, self._seq)
        self._seq += 1
        order_type = order_type or self._order_type
        limit = order_type == OrderType.LIMIT
        order = PlaceOrder(
            client_order_id=coid, side=side, type=order_type,
            quantity=fmt(qty), price=fmt(round_step_down(price, self._tick)) if limit else None,
            bar_time=self.last_bar_time, exit_retry=exit_retry,
        )
        self.pending[coid] = (order, self._clock())
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
        """Cancels of those of ``coids`` not already being cancelled."""
        return list(self._cancels.ask(coids, self._clock())) if coids else []

    def on_timer(self) -> list[Message]:
        """What is due without a bar (the worker asks after every wake-up): resends of
        unanswered orders, cancels to ask again, and the entry or exit that the answers
        received since now allow."""
        now = self._clock()
        out: list[Message] = []
        for coid, (order, sent) in list(self.pending.items()):
            if now - sent > RESEND_AFTER_S:
                self.pending[coid] = (order, now)
                out.append(order)
        if self._cancels:
            out += self._cancels.due(now)
        if self.last_bar_time is not None:
            out += self._pursue()
        return out

    def wake_at(self) -> float | None:
        """When ``on_timer`` has something to do if nothing arrives before (the clock's time),
        or None: the worker sleeps until then at most."""
        times = [sent + RESEND_AFTER_S for _, sent in self.pending.values()]
        cancel_at = self._cancels.wake_at()
        if cancel_at is not None:
            times.append(cancel_at)
        if self._exit_wanted():
            times.append(self._exit.next_at)
        return min(times) if times else None

    @property
    def idle(self) -> bool:
        """Nothing in flight and nothing to try again: quiet bars would only be counted."""
        return not (self.pending or self.open_orders or self._cancels or self._entry_wanted
                    or self._exit_wanted())

    def cancel_refused(self, client_order_id: str, code: str) -> None:
        """The broker answered our cancel with an error. ``unknown_order``: it holds no such
        open order, so it is final (its update came before). Else ask again later."""
        if code == ErrorCode.UNKNOWN_ORDER:
            self._cancels.settled(client_order_id)
            if self.open_orders.pop(client_order_id, None) is not None:
                self._placed_at_bar.pop(client_order_id, None)
                log.warning("%s: %s is not open at the broker; forgotten", self.symbol,
                            client_order_id)
        elif self._cancels.refused(client_order_id, self._clock()):
            log.warning("%s: cancel of %s refused (%s); asking again", self.symbol,
                        client_order_id, code)

    def place_refused(self, client_order_id: str, code: str) -> None:
        """The broker answered an order with an error. A stale decision was refused before
        it was journaled: forget it (an exit is tried again as a retry). Anything else may
        have been journaled: the same id is resent, and answered from the journal."""
        if code == ErrorCode.STALE_DECISION and client_order_id in self.pending:
            del self.pending[client_order_id]
            self._placed_at_bar.pop(client_order_id, None)
            log.warning("%s: %s refused as a stale decision; forgotten", self.symbol,
                        client_order_id)

    def on_update(self, update: OrderUpdate) -> None:
        order = update.order
        coid = order.client_order_id
        tracked = self.pending.pop(coid, None) is not None
        if order.status in OPEN_STATUSES:
            self.open_orders[coid] = order
        else:
            self._cancels.settled(coid)
            tracked = self.open_orders.pop(coid, None) is not None or tracked
            self._placed_at_bar.pop(coid, None)
            if (tracked and order.side == _SELL and order.type == OrderType.LIMIT
                    and order.status in _UNFILLED_ENDS and self._target != _LONG):
                self._exit.expired()
        if order.status == OrderStatus.REJECTED:
            self.last_error = f"order {order.client_order_id} rejected: {order.reason}"
            log.warning("%s: %s", self.symbol, self.last_error)
        self._set_position(Decimal(update.position.qty))
        if self._exit.tries and not self.position:
            self._exit.reset()
        for fill in update.fills:
            log.info("%s: filled %s %s @ %s; position %s", self.symbol, fill.side, fill.qty,
                     fill.price, self.position)
            for i, strategy in self._fill_listeners:
                try:
                    strategy.on_fill(fill.side, float(fill.qty), float(fill.price))
                except Exception as exc:
                    self._strategy_failed(i, exc, "in on_fill")

    def stats(self) -> WorkerHeartbeat:
        return WorkerHeartbeat(
            bars=self.bars, last_bar_time=self.last_bar_time,
            last_close=float(self.last_price) if self.last_price is not None else None,
            position=str(self.position), strategy_errors=self.strategy_errors,
            duplicate_bars=self.duplicate_bars,
            last_error=self.last_error[:MAX_ERROR_CHARS],  # the broker socket's size limit
        )
