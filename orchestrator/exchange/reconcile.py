"""Reconciliation of one symbol, the journal against the exchange, in both directions: at
start-up (before it trades; ``reconcile``) and periodically while it trades (``check``).

- every order the journal holds as open is looked up and journaled as the exchange has it
  (filled while we were away, cancelled on the website); one whose outcome is unknown is
  settled on evidence only (orchestrator.exchange.unknown), else the symbol does not start;
- every open order of the symbol on the exchange must be one of those (or one of ours closed
  as never booked, which is adopted): orders are journaled before they are sent, so any
  other open order (placed by hand, by another program, or by another multibot home on the
  same account: client order ids repeat across homes) is not this home's, and the symbol
  does not start while it is there;
- the symbol's trades since the last one journaled (myTrades, paged with fromId) are matched
  to their orders: a trade of one of our journaled orders that the journal lacks (an order
  booked late, after it was closed as never booked, say) is adopted, the order's state
  corrected and the position updated; trades of orders that are not ours are the user's own
  (logged, never adopted), as are those under the id of one of ours the exchange had already
  confirmed final (another home's order reusing the id: ``unknown.may_trade``);
- orders closed as never booked in the last day are asked for again by client order id: a
  late booking's trades may lie before the newest journaled trade, where the scan starts;
- the account must hold at least what the journal says the bot holds of the base asset (a
  shortfall fails closed); more is logged (the user's own coins, or something to look at).
Anything that cannot be settled raises ``NotReconciled`` with the reason (``check`` returns
it): fail closed, per symbol; the other symbols are not affected.
"""

from __future__ import annotations

import logging

from multibot.market.orders import OPEN_STATUSES, OrderStatus
from multibot.market.rules import fmt
from multibot.wire.protocol import OrderUpdate
from orchestrator.broker.base import NotReconciled
from orchestrator.exchange.client import ExchangeError
from orchestrator.exchange.ledger import Ledger
from orchestrator.exchange.orders import describe
from orchestrator.exchange.reports import AccountReport, FillReport, OrderStatusReport
from orchestrator.exchange.unknown import NEVER_BOOKED, may_trade, settle_unknown

__all__ = ["check", "reconcile"]

log = logging.getLogger(__name__)

# how long an order closed as never booked is still asked for by its client order id
LATE_BOOKING_HORIZON_NS = 24 * 3600 * 10**9


async def reconcile(ledger: Ledger, symbol: str) -> list[str]:
    """Settle ``symbol`` before it trades; returns what was changed (for the log), raises
    NotReconciled."""
    try:
        async with ledger.lock(symbol):
            return await _reconcile(ledger, symbol)
    except ExchangeError as exc:
        raise NotReconciled(f"could not ask the exchange: {exc.message}") from None


async def check(ledger: Ledger, symbol: str,
                account: AccountReport) -> tuple[list[OrderUpdate], str]:
    """While ``symbol`` trades: adopt the trades of ours the journal lacks (their updates, for
    the worker) and compare ``account`` with the journal; the problem that must stop the
    symbol's trading, or "". Raises ExchangeError when the exchange cannot be asked."""
    async with ledger.lock(symbol):
        updates, _ = await _open_elsewhere(ledger, symbol)
        updates += await _booked_after_all(ledger, symbol)
        updates += await _adopt_trades(ledger, symbol)
        return updates, _shortfall(ledger, symbol, account)


async def _reconcile(ledger: Ledger, symbol: str) -> list[str]:
    book = ledger.book
    changes: list[str] = []
    problems: list[str] = []
    for order in book.open_orders(symbol):
        coid = order.client_order_id
        if order.status == OrderStatus.PENDING_NEW:
            update = await settle_unknown(ledger, order)
            if update is None or update.order.status == OrderStatus.PENDING_NEW:
                wait = max(ledger.recv_window_ends_in_s(order), 1.0)
                problems.append(f"order {coid} ({order.side} {order.quantity}): its outcome "
                                f"is not known yet (the exchange has not confirmed or ruled "
                                f"it out): try again in {wait:.0f}s or more")
            else:
                changes.append(f"{coid}: {order.status} -> {update.order.status} "
                               f"({update.order.reason or len(update.fills)})")
            continue
        report = await ledger.exchange_copy(order)
        if report is None:
            problems.append(f"journaled open order {coid} is unknown to the exchange")
            continue
        update = await ledger.apply(order, report)
        if update.order.status != order.status or update.fills:
            changes.append(f"{coid}: {order.status} -> {update.order.status} "
                           f"({len(update.fills)} new fills)")
    adopted, foreign = await _open_elsewhere(ledger, symbol)
    for update in adopted:
        changes.append(f"{update.order.client_order_id}: adopted, {update.order.status}")
    for report in foreign:
        problems.append(
            f"open order {describe(report)} was not placed by this multibot home: cancel it "
            "(or trade this symbol from one place only), then `multibot up` it again")
    for update in await _booked_after_all(ledger, symbol):
        changes.append(f"{update.order.client_order_id}: adopted, {update.order.status}")
    for update in await _adopt_trades(ledger, symbol):
        changes.append(f"{update.order.client_order_id}: {update.order.status} "
                       f"({len(update.fills)} trades adopted)")
    shortfall = _shortfall(ledger, symbol, await ledger.client.account())
    if shortfall:
        problems.append(shortfall)
    if problems:
        raise NotReconciled("; ".join(problems))
    for change in changes:
        log.info("%s: reconciled: %s", symbol, change)
    return changes


def _shortfall(ledger: Ledger, symbol: str, account: AccountReport) -> str:
    rules = ledger.book.rules[symbol]
    held = account.holds(rules.base_asset)
    journaled = ledger.book.held(rules.base_asset)
    if held < journaled:
        return (f"the journal says this bot holds {fmt(journaled)} {rules.base_asset} but "
                f"the account has only {fmt(held)}")
    if held > journaled:
        log.debug("%s: the account holds %s %s, the journal %s (the rest is not this bot's)",
                  symbol, fmt(held), rules.base_asset, fmt(journaled))
    return ""


async def _open_elsewhere(ledger: Ledger, symbol: str
                          ) -> tuple[list[OrderUpdate], list[OrderStatusReport]]:
    """The symbol's open orders on the exchange that the journal does not hold as open:
    ours closed as never booked and booked after all are adopted (their updates); the
    others are not this home's (returned)."""
    mine = {o.client_order_id for o in ledger.book.open_orders(symbol)}
    adopted: list[OrderUpdate] = []
    foreign: list[OrderStatusReport] = []
    for report in await ledger.client.open_orders(symbol):
        if report.client_order_id in mine:
            continue
        order = ledger.journal.get_order(report.client_order_id)
        if (order is not None and order.symbol == symbol
                and order.reason.startswith(NEVER_BOOKED) and ledger.is_ours(order, report)):
            adopted.append(await ledger.adopt(order, report, "openOrders"))
        else:
            foreign.append(report)
    return adopted, foreign


async def _booked_after_all(ledger: Ledger, symbol: str) -> list[OrderUpdate]:
    """The symbol's orders closed as never booked within the horizon, asked for again by
    client order id: one the engine booked after all is adopted. The trade scan below starts
    after the newest journaled trade, so it misses a late booking's trades once a later order
    of ours has traded."""
    since = ledger.now_ns() - LATE_BOOKING_HORIZON_NS
    updates = []
    for order in ledger.journal.orders(symbol):
        if order.reason.startswith(NEVER_BOOKED) and order.created_ns >= since:
            report = await ledger.exchange_copy(order)
            if report is not None:
                updates.append(await ledger.adopt(
                    order, report, "reconciliation (a look-up by client order id)"))
    return updates


async def _adopt_trades(ledger: Ledger, symbol: str) -> list[OrderUpdate]:
    """Journal the symbol's trades since the last journaled one that belong to our orders."""
    journal, client = ledger.journal, ledger.client
    known = {f.exchange_trade_id for f in journal.fills(symbol)
             if f.exchange_trade_id is not None}
    if not known and not journal.orders(symbol):
        return []  # nothing of this symbol was ever sent: no trade can be ours
    start = max(max(known, default=-1), ledger.trade_cursor.get(symbol, -1)) + 1
    trades = await client.my_trades(symbol, from_id=start)
    by_order: dict[int, list[FillReport]] = {}
    for trade in trades:
        if trade.trade_id not in known and trade.order_id is not None:
            by_order.setdefault(trade.order_id, []).append(trade)
    updates = []
    for order_id, fills in by_order.items():
        update = await _adopt_order(ledger, symbol, order_id, fills)
        if update is not None:
            updates.append(update)
    if trades:  # every one looked at: the next round starts after them
        ledger.trade_cursor[symbol] = trades[-1].trade_id
    return updates


async def _adopt_order(ledger: Ledger, symbol: str, order_id: int,
                       trades: list[FillReport]) -> OrderUpdate | None:
    report = await ledger.client.get_order(symbol, order_id=order_id)
    ids = ", ".join(str(t.trade_id) for t in trades)
    order = ledger.journal.get_order(report.client_order_id) if report is not None else None
    if (report is None or order is None or order.symbol != symbol or not may_trade(order)
            or not ledger.is_ours(order, report)):
        name = describe(report) if report is not None else f"orderId {order_id}"
        log.info("%s: trades %s of order %s are not this bot's (the user's own): not adopted",
                 symbol, ids, name)
        return None
    if order.status in OPEN_STATUSES:
        return await ledger.apply(order, report)  # open: the journal was about to hear
    return await ledger.adopt(order, report, f"reconciliation (myTrades {ids})")
