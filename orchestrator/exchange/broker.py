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
What the exchange says about an order is journaled by the ledger (orchestrator.exchange.ledger),
which also holds the per-symbol locks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from multibot.errors import ErrorCode, ProtocolError
from multibot.market.bar import Bar
from multibot.market.orders import OrderStatus, OrderType, Side
from multibot.market.records import OrderView, SymbolRules
from multibot.market.rules import check_order, fmt, parse_decimal
from multibot.wire.protocol import OrderUpdate, PlaceOrder
from orchestrator.broker.book import Book, BookQueries
from orchestrator.broker.journal import Journal
from orchestrator.broker.order_ids import check_client_order_id, parse_seq
from orchestrator.exchange.client import ExchangeClient, OutcomeUnknown, Rejected, Unavailable
from orchestrator.exchange.ledger import Ledger
from orchestrator.exchange.orders import on_grid, rejection_reason
from orchestrator.exchange.reconcile import reconcile
from orchestrator.exchange.reports import OrderRequest

log = logging.getLogger(__name__)

_LOOKUPS_S = (0.5, 1.0, 2.0, 4.0)  # waits before each look-up of an order of unknown outcome


class ExchangeBroker(BookQueries):
    def __init__(self, journal: Journal, client: ExchangeClient,
                 rules: Mapping[str, SymbolRules],
                 on_update: Callable[[OrderUpdate], None],
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.journal = journal
        self.client = client
        self.book = Book(journal, rules, fees_in_base=True)  # Binance: a buy pays in base
        self.ledger = Ledger(journal, client, self.book, clock)
        self.notify = on_update  # an update the worker did not ask for (the watcher's)
        self._clock = clock
        self.failed_cancels: set[tuple[str, str]] = set()  # (symbol, coid): retried by watcher
        for order in journal.orders(open_only=True):
            self.book.track(order)

    @property
    def on_exchange(self) -> bool:
        return True

    async def reconcile(self, symbol: str) -> None:
        await reconcile(self.ledger, symbol)

    def on_bar(self, bar: Bar) -> list[OrderUpdate]:
        """Prices only: fills come from the exchange."""
        if bar.close > 0:
            self.book.closes[bar.symbol] = bar.close
        return []

    # --- placing ------------------------------------------------------------------------------

    async def place(self, symbol: str, order: PlaceOrder) -> OrderUpdate:
        coid = order.client_order_id
        check_client_order_id(coid)
        async with self.ledger.lock(symbol):
            existing = self.journal.get_order(coid)
            if existing is not None:
                return await self._known(symbol, existing)
            rules = self.book.rules.get(symbol)
            if rules is None:
                raise ProtocolError(ErrorCode.UNKNOWN_SYMBOL, f"no exchange rules for {symbol}")
            try:
                quantity, price = on_grid(order, rules)
                self._validate(symbol, rules, order, quantity, price)
            except ProtocolError as exc:
                return self._reject(symbol, order, f"{exc.code.value}: {exc.reason}")
            intent = OrderView(
                client_order_id=coid, symbol=symbol, side=order.side, type=order.type,
                quantity=quantity, price=price, status=OrderStatus.PENDING_NEW,
                created_ns=self._clock(), updated_ns=self._clock())
            # Committed before it is sent: a crash from here on leaves a PENDING_NEW order
            # that reconciliation looks up, never an order the journal does not know.
            self.book.decisions.journal_intent(intent, parse_seq(symbol, coid), order)
            self.book.track(intent)
            request = OrderRequest(client_order_id=coid, symbol=rules.symbol,
                                   side=Side(order.side), type=OrderType(order.type),
                                   quantity=quantity, price=price)
            try:
                report = await self.client.create_order(request)
            except Rejected as exc:
                return self.ledger.finish(intent, OrderStatus.REJECTED, rejection_reason(exc))
            except Unavailable as exc:
                return self.ledger.finish(intent, OrderStatus.REJECTED,
                                          f"not sent: {exc.message}")
            except OutcomeUnknown as exc:
                log.warning("%s: order %s: %s; looking it up", symbol, coid, exc.message)
                return await self._await_outcome(intent, str(exc.message))
            return await self.ledger.apply(intent, report)

    def _validate(self, symbol: str, rules: SymbolRules, order: PlaceOrder, quantity: str,
                  price: str | None) -> None:
        qty = parse_decimal(quantity, "quantity")
        limit = parse_decimal(price, "price") if price is not None else None
        if order.type == OrderType.LIMIT and limit is None:
            raise ProtocolError(ErrorCode.BAD_BODY, "a LIMIT order needs a price")
        check_order(rules, order.side, order.type, qty, limit, self.book.last_price(symbol))
        if order.side == Side.SELL:
            held, locked = self.book.sell_balance(symbol)
            if qty > held - locked:
                # the account may hold more, but that is not this bot's to sell
                raise ProtocolError(
                    ErrorCode.INSUFFICIENT_BALANCE,
                    f"selling {fmt(qty)} {rules.base_asset} but this bot holds only "
                    f"{fmt(held - locked)} that is not locked in open orders")

    def _reject(self, symbol: str, order: PlaceOrder, reason: str) -> OrderUpdate:
        now = self._clock()
        rejected = OrderView(client_order_id=order.client_order_id, symbol=symbol,
                             side=order.side, type=order.type, quantity=order.quantity,
                             price=order.price, status=OrderStatus.REJECTED, reason=reason,
                             created_ns=now, updated_ns=now)
        self.book.decisions.journal_intent(rejected, parse_seq(symbol, order.client_order_id),
                                           order)
        return OrderUpdate(order=rejected, position=self.position(symbol))

    async def _known(self, symbol: str, order: OrderView) -> OrderUpdate:
        """A resend of a journaled id: answered from the journal (after one look-up if its
        outcome is still unknown)."""
        if order.symbol != symbol:
            raise ProtocolError(ErrorCode.CONFLICT, f"client_order_id {order.client_order_id} "
                                f"is already used by a {order.symbol} order")
        if order.status == OrderStatus.PENDING_NEW:
            update = await self.ledger.look_up(order)
            if update is None or update.order.status == OrderStatus.PENDING_NEW:
                raise ProtocolError(
                    ErrorCode.TIMEOUT, f"order {order.client_order_id}: the exchange has not "
                    "confirmed it yet; it is being looked up (not resent)")
            return update
        fills = self.journal.order_fills(order.client_order_id)
        return OrderUpdate(order=order, fills=fills, position=self.position(symbol))

    async def _await_outcome(self, intent: OrderView, why: str) -> OrderUpdate:
        for wait in _LOOKUPS_S:
            await asyncio.sleep(wait)
            update = await self.ledger.look_up(intent)
            if update is not None and update.order.status != OrderStatus.PENDING_NEW:
                return update
        raise ProtocolError(ErrorCode.TIMEOUT, f"order {intent.client_order_id}: outcome "
                            f"unknown ({why}); it is being looked up, not resent")

    # --- cancelling ---------------------------------------------------------------------------

    async def cancel(self, symbol: str, client_order_id: str) -> OrderUpdate:
        async with self.ledger.lock(symbol):
            order = self.book.open_order(symbol, client_order_id)
            if order is None:
                raise ProtocolError(ErrorCode.UNKNOWN_ORDER,
                                    f"{symbol} has no open order {client_order_id!r}")
            if order.status == OrderStatus.PENDING_NEW:  # not known to be placed: cancel once it is
                self.failed_cancels.add((symbol, client_order_id))
                raise ProtocolError(ErrorCode.TIMEOUT, f"order {client_order_id}: outcome not "
                                    "known yet; it will be cancelled once it is")
            try:
                report = await self.client.cancel_order(symbol, client_order_id)
            except Rejected as exc:
                if exc.binance_code not in (-2011, -2013):
                    raise ProtocolError(ErrorCode.ORDER_REJECTED, exc.message) from None
                # already final (filled, say): journal what it became
                update = await self.ledger.look_up(order)
                if update is None:
                    raise ProtocolError(ErrorCode.TIMEOUT, exc.message) from None
                return update
            except (OutcomeUnknown, Unavailable) as exc:
                self.failed_cancels.add((symbol, client_order_id))  # the watcher tries again
                raise ProtocolError(ErrorCode.TIMEOUT, f"cancel of {client_order_id}: "
                                    f"{exc.message}; it will be tried again") from None
            self.failed_cancels.discard((symbol, client_order_id))
            return await self.ledger.apply(order, report)

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
