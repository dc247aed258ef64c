"""The exchange broker: every symbol's orders on Binance (testnet or live), journaled.

Same contract as the paper broker, with the exchange in the middle:
- an intent is journaled (PENDING_NEW, committed) BEFORE it is sent, with our own
  ``newClientOrderId``; the FULL response's fills are journaled at once;
- 5xx, -1007 or a timeout means the outcome is unknown: the order is looked up by client
  order id (never resent blindly). Until it is known the worker gets a ``timeout`` error and
  its resends of the same id are answered from the journal, without touching the exchange;
- a rejection (-2010, -1013, ...) is journaled REJECTED and reported once: no retry;
- resting orders are polled (within a share of the rate limit) for fills and final states,
  which reach the worker through ``on_update`` (orchestrator.exchange.watcher).
One asyncio lock per symbol keeps a symbol's requests in order; symbols do not wait for
each other, only for the account-wide rate limiter inside the client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import msgspec

from multibot.market.bar import Bar
from multibot.market.orders import FINAL_STATUSES
from multibot.market.position import Position
from multibot.market.rules import check_order, parse_decimal, price_decimal
from multibot.wire.protocol import (
    ErrorCode,
    FillView,
    OrderUpdate,
    OrderView,
    PlaceOrder,
    PositionView,
    ProtocolError,
    SymbolRules,
)
from orchestrator.broker.journal import Journal
from orchestrator.broker.paper import check_client_order_id, parse_seq
from orchestrator.exchange.client import ExchangeClient, OutcomeUnknown, Rejected, Unavailable
from orchestrator.exchange.orders import (
    fill_from_response,
    fill_from_trade,
    matches_intent,
    number,
    order_params,
    rejection_reason,
    status_of,
)

log = logging.getLogger(__name__)

_LOOKUPS_S = (0.5, 1.0, 2.0, 4.0)  # waits before each look-up of an order of unknown outcome
# Binance refuses a request older than its recvWindow (python-binance sends 10 s): an
# order it still does not know this long after we sent it was never placed.
SETTLE_NS = 15 * 10**9
CLOCK_TOLERANCE_NS = 60 * 10**9
_ZERO = Decimal(0)


class ExchangeBroker:
    def __init__(self, journal: Journal, client: ExchangeClient,
                 rules: Mapping[str, SymbolRules],
                 on_update: Callable[[OrderUpdate], None],
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.journal = journal
        self.client = client
        self.rules = dict(rules)
        self.notify = on_update  # an update the worker did not ask for (the watcher's)
        self._clock = clock
        self._positions: dict[str, Position] = {}
        self._open: dict[str, dict[str, OrderView]] = {}
        self._last: dict[str, Decimal] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.failed_cancels: set[tuple[str, str]] = set()  # (symbol, coid): retried by watcher
        for fill in journal.fills():
            self._position(fill.symbol).apply(fill)
        for order in journal.orders(open_only=True):
            self._open.setdefault(order.symbol, {})[order.client_order_id] = order

    # --- queries (the fleet's and status's view; same as the paper broker's) ----------------

    def add_rules(self, rules: SymbolRules) -> None:
        self.rules[rules.symbol] = rules

    def _position(self, symbol: str) -> Position:
        position = self._positions.get(symbol)
        if position is None:
            rules = self.rules.get(symbol)
            position = Position(symbol, rules.base_asset if rules else "",
                                rules.quote_asset if rules else "")
            self._positions[symbol] = position
        return position

    def position(self, symbol: str) -> PositionView:
        position = self._positions.get(symbol)
        return position.view() if position else PositionView(symbol=symbol)

    def held(self, base_asset: str) -> Decimal:
        """What the journal says the bot holds of an asset, over all its symbols."""
        return sum((p.qty for p in self._positions.values() if p.base_asset == base_asset),
                   _ZERO)

    def open_orders(self, symbol: str) -> list[OrderView]:
        return list(self._open.get(symbol, {}).values())

    def open_order(self, symbol: str, client_order_id: str) -> OrderView | None:
        return self._open.get(symbol, {}).get(client_order_id)

    def resting(self) -> list[OrderView]:
        """Every symbol's open orders."""
        return [o for book in self._open.values() for o in book.values()]

    def next_seq(self, symbol: str) -> int:
        return self.journal.max_seq(symbol) + 1

    def last_price(self, symbol: str) -> Decimal | None:
        return self._last.get(symbol)

    def unrealized_pnl(self, symbol: str) -> Decimal:
        last, position = self._last.get(symbol), self._positions.get(symbol)
        return position.unrealized(last) if last is not None and position else _ZERO

    @property
    def on_exchange(self) -> bool:
        return True

    async def reconcile(self, symbol: str) -> None:
        from orchestrator.exchange.reconcile import reconcile

        await reconcile(self, symbol)

    def on_bar(self, bar: Bar) -> list[OrderUpdate]:
        """Prices only: fills come from the exchange."""
        if bar.close > 0:
            self._last[bar.symbol] = price_decimal(bar.close)
        return []

    def now_ns(self) -> int:
        return self._clock()

    def lock(self, symbol: str) -> asyncio.Lock:
        lock = self._locks.get(symbol)
        if lock is None:
            lock = self._locks[symbol] = asyncio.Lock()
        return lock

    # --- placing ------------------------------------------------------------------------------

    async def place(self, symbol: str, order: PlaceOrder) -> OrderUpdate:
        check_client_order_id(order.client_order_id)
        async with self.lock(symbol):
            existing = self.journal.get_order(order.client_order_id)
            if existing is not None:
                return await self._known(symbol, existing)
            rules = self.rules.get(symbol)
            if rules is None:
                raise ProtocolError(ErrorCode.UNKNOWN_SYMBOL, f"no exchange rules for {symbol}")
            try:
                params = order_params(order, rules)
                self._validate(symbol, rules, order, params)
            except ProtocolError as exc:
                return self._reject(symbol, order, f"{exc.code.value}: {exc.reason}")
            intent = OrderView(
                client_order_id=order.client_order_id, symbol=symbol, side=order.side,
                type=order.type, quantity=params["quantity"], price=params.get("price"),
                status="PENDING_NEW", created_ns=self._clock(), updated_ns=self._clock())
            # Committed before it is sent: a crash from here on leaves a PENDING_NEW order
            # that reconciliation looks up, never an order the journal does not know.
            self.journal.insert_order(intent, parse_seq(symbol, intent.client_order_id))
            self._open.setdefault(symbol, {})[intent.client_order_id] = intent
            try:
                data = await self.client.create_order(**params)
            except Rejected as exc:
                return self.finish(intent, "REJECTED", rejection_reason(exc))
            except Unavailable as exc:
                return self.finish(intent, "REJECTED", f"not sent: {exc.message}")
            except OutcomeUnknown as exc:
                log.warning("%s: order %s: %s; looking it up", symbol, intent.client_order_id,
                            exc.message)
                return await self._await_outcome(intent, str(exc.message))
            return await self.apply(intent, data)

    def _validate(self, symbol: str, rules: SymbolRules, order: PlaceOrder,
                  params: dict[str, Any]) -> None:
        qty = parse_decimal(params["quantity"], "quantity")
        price = parse_decimal(params["price"], "price") if "price" in params else None
        if order.type == "LIMIT" and price is None:
            raise ProtocolError(ErrorCode.BAD_BODY, "a LIMIT order needs a price")
        check_order(rules, order.side, order.type, qty, price, self._last.get(symbol))
        if order.side == "SELL":
            held = self._position(symbol).qty
            locked = sum((Decimal(o.quantity) - Decimal(o.executed_qty)
                          for o in self.open_orders(symbol) if o.side == "SELL"), _ZERO)
            if qty > held - locked:
                # the account may hold more, but that is not this bot's to sell
                raise ProtocolError(
                    ErrorCode.INSUFFICIENT_BALANCE,
                    f"selling {number(qty)} {rules.base_asset} but this bot holds only "
                    f"{number(held - locked)} that is not locked in open orders")

    def _reject(self, symbol: str, order: PlaceOrder, reason: str) -> OrderUpdate:
        now = self._clock()
        rejected = OrderView(client_order_id=order.client_order_id, symbol=symbol,
                             side=order.side, type=order.type, quantity=order.quantity,
                             price=order.price, status="REJECTED", reason=reason,
                             created_ns=now, updated_ns=now)
        self.journal.insert_order(rejected, parse_seq(symbol, order.client_order_id))
        return OrderUpdate(order=rejected, position=self.position(symbol))

    async def _known(self, symbol: str, order: OrderView) -> OrderUpdate:
        """A resend of a journaled id: answered from the journal (after one look-up if its
        outcome is still unknown)."""
        if order.symbol != symbol:
            raise ProtocolError(ErrorCode.CONFLICT, f"client_order_id {order.client_order_id} "
                                f"is already used by a {order.symbol} order")
        if order.status == "PENDING_NEW":
            update = await self.look_up(order)
            if update is None or update.order.status == "PENDING_NEW":
                raise ProtocolError(
                    ErrorCode.TIMEOUT, f"order {order.client_order_id}: the exchange has not "
                    "confirmed it yet; it is being looked up (not resent)")
            return update
        fills = self.journal.order_fills(order.client_order_id)
        return OrderUpdate(order=order, fills=fills, position=self.position(symbol))

    async def _await_outcome(self, intent: OrderView, why: str) -> OrderUpdate:
        for wait in _LOOKUPS_S:
            await asyncio.sleep(wait)
            update = await self.look_up(intent)
            if update is not None and update.order.status != "PENDING_NEW":
                return update
        raise ProtocolError(ErrorCode.TIMEOUT, f"order {intent.client_order_id}: outcome "
                            f"unknown ({why}); it is being looked up, not resent")

    # --- what the exchange says about an order --------------------------------------------------

    def is_ours(self, order: OrderView, data: dict[str, Any]) -> bool:
        """``data`` is the exchange's copy of ``order`` (not an older order of that id)."""
        return matches_intent(order, data, CLOCK_TOLERANCE_NS,
                              self.client.server_offset_ms * 1_000_000)

    def settled(self, order: OrderView) -> bool:
        """Long enough since ``order`` was sent that the exchange's answer is final."""
        return self.settles_in_s(order) < 0

    def settles_in_s(self, order: OrderView) -> float:
        """Seconds until the exchange's answer about ``order`` is final (< 0: it is)."""
        return (order.created_ns + SETTLE_NS - self._clock()) / 1e9

    async def exchange_copy(self, order: OrderView,
                            max_wait_s: float | None = None) -> dict[str, Any] | None:
        """The exchange's document of ``order`` by client order id, or None when it has none
        (an older order of the same id is not ours). Raises ExchangeError."""
        data = await self.client.get_order(order.symbol, order.client_order_id, max_wait_s)
        return data if data is not None and self.is_ours(order, data) else None

    def expire_unsent(self, order: OrderView) -> OrderUpdate:
        """A settled PENDING_NEW order the exchange does not know: it was never sent."""
        return self.finish(order, "EXPIRED", "never reached the exchange (it has no such order)")

    async def look_up(self, order: OrderView,
                      max_wait_s: float | None = None) -> OrderUpdate | None:
        """Ask the exchange for ``order`` by client order id and journal what it says.
        None when it could not be asked; a PENDING_NEW order the exchange still does not know
        once ``settled`` is EXPIRED (it never reached the exchange)."""
        try:
            data = await self.exchange_copy(order, max_wait_s)
        except (OutcomeUnknown, Unavailable, Rejected) as exc:
            log.warning("%s: cannot look up %s: %s", order.symbol, order.client_order_id,
                        exc.message)
            return None
        if data is None:
            if order.status == "PENDING_NEW" and self.settled(order):
                return self.expire_unsent(order)
            return OrderUpdate(order=order, position=self.position(order.symbol))
        return await self.apply(order, data)

    async def apply(self, order: OrderView, data: dict[str, Any]) -> OrderUpdate:
        """Journal an exchange order document: new fills first, then the order's state."""
        symbol, coid = order.symbol, order.client_order_id
        executed = number(data.get("executedQty", order.executed_qty))
        known = self.journal.exchange_trade_ids(coid)
        raw = [f for f in data.get("fills") or [] if int(f["tradeId"]) not in known]
        filled_before = sum((Decimal(f.qty) for f in self.journal.order_fills(coid)), _ZERO)
        new_fills: list[FillView] = []
        if raw:
            now = self._clock()
            new_fills = [fill_from_response(symbol, coid, order.side, f,
                                            self.journal.next_trade_id() + i, now)
                         for i, f in enumerate(raw)]
        elif Decimal(executed) > filled_before and "orderId" in data:
            trades = await self.client.my_trades(symbol, int(data["orderId"]))
            base = self.journal.next_trade_id()
            new_fills = [fill_from_trade(coid, t, base + i)
                         for i, t in enumerate(t for t in trades if int(t["id"]) not in known)]
        status = status_of(data) or order.status
        journaled = filled_before + sum((Decimal(f.qty) for f in new_fills), _ZERO)
        if journaled < Decimal(executed):
            # the exchange reports more executed than the trades it gave us (myTrades lags or
            # pages): stay open, so the watcher fetches the rest, instead of closing short
            log.warning("%s: %s: %s executed but only %s in trades so far", symbol, coid,
                        executed, number(journaled))
            status, executed = "PARTIALLY_FILLED", number(journaled)
        for done, fill in enumerate(new_fills, start=1):
            last = done == len(new_fills)
            self.journal.record_fill(fill, status if last else "PARTIALLY_FILLED",
                                     executed if last else order.executed_qty)
            self._position(symbol).apply(fill)
        now = self._clock()
        reason = order.reason if status not in ("REJECTED", "EXPIRED") else (
            order.reason or f"the exchange says {data.get('status')}")
        self.journal.update_order(coid, status, executed, reason, now)
        updated = msgspec.structs.replace(order, status=status, executed_qty=executed,
                                          reason=reason, updated_ns=now)
        self._track(updated)
        return OrderUpdate(order=updated, fills=new_fills, position=self.position(symbol))

    def finish(self, order: OrderView, status: str, reason: str) -> OrderUpdate:
        now = self._clock()
        self.journal.update_order(order.client_order_id, status, order.executed_qty, reason,
                                  now)
        done = msgspec.structs.replace(order, status=status, reason=reason, updated_ns=now)
        self._track(done)
        if status == "REJECTED":
            log.warning("%s: order %s rejected: %s", order.symbol, order.client_order_id,
                        reason)
        return OrderUpdate(order=done, position=self.position(order.symbol))

    def _track(self, order: OrderView) -> None:
        book = self._open.setdefault(order.symbol, {})
        if order.status in FINAL_STATUSES:
            book.pop(order.client_order_id, None)
        else:
            book[order.client_order_id] = order

    # --- cancelling ---------------------------------------------------------------------------

    async def cancel(self, symbol: str, client_order_id: str) -> OrderUpdate:
        async with self.lock(symbol):
            order = self._open.get(symbol, {}).get(client_order_id)
            if order is None:
                raise ProtocolError(ErrorCode.UNKNOWN_ORDER,
                                    f"{symbol} has no open order {client_order_id!r}")
            if order.status == "PENDING_NEW":  # not known to be placed: cancel once it is
                self.failed_cancels.add((symbol, client_order_id))
                raise ProtocolError(ErrorCode.TIMEOUT, f"order {client_order_id}: outcome not "
                                    "known yet; it will be cancelled once it is")
            try:
                data = await self.client.cancel_order(symbol, client_order_id)
            except Rejected as exc:
                if exc.binance_code not in (-2011, -2013):
                    raise ProtocolError(ErrorCode.ORDER_REJECTED, exc.message) from None
                # already final (filled, say): journal what it became
                update = await self.look_up(order)
                if update is None:
                    raise ProtocolError(ErrorCode.TIMEOUT, exc.message) from None
                return update
            except (OutcomeUnknown, Unavailable) as exc:
                self.failed_cancels.add((symbol, client_order_id))  # the watcher tries again
                raise ProtocolError(ErrorCode.TIMEOUT, f"cancel of {client_order_id}: "
                                    f"{exc.message}; it will be tried again") from None
            self.failed_cancels.discard((symbol, client_order_id))
            return await self.apply(order, data)

    async def cancel_all(self, symbol: str) -> list[OrderUpdate]:
        updates = []
        for order in self.open_orders(symbol):
            try:
                updates.append(await self.cancel(symbol, order.client_order_id))
            except ProtocolError as exc:
                log.warning("%s: could not cancel %s: %s", symbol, order.client_order_id,
                            exc.reason)
            except Exception:  # one order's trouble must not leave the others resting
                log.exception("%s: cancelling %s failed", symbol, order.client_order_id)
        return updates
