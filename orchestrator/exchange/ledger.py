"""The exchange broker's record keeping: ask the exchange about an order by its client order
id, and journal what it says (new fills first, then the order's state), keeping the book in
step. Placing and cancelling (orchestrator.exchange.broker), the watcher and start-up
reconciliation all go through it.

One asyncio lock per symbol keeps a symbol's requests in order; symbols do not wait for each
other, only for the account-wide rate limiter inside the client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from decimal import Decimal

import msgspec

from multibot.market.orders import OrderStatus
from multibot.market.records import FillView, OrderView
from multibot.wire.protocol import OrderUpdate
from orchestrator.broker.book import Book
from orchestrator.broker.journal import Journal
from orchestrator.exchange.client import (
    RECV_WINDOW_MS,
    ExchangeClient,
    OutcomeUnknown,
    Rejected,
    Unavailable,
)
from orchestrator.exchange.orders import fill_view, journal_status, matches_intent
from orchestrator.exchange.reports import OrderStatusReport, number

log = logging.getLogger(__name__)

# Binance refuses a request older than its recvWindow, except for delays inside its matching
# engine, so an order it does not know by then is only *probably* not booked; the evidence
# that it was not is gathered by orchestrator.exchange.unknown, never assumed from the time.
RECV_WINDOW_NS = RECV_WINDOW_MS * 1_000_000
SETTLE_MARGIN_NS = 5 * 10**9  # on top of the recvWindow: clock skew, transit
CLOCK_TOLERANCE_NS = 60 * 10**9
UNKNOWN = "outcome unknown"  # how the reason of an order of unknown outcome begins
_ZERO = Decimal(0)


class Ledger:
    def __init__(self, journal: Journal, client: ExchangeClient, book: Book,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.journal = journal
        self.client = client
        self.book = book
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        self.trade_cursor: dict[str, int] = {}  # symbol -> the last exchange trade id seen

    def now_ns(self) -> int:
        return self._clock()

    def lock(self, symbol: str) -> asyncio.Lock:
        lock = self._locks.get(symbol)
        if lock is None:
            lock = self._locks[symbol] = asyncio.Lock()
        return lock

    # --- what the exchange says about an order ------------------------------------------------

    def is_ours(self, order: OrderView, report: OrderStatusReport) -> bool:
        """``report`` is the exchange's copy of ``order`` (not an older order of that id)."""
        return matches_intent(order, report, CLOCK_TOLERANCE_NS,
                              self.client.server_offset_ms * 1_000_000)

    def recv_window_ends_in_s(self, order: OrderView) -> float:
        """Seconds until the exchange would refuse ``order``'s request as too old (< 0: it
        would now). The request is signed up to ``order_send_within_s`` after the intent
        (a rate limit wait, a resend after a 429 or a clock resync)."""
        signed_by = order.created_ns + int(self.client.order_send_within_s * 1e9)
        return (signed_by + RECV_WINDOW_NS + SETTLE_MARGIN_NS - self._clock()) / 1e9

    def unknown(self, symbol: str) -> OrderView | None:
        """The symbol's oldest order whose outcome is unknown (sent, never confirmed)."""
        return next((o for o in self.book.open_orders(symbol)
                     if o.status == OrderStatus.PENDING_NEW), None)

    def unknown_since(self, order: OrderView, why: str) -> OrderView:
        """Journal why ``order``'s outcome is unknown (it stays PENDING_NEW)."""
        reason = f"{UNKNOWN}: {why}"
        self.journal.update_order(order.client_order_id, order.status, order.executed_qty,
                                  reason, order.updated_ns)
        noted = msgspec.structs.replace(order, reason=reason)
        self.book.track(noted)
        return noted

    async def exchange_copy(self, order: OrderView,
                            max_wait_s: float | None = None) -> OrderStatusReport | None:
        """The exchange's report of ``order`` by client order id, or None when it has none
        (an older order of the same id is not ours). Raises ExchangeError."""
        report = await self.client.get_order(order.symbol, order.client_order_id, max_wait_s)
        return report if report is not None and self.is_ours(order, report) else None

    async def look_up(self, order: OrderView,
                      max_wait_s: float | None = None) -> OrderUpdate | None:
        """Ask the exchange for ``order`` by client order id and journal what it says.
        None when it could not be asked; an order it does not know is left as it is (not
        knowing an order is no proof it was never booked: orchestrator.exchange.unknown)."""
        try:
            report = await self.exchange_copy(order, max_wait_s)
        except (OutcomeUnknown, Unavailable, Rejected) as exc:
            log.warning("%s: cannot look up %s: %s", order.symbol, order.client_order_id,
                        exc.message)
            return None
        if report is None:
            return OrderUpdate(order=order, position=self.book.position(order.symbol))
        return await self.apply(order, report)

    async def adopt(self, order: OrderView, report: OrderStatusReport,
                    how: str) -> OrderUpdate:
        """The exchange booked ``order`` although the journal closed it (or still waits for
        it): journal its trades and state as the exchange has them, say so in its reason and
        in the events."""
        update = await self.apply(order, report)
        reason = (f"adopted: {how} shows the exchange booked it ({report.status}, "
                  f"{update.order.executed_qty} executed)")
        self.journal.update_order(order.client_order_id, update.order.status,
                                  update.order.executed_qty, reason, update.order.updated_ns)
        adopted = msgspec.structs.replace(update.order, reason=reason)
        self.book.track(adopted)
        self.journal.add_event("order", order.symbol, f"{order.client_order_id} {reason}")
        log.warning("%s: %s %s", order.symbol, order.client_order_id, reason)
        return msgspec.structs.replace(update, order=adopted)

    async def apply(self, order: OrderView, report: OrderStatusReport) -> OrderUpdate:
        """Journal the exchange's report of ``order``: new fills first, then its state."""
        symbol, coid = order.symbol, order.client_order_id
        executed = order.executed_qty if report.executed_qty is None else report.executed_qty
        new_fills, filled_before = await self._new_fills(order, report, executed)
        status: str = journal_status(report) or order.status
        journaled = filled_before + sum((Decimal(f.qty) for f in new_fills), _ZERO)
        if journaled < Decimal(executed):
            # the exchange reports more executed than the trades it gave us (myTrades lags or
            # pages): stay open, so the watcher fetches the rest, instead of closing short
            log.warning("%s: %s: %s executed but only %s in trades so far", symbol, coid,
                        executed, number(journaled))
            status, executed = OrderStatus.PARTIALLY_FILLED, number(journaled)
        for done, fill in enumerate(new_fills, start=1):
            last = done == len(new_fills)
            self.journal.record_fill(fill, status if last else OrderStatus.PARTIALLY_FILLED,
                                     executed if last else order.executed_qty)
            self.book.position_of(symbol).apply(fill)
        now = self._clock()
        kept = ("" if order.reason.startswith(UNKNOWN) and status != OrderStatus.PENDING_NEW
                else order.reason)  # the exchange has answered
        reason = kept if status not in (OrderStatus.REJECTED, OrderStatus.EXPIRED) else (
            kept or f"the exchange says {report.status}")
        self.journal.update_order(coid, status, executed, reason, now)
        updated = msgspec.structs.replace(order, status=status, executed_qty=executed,
                                          reason=reason, updated_ns=now)
        self.book.track(updated)
        return OrderUpdate(order=updated, fills=new_fills, position=self.book.position(symbol))

    async def _new_fills(self, order: OrderView, report: OrderStatusReport,
                         executed: str) -> tuple[list[FillView], Decimal]:
        """The trades of ``order`` not yet journaled (from the report, else from myTrades when
        it says more is executed than the journal holds), and the quantity journaled so far."""
        coid = order.client_order_id
        known = self.journal.exchange_trade_ids(coid)
        filled_before = sum((Decimal(f.qty) for f in self.journal.order_fills(coid)), _ZERO)
        fresh = [f for f in report.fills if f.trade_id not in known]
        if fresh:
            now = self._clock()
            first = self.journal.next_trade_id()
            return [fill_view(coid, f, first + i, now) for i, f in enumerate(fresh)], filled_before
        if Decimal(executed) > filled_before and report.order_id is not None:
            # every trade of the order, from its first (a gap may lie before the ones known)
            trades = await self.client.my_trades(order.symbol, report.order_id)
            first = self.journal.next_trade_id()
            return [fill_view(coid, t, first + i, 0) for i, t in enumerate(
                t for t in trades if t.trade_id not in known)], filled_before
        return [], filled_before

    def finish(self, order: OrderView, status: OrderStatus, reason: str) -> OrderUpdate:
        now = self._clock()
        self.journal.update_order(order.client_order_id, status, order.executed_qty, reason,
                                  now)
        done = msgspec.structs.replace(order, status=status, reason=reason, updated_ns=now)
        self.book.track(done)
        if status == OrderStatus.REJECTED:
            log.warning("%s: order %s rejected: %s", order.symbol, order.client_order_id,
                        reason)
        return OrderUpdate(order=done, position=self.book.position(order.symbol))
