"""Start-up reconciliation of one symbol: the journal against the exchange, before it trades.

- every order the journal holds as open is looked up and journaled as the exchange has it
  (filled while we were away, cancelled on the website, never placed at all);
- open orders on the exchange that carry our client order id for this symbol but are missing
  from the journal are adopted; any other open order of the symbol is somebody else's, and the
  symbol does not trade while it is there (we could not tell our position from theirs);
- the account must hold at least what the journal says the bot holds of the base asset.
Anything that cannot be settled raises ``NotReconciled`` with the reason: fail closed, per
symbol; the other symbols are not affected.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from orchestrator.broker.paper import parse_seq
from orchestrator.broker.rules import fmt
from orchestrator.exchange.broker import CLOCK_TOLERANCE_NS, ExchangeBroker
from orchestrator.exchange.client import ExchangeError
from orchestrator.exchange.orders import adopted_order, describe, matches_intent, number

log = logging.getLogger(__name__)

_CREATED_KEY = "created_ns"
_RECENT_ORDERS = 50


class NotReconciled(Exception):
    """The symbol's journal and the exchange disagree in a way we must not trade through."""


def journal_created_ns(broker: ExchangeBroker) -> int:
    """When this home's journal first traded (orders older than that are not ours)."""
    saved = broker.journal.get_meta(_CREATED_KEY)
    if saved is None:
        saved = str(broker.now_ns())
        broker.journal.set_meta(_CREATED_KEY, saved)
    return int(saved)


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
        data = await broker.client.get_order(symbol, coid)
        if data is not None and not matches_intent(order, data, CLOCK_TOLERANCE_NS):
            data = None  # an older order that used the same client id
        if data is not None:
            update = await broker.apply(order, data)
            if update.order.status != order.status or update.fills:
                changes.append(f"{coid}: {order.status} -> {update.order.status} "
                               f"({len(update.fills)} new fills)")
        elif order.status == "PENDING_NEW":  # journaled, then the send failed or never happened
            broker.finish(order, "EXPIRED", "never reached the exchange (it has no such order)")
            changes.append(f"{coid}: never reached the exchange -> EXPIRED")
        else:
            problems.append(f"journaled open order {coid} is unknown to the exchange")
    since = journal_created_ns(broker)
    for data in await broker.client.open_orders(symbol):
        coid = str(data.get("clientOrderId", ""))
        if broker.journal.get_order(coid) is not None:
            continue
        if _ours(symbol, data, since):
            changes.append(await _adopt(broker, data))
        else:
            problems.append(
                f"open order {describe(data)} was not placed by this multibot home: cancel it "
                "(or trade this symbol from one place only), then `multibot up` it again")
    for data in await broker.client.all_orders(symbol, limit=_RECENT_ORDERS):
        coid = str(data.get("clientOrderId", ""))
        if broker.journal.get_order(coid) is None and _ours(symbol, data, since):
            changes.append(await _adopt(broker, data))
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


def _ours(symbol: str, data: dict[str, Any], since_ns: int) -> bool:
    """Our id for this symbol and placed since this journal exists (ids repeat across homes)."""
    created_ns = int(data.get("time") or data.get("transactTime") or 0) * 1_000_000
    return parse_seq(symbol, str(data.get("clientOrderId", ""))) > 0 and created_ns >= since_ns


async def _adopt(broker: ExchangeBroker, data: dict[str, Any]) -> str:
    view = adopted_order(data, broker.now_ns())
    broker.adopt(view)
    update = await broker.apply(view, data)
    return f"adopted {describe(data)}: {update.order.status}"


async def _account_holds(broker: ExchangeBroker, asset: str) -> Decimal:
    account = await broker.client.account()
    for balance in account.get("balances", []):
        if balance.get("asset") == asset:
            return Decimal(number(balance.get("free", "0"))) + Decimal(
                number(balance.get("locked", "0")))
    return Decimal(0)
