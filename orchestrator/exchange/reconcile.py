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
from decimal import Decimal

from multibot.market.rules import fmt
from orchestrator.broker.base import NotReconciled
from orchestrator.exchange.broker import ExchangeBroker
from orchestrator.exchange.client import ExchangeError
from orchestrator.exchange.orders import describe, number

log = logging.getLogger(__name__)


async def reconcile(broker: ExchangeBroker, symbol: str) -> list[str]:
    """Settle ``symbol``; returns what was changed (for the log), raises NotReconciled."""
    try:
        async with broker.lock(symbol):
            return await _reconcile(broker, symbol)
    except ExchangeError as exc:
        raise NotReconciled(f"could not ask the exchange: {exc.message}") from None


async def _reconcile(broker: ExchangeBroker, symbol: str) -> list[str]:
    changes: list[str] = []
    problems: list[str] = []
    for order in broker.open_orders(symbol):
        coid = order.client_order_id
        data = await broker.exchange_copy(order)
        if data is not None:
            update = await broker.apply(order, data)
            if update.order.status != order.status or update.fills:
                changes.append(f"{coid}: {order.status} -> {update.order.status} "
                               f"({len(update.fills)} new fills)")
        elif order.status != "PENDING_NEW":
            problems.append(f"journaled open order {coid} is unknown to the exchange")
        elif broker.settled(order):  # journaled, then the send failed or never happened
            broker.expire_unsent(order)
            changes.append(f"{coid}: never reached the exchange -> EXPIRED")
        else:
            sent = (broker.now_ns() - order.created_ns) / 1e9
            problems.append(f"order {coid} was sent {sent:.0f}s ago and its outcome is not "
                            f"final yet: try again in {broker.settles_in_s(order):.0f}s")
    mine = {o.client_order_id for o in broker.open_orders(symbol)}
    for data in await broker.client.open_orders(symbol):
        if str(data.get("clientOrderId", "")) not in mine:
            problems.append(
                f"open order {describe(data)} was not placed by this multibot home: cancel it "
                "(or trade this symbol from one place only), then `multibot up` it again")
    rules = broker.rules[symbol]
    held = await _account_holds(broker, rules.base_asset)
    journaled = broker.held(rules.base_asset)
    if held < journaled:
        problems.append(f"the journal says this bot holds {fmt(journaled)} {rules.base_asset} "
                        f"but the account has only {fmt(held)}")
    if problems:
        raise NotReconciled("; ".join(problems))
    for change in changes:
        log.info("%s: reconciled: %s", symbol, change)
    return changes


async def _account_holds(broker: ExchangeBroker, asset: str) -> Decimal:
    account = await broker.client.account()
    for balance in account.get("balances", []):
        if balance.get("asset") == asset:
            return Decimal(number(balance.get("free", "0"))) + Decimal(
                number(balance.get("locked", "0")))
    return Decimal(0)
