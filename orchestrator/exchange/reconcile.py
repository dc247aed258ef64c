"""Start-up reconciliation of one symbol: the journal against the exchange, before it trades.

- every order the journal holds as open is looked up and journaled as the exchange has it
  (filled while we were away, cancelled on the website, never placed at all);
- every open order of the symbol on the exchange must be one of those: orders are journaled
  before they are sent, so any other open order (placed by hand, by another program, or by
  another multibot home on the same account: client order ids repeat across homes) is not
  this home's, and the symbol does not trade while it is there;
- the account must hold at least what the journal says the bot holds of the base asset.
Anything that cannot be settled raises ``NotReconciled`` with the reason: fail closed, per
symbol; the other symbols are not affected.
"""

from __future__ import annotations

import logging

from multibot.market.orders import OrderStatus
from multibot.market.rules import fmt
from orchestrator.broker.base import NotReconciled
from orchestrator.exchange.client import ExchangeError
from orchestrator.exchange.ledger import Ledger
from orchestrator.exchange.orders import describe

log = logging.getLogger(__name__)


async def reconcile(ledger: Ledger, symbol: str) -> list[str]:
    """Settle ``symbol``; returns what was changed (for the log), raises NotReconciled."""
    try:
        async with ledger.lock(symbol):
            return await _reconcile(ledger, symbol)
    except ExchangeError as exc:
        raise NotReconciled(f"could not ask the exchange: {exc.message}") from None


async def _reconcile(ledger: Ledger, symbol: str) -> list[str]:
    book = ledger.book
    changes: list[str] = []
    problems: list[str] = []
    for order in book.open_orders(symbol):
        coid = order.client_order_id
        report = await ledger.exchange_copy(order)
        if report is not None:
            update = await ledger.apply(order, report)
            if update.order.status != order.status or update.fills:
                changes.append(f"{coid}: {order.status} -> {update.order.status} "
                               f"({len(update.fills)} new fills)")
        elif order.status != OrderStatus.PENDING_NEW:
            problems.append(f"journaled open order {coid} is unknown to the exchange")
        elif ledger.settled(order):  # journaled, then the send failed or never happened
            ledger.expire_unsent(order)
            changes.append(f"{coid}: never reached the exchange -> EXPIRED")
        else:
            sent = (ledger.now_ns() - order.created_ns) / 1e9
            problems.append(f"order {coid} was sent {sent:.0f}s ago and its outcome is not "
                            f"final yet: try again in {ledger.settles_in_s(order):.0f}s")
    mine = {o.client_order_id for o in book.open_orders(symbol)}
    for report in await ledger.client.open_orders(symbol):
        if report.client_order_id not in mine:
            problems.append(
                f"open order {describe(report)} was not placed by this multibot home: cancel it "
                "(or trade this symbol from one place only), then `multibot up` it again")
    rules = book.rules[symbol]
    held = (await ledger.client.account()).holds(rules.base_asset)
    journaled = book.held(rules.base_asset)
    if held < journaled:
        problems.append(f"the journal says this bot holds {fmt(journaled)} {rules.base_asset} "
                        f"but the account has only {fmt(held)}")
    if problems:
        raise NotReconciled("; ".join(problems))
    for change in changes:
        log.info("%s: reconciled: %s", symbol, change)
    return changes
