"""Orders whose outcome is unknown (a 5xx, -1007 or a timeout after the request went out, or a
crash between journaling and the answer): settled by the exchange's evidence, never by time.

Binance's recvWindow check "does not cover potential delays inside the Matching Engine": an
order the exchange does not know by its client order id may still be booked later. So an
order is closed as never booked only when, after its request's recvWindow has passed,
- the exchange still does not know its client order id,
- the symbol's allOrders since the request was sent does not contain it, and
- the account's base balance agrees with the journal (a BUY's coins are not there, a SELL's
  are still there).
Until then the order stays PENDING_NEW and its symbol places nothing new (the broker refuses).
If the exchange later shows it booked after all (the user data stream, reconciliation's
trades), it is adopted (``Ledger.adopt``).
"""

from __future__ import annotations

import logging
from decimal import Decimal

from multibot.market.orders import FINAL_STATUSES, OrderStatus, Side
from multibot.market.records import OrderView
from multibot.market.rules import fmt
from multibot.wire.protocol import OrderUpdate
from orchestrator.exchange.client import ExchangeError
from orchestrator.exchange.ledger import CLOCK_TOLERANCE_NS, Ledger

__all__ = ["NEVER_BOOKED", "may_trade", "settle_unknown"]

log = logging.getLogger(__name__)

NEVER_BOOKED = "never booked"  # how the reason of an order closed on this evidence begins
# a BUY booked and filled would have brought at least this share of its quantity (fees aside)
_BOUGHT_SHARE = Decimal("0.5")


def may_trade(order: OrderView) -> bool:
    """Whether trades the journal lacks may be ``order``'s: it is open, or it was closed as
    never booked (the engine may book it late). Any other closed order was confirmed final by
    the exchange with all its trades journaled, or never reached it: a trade under its client
    order id is another order's that reused the id (another home's on the same account:
    client order ids are unique only among open orders)."""
    return order.status not in FINAL_STATUSES or order.reason.startswith(NEVER_BOOKED)


async def settle_unknown(ledger: Ledger, order: OrderView) -> OrderUpdate | None:
    """Ask the exchange about ``order`` (PENDING_NEW); the update once its answer is
    definitive (found and journaled, or never booked on the evidence above), else None.
    The caller holds the symbol's lock."""
    update = await ledger.look_up(order)
    if update is None or update.order.status != OrderStatus.PENDING_NEW:
        return update  # could not ask, or found and journaled
    if ledger.recv_window_ends_in_s(order) > 0:
        return None  # the exchange may still book it
    try:
        return await _never_booked(ledger, order)
    except ExchangeError as exc:
        log.warning("%s: cannot settle %s yet: %s", order.symbol, order.client_order_id,
                    exc.message)
        return None


async def _never_booked(ledger: Ledger, order: OrderView) -> OrderUpdate | None:
    symbol, coid = order.symbol, order.client_order_id
    client, book = ledger.client, ledger.book
    sent_ms = (order.created_ns + client.server_offset_ms * 1_000_000
               - CLOCK_TOLERANCE_NS) // 1_000_000
    for report in reversed(await client.all_orders(symbol, max(sent_ms, 0))):
        if report.client_order_id == coid and ledger.is_ours(order, report):
            return await ledger.adopt(order, report, "allOrders")
    rules = book.rules.get(symbol)
    if rules is None:
        return None
    held = (await client.account()).holds(rules.base_asset)
    journaled = book.held(rules.base_asset)
    qty = Decimal(order.quantity)
    # a BUY's coins are not there; a SELL's are still there
    agrees = (held - journaled < qty * _BOUGHT_SHARE if order.side == Side.BUY
              else held >= journaled)
    if not agrees:
        log.warning("%s: %s is not in allOrders, but the account holds %s %s and the journal "
                    "%s: its outcome stays unknown", symbol, coid, fmt(held), rules.base_asset,
                    fmt(journaled))
        return None
    sent_s = (ledger.now_ns() - order.created_ns) / 1e9
    reason = (f"{NEVER_BOOKED}: {sent_s:.0f}s after it was sent (past its recvWindow) the "
              f"exchange does not know its client order id, allOrders since then does not "
              f"hold it, and the account's {fmt(held)} {rules.base_asset} agree with the "
              f"journal's {fmt(journaled)}")
    log.warning("%s: %s closed as %s", symbol, coid, reason)
    return ledger.finish(order, OrderStatus.EXPIRED, reason)
