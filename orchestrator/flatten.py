"""`kill --flatten` and `down --flatten` for a symbol its worker did not flatten: one that had
no worker to ask (it gave up, FAILED, or was waiting to restart), or whose worker ran out of
time. Once the symbol is stopped and its open orders cancelled, the orchestrator sells what the
journal says it holds, as a MARKET exit retry (a commanded exit, not a decision on a bar).
"""

from __future__ import annotations

import logging
from decimal import Decimal

from multibot.errors import MultibotError
from multibot.market.orders import OrderStatus, OrderType, Side
from multibot.market.rules import fmt, round_step_down
from multibot.wire.protocol import PlaceOrder, ProtocolError, client_order_id
from orchestrator.ports import Trading

log = logging.getLogger(__name__)


async def sell_leftover(trading: Trading, symbol: str) -> str:
    """SELL the stopped ``symbol``'s position if the exchange would take it. Returns why it
    is not flat ("" if it is, or holds dust); logged, never raised (one symbol's trouble must
    not stop the others' flatten)."""
    broker, rules = trading.broker, trading.rules.get(symbol)
    if rules is None:
        return ""
    try:
        await broker.cancel_all(symbol)  # nothing may lock what is to be sold
        if broker.open_orders(symbol):
            return _not_flat(symbol, "an order is still open")
        step = Decimal(rules.step_size)
        qty = round_step_down(Decimal(broker.position(symbol).qty), step)
        price = broker.last_price(symbol)
        if qty < max(Decimal(rules.min_qty), step):
            return ""  # flat, or dust the exchange would not take
        if price is None:
            return _not_flat(symbol, "no price to sell at")
        if qty * price < Decimal(rules.min_notional):
            return ""  # dust by its value
        order = PlaceOrder(client_order_id=client_order_id(symbol, broker.next_seq(symbol)),
                           side=Side.SELL, type=OrderType.MARKET, quantity=fmt(qty),
                           exit_retry=True)
        update = await broker.place(symbol, order)
    except (ProtocolError, MultibotError) as exc:
        return _not_flat(symbol, str(exc))
    log.info("%s: flattened without its worker: SELL %s %s %s", symbol, fmt(qty),
             update.order.status, update.order.reason)
    if update.order.status != OrderStatus.FILLED:
        return _not_flat(symbol, f"the SELL ended {update.order.status}: {update.order.reason}")
    return ""


def _not_flat(symbol: str, why: str) -> str:
    log.error("%s: not flattened: %s", symbol, why)
    return f"not flattened: {why}"
