"""Watching the exchange broker's resting orders: fills and final states that nobody asked
for (a LIMIT order filling, a cancel on the website) reach the worker through the broker's
``notify``; cancels that failed are tried again."""

from __future__ import annotations

import asyncio
import logging

from multibot.errors import ProtocolError
from multibot.market.orders import OrderStatus
from orchestrator.exchange.broker import ExchangeBroker

__all__ = ["watch"]

log = logging.getLogger(__name__)

_MAX_WAIT_S = 1.0  # a round is skipped rather than queued behind the rate limits


async def watch(broker: ExchangeBroker, period_s: float = 1.0) -> None:
    """Forever: retry failed cancels, then look up every open order, within a quarter of the
    weight limit. One order's failure never stops the watching of the others."""
    while True:
        orders = broker.book.resting()
        cost_per_s = broker.client.limiter.weight_budget_per_s()
        await asyncio.sleep(max(period_s, len(orders) * 4 / cost_per_s))
        for symbol, coid in list(broker.failed_cancels):
            await _watch_one(broker, symbol, coid, cancel=True)
        for order in orders:
            await _watch_one(broker, order.symbol, order.client_order_id, cancel=False)


async def _watch_one(broker: ExchangeBroker, symbol: str, coid: str, cancel: bool) -> None:
    book, ledger = broker.book, broker.ledger
    if ledger.lock(symbol).locked():
        return  # a request of that symbol is under way: it will tell
    try:
        if cancel:
            wanted = book.open_order(symbol, coid)
            if wanted is None:
                broker.failed_cancels.discard((symbol, coid))
            elif wanted.status != OrderStatus.PENDING_NEW:  # (else: looked up first, below)
                broker.notify(await broker.cancel(symbol, coid))
            return
        async with ledger.lock(symbol):
            current = book.open_order(symbol, coid)
            if current is None:
                return
            update = await ledger.look_up(current, _MAX_WAIT_S)
        if update is not None and (update.fills or update.order.status != current.status
                                   or update.order.executed_qty != current.executed_qty):
            broker.notify(update)
    except ProtocolError as exc:
        log.info("%s: watching %s: %s", symbol, coid, exc.reason)
    except Exception:  # e.g. the journal halted: log it, go on watching
        log.exception("%s: watching %s failed", symbol, coid)
