"""The exchange broker: every symbol's orders on Binance (testnet or live), journaled.

Same contract as the paper broker, with the exchange in the middle:
- an intent is journaled (PENDING_NEW, committed) BEFORE it is sent, with our own
  ``newClientOrderId``; the FULL response's fills are journaled at once;
- 5xx, -1007 or a timeout means the outcome is unknown: the order is looked up by client
  order id (never resent blindly). Until it is known the worker gets a ``timeout`` error and
  its resends of the same id are answered from the journal, without touching the exchange;
- while an order's outcome is unknown, or a cancel is not confirmed, or reconciliation found
  the journal and the account at odds, the symbol places nothing new: a new intent is
  journaled REJECTED with the reason (naming the order), and status shows it (``halted``);
- a rejection (-2010, -1013, ...) is journaled REJECTED and reported once: no retry;
- a cancel that fails (any rejection but "unknown order", or no answer) is tried again with
  backoff until the exchange confirms the order final (orchestrator.exchange.cancels); one
  asked while the order's outcome is unknown is carried out once it is known booked, also
  when that is after it was closed as never booked (adopted);
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
from multibot.market.orders import FINAL_STATUSES, OrderStatus, OrderType, Side
from multibot.market.records import OrderView, SymbolRules
from multibot.market.rules import check_order, fmt, parse_decimal
from multibot.wire.protocol import OrderUpdate, PlaceOrder
from orchestrator.broker.book import Book, BookQueries
from orchestrator.broker.journal import Journal
from orchestrator.broker.order_ids import check_client_order_id, parse_seq
from orchestrator.exchange.cancels import PendingCancels
from orchestrator.exchange.client import ExchangeClient, OutcomeUnknown, Rejected, Unavailable
from orchestrator.exchange.ledger import Ledger
from orchestrator.exchange.orders import on_grid, rejection_reason
from orchestrator.exchange.reconcile import reconcile
from orchestrator.exchange.reports import OrderRequest
from orchestrator.exchange.unknown import NEVER_BOOKED

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
        self._on_update = on_update
        self._clock = clock
        self.cancels = PendingCancels()  # not confirmed yet: retried by the watcher
        # cancels asked of orders then closed as never booked: carried out if they are booked
        self._cancel_if_booked: set[tuple[str, str]] = set()
        self.halts: dict[str, str] = {}  # symbol -> why reconciliation stopped its trading
        self.suspect: set[str] = set()  # symbols short once: halted if short again
        self.traded: set[str] = set()  # reconciled at start-up: reconciled periodically
        self.stream_healthy = False  # the user data stream brings fills: poll less
        self.stream_subscriptions = 0  # user data stream subscriptions made so far
        for order in journal.orders(open_only=True):
            self.book.track(order)

    @property
    def on_exchange(self) -> bool:
        return True

    async def reconcile(self, symbol: str) -> None:
        await reconcile(self.ledger, symbol)
        self.halts.pop(symbol, None)
        self.traded.add(symbol)

    def notify(self, update: OrderUpdate) -> None:
        """Tell the worker of an update it did not ask for (the watcher's, the stream's). An
        order adopted open whose cancel was asked while its outcome was unknown is cancelled
        now, as promised (the watcher tries; new orders wait for it)."""
        order = update.order
        key = (order.symbol, order.client_order_id)
        if key in self._cancel_if_booked:
            self._cancel_if_booked.discard(key)
            if order.status not in FINAL_STATUSES:
                self.cancels.failed(*key, "asked before the order was known to be booked")
        self._on_update(update)

    def cancel_settled(self, symbol: str, client_order_id: str) -> None:
        """A pending cancel whose order is no longer open is done; if the order was closed as
        never booked, it is still carried out should the order turn out booked (``notify``)."""
        self.cancels.done(symbol, client_order_id)
        order = self.journal.get_order(client_order_id)
        if order is not None and order.reason.startswith(NEVER_BOOKED):
            self._cancel_if_booked.add((symbol, client_order_id))

    def halted(self, symbol: str) -> str:
        """Why ``symbol`` places no new order now ("" if it may)."""
        unknown = self.ledger.unknown(symbol)
        if unknown is not None:
            return (f"order {unknown.client_order_id} ({unknown.side} {unknown.quantity}): "
                    f"{unknown.reason or 'outcome unknown: not confirmed yet'}; it is being "
                    "looked up and nothing new is placed until the exchange answers")
        pending = self.cancels.of(symbol)
        if pending:
            return "; ".join(f"the cancel of order {coid} is not confirmed ({why}); it is "
                             "being tried again" for coid, why in pending)
        return self.halts.get(symbol, "")

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
            refusal = await self._blocked(symbol)
            if refusal:
                return self._reject(symbol, order, f"{ErrorCode.NOT_AVAILABLE.value}: "
                                    f"{symbol} places nothing new: {refusal}")
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
                intent = self.ledger.unknown_since(intent, str(exc.message))
                return await self._await_outcome(intent, str(exc.message))
            return await self.ledger.apply(intent, report)

    async def _blocked(self, symbol: str) -> str:
        """``halted``, after trying the symbol's unconfirmed cancels once more (a new order
        waits for a cancel's outcome). The caller holds the symbol's lock."""
        for coid, _ in self.cancels.of(symbol):
            order = self.book.open_order(symbol, coid)
            if order is None:
                self.cancel_settled(symbol, coid)
            elif order.status != OrderStatus.PENDING_NEW:
                try:
                    await self._cancel(symbol, order)
                except ProtocolError as exc:
                    log.info("%s: cancel of %s: %s", symbol, coid, exc.reason)
        return self.halted(symbol)

    def _validate(self, symbol: str, rules: SymbolRules, order: PlaceOrder, quantity: str,
                  price: str | None) -> None:
        qty = parse_decimal(quantity, "quantity")
        limit = parse_decimal(price, "price") if price is not None else None
        if order.type == OrderType.LIMIT and limit is None:
            raise ProtocolError(ErrorCode.BAD_BODY, "a LIMIT order needs a price")
        check_order(rules, order.side, order.type, qty, limit, self.book.last_price(symbol),
                    len(self.book.open_orders(symbol)))  # ours: MAX_NUM_ORDERS
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
                            f"unknown ({why}); it is being looked up, not resent, and "
                            f"{intent.symbol} places nothing new until the exchange answers")

    # --- cancelling ---------------------------------------------------------------------------

    async def cancel(self, symbol: str, client_order_id: str) -> OrderUpdate:
        async with self.ledger.lock(symbol):
            order = self.book.open_order(symbol, client_order_id)
            if order is None:
                self.cancels.done(symbol, client_order_id)
                raise ProtocolError(ErrorCode.UNKNOWN_ORDER,
                                    f"{symbol} has no open order {client_order_id!r}")
            return await self._cancel(symbol, order)

    async def _cancel(self, symbol: str, order: OrderView) -> OrderUpdate:
        """Cancel an open order; until the exchange confirms it final, the cancel stays
        pending (tried again by the watcher). The caller holds the symbol's lock."""
        coid = order.client_order_id
        if order.status == OrderStatus.PENDING_NEW:  # not known to be placed: cancel once it is
            self.cancels.failed(symbol, coid, "its order's outcome is unknown")
            raise ProtocolError(ErrorCode.TIMEOUT, f"order {coid}: outcome not "
                                "known yet; it will be cancelled once it is")
        try:
            report = await self.client.cancel_order(symbol, coid)
        except Rejected as exc:
            if exc.binance_code not in (-2011, -2013):
                self.cancels.failed(symbol, coid, exc.message)
                raise ProtocolError(ErrorCode.ORDER_REJECTED, f"cancel of {coid}: "
                                    f"{exc.message}; it will be tried again") from None
            # the exchange says it is not open (filled, say): journal what it became
            update = await self.ledger.look_up(order)
            if update is None or update.order.status not in FINAL_STATUSES:
                self.cancels.failed(symbol, coid, f"{exc.message}, yet not final")
                raise ProtocolError(ErrorCode.TIMEOUT, f"cancel of {coid}: {exc.message}; "
                                    "it will be tried again") from None
            self.cancels.done(symbol, coid)
            return update
        except (OutcomeUnknown, Unavailable) as exc:
            self.cancels.failed(symbol, coid, exc.message)  # the watcher tries again
            raise ProtocolError(ErrorCode.TIMEOUT, f"cancel of {coid}: "
                                f"{exc.message}; it will be tried again") from None
        update = await self.ledger.apply(order, report)
        if update.order.status in FINAL_STATUSES:
            self.cancels.done(symbol, coid)
        else:
            self.cancels.failed(symbol, coid, f"the exchange answered {report.status}")
        return update

    async def cancel_all(self, symbol: str) -> list[OrderUpdate]:
        """Cancel every open order of ``symbol``, including one placed while this runs (a
        request that was already waiting for the symbol's lock when the list was taken)."""
        updates: list[OrderUpdate] = []
        tried: set[str] = set()
        while True:
            async with self.ledger.lock(symbol):  # whatever holds or awaits it goes first
                todo = [o for o in self.open_orders(symbol) if o.client_order_id not in tried]
            if not todo:
                return updates
            for order in todo:
                tried.add(order.client_order_id)
                try:
                    updates.append(await self.cancel(symbol, order.client_order_id))
                except ProtocolError as exc:
                    log.warning("%s: could not cancel %s: %s", symbol, order.client_order_id,
                                exc.reason)
                except Exception:  # one order's trouble must not leave the others resting
                    log.exception("%s: cancelling %s failed", symbol, order.client_order_id)
