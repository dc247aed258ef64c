"""Watching the exchange broker's orders: fills and final states that nobody asked for (a
LIMIT order filling, a cancel on the website) reach the worker through the broker's
``notify``. Also: orders of unknown outcome are looked up with backoff until the exchange
answers definitively (orchestrator.exchange.unknown), unconfirmed cancels are tried again with
backoff, and every traded symbol is reconciled with the account periodically (a shortfall
halts that symbol: ``broker.halts``).

While the user data stream is healthy (orchestrator.exchange.userstream) it brings fills as
they happen, and polling slows down to save request weight; it is the fallback otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import time

from multibot.errors import ProtocolError
from multibot.market.orders import OrderStatus
from orchestrator.exchange.broker import ExchangeBroker
from orchestrator.exchange.cancels import BACKOFF_S
from orchestrator.exchange.client import ExchangeError
from orchestrator.exchange.reconcile import check
from orchestrator.exchange.unknown import settle_unknown

__all__ = ["watch"]

log = logging.getLogger(__name__)

_MAX_WAIT_S = 1.0  # a round is skipped rather than queued behind the rate limits
STREAM_SLOWDOWN = 10  # polling period multiplier while the user data stream is healthy
RECONCILE_EVERY_S = 60.0  # at least; longer when many symbols trade (see _reconcile_due)
_RECONCILE_SHARE = 0.5  # of the pollers' weight budget, at most, for periodic reconciliation


async def watch(broker: ExchangeBroker, period_s: float = 1.0,
                reconcile_every_s: float = RECONCILE_EVERY_S) -> None:
    """Forever: retry due cancels, settle orders of unknown outcome, look up every open order,
    within a quarter of the weight limit, and reconcile now and then. One order's failure
    never stops the watching of the others."""
    unknown = _Backoff()
    reconciled_at = time.monotonic()
    while True:
        orders = broker.book.resting()
        cost_per_s = broker.client.limiter.weight_budget_per_s()
        period = period_s * (STREAM_SLOWDOWN if broker.stream_healthy else 1)
        await asyncio.sleep(max(period, len(orders) * 4 / cost_per_s))
        for symbol, coid in broker.cancels.due():
            await _watch_one(broker, symbol, coid, cancel=True)
        for order in orders:
            if order.status != OrderStatus.PENDING_NEW:
                await _watch_one(broker, order.symbol, order.client_order_id, cancel=False)
            elif unknown.due(order.client_order_id):
                await _settle(broker, order.symbol, order.client_order_id, unknown)
        unknown.keep_only({o.client_order_id for o in orders})
        # a round reads the account (20), and each symbol's open orders (6) and trades (20)
        every = max(reconcile_every_s,
                    (20 + 26 * len(broker.traded)) / (cost_per_s * _RECONCILE_SHARE))
        if time.monotonic() - reconciled_at >= every:
            reconciled_at = time.monotonic()
            await reconcile_all(broker)


class _Backoff:
    """When each order of unknown outcome is looked up next."""

    def __init__(self) -> None:
        self._next: dict[str, tuple[int, float]] = {}  # coid -> (attempts, due, monotonic)

    def due(self, coid: str) -> bool:
        attempts, at = self._next.get(coid, (0, 0.0))
        if time.monotonic() < at:
            return False
        wait = BACKOFF_S[min(attempts, len(BACKOFF_S) - 1)]
        self._next[coid] = (attempts + 1, time.monotonic() + wait)
        return True

    def keep_only(self, coids: set[str]) -> None:
        for coid in set(self._next) - coids:
            del self._next[coid]


async def _settle(broker: ExchangeBroker, symbol: str, coid: str, backoff: _Backoff) -> None:
    ledger = broker.ledger
    if ledger.lock(symbol).locked():
        return  # a request of that symbol is under way: it will tell
    try:
        async with ledger.lock(symbol):
            current = broker.book.open_order(symbol, coid)
            if current is None or current.status != OrderStatus.PENDING_NEW:
                return
            update = await settle_unknown(ledger, current)
        if update is not None and update.order.status != OrderStatus.PENDING_NEW:
            broker.notify(update)
    except Exception:  # e.g. the journal halted: log it, go on watching
        log.exception("%s: settling %s failed", symbol, coid)


async def _watch_one(broker: ExchangeBroker, symbol: str, coid: str, cancel: bool) -> None:
    book, ledger = broker.book, broker.ledger
    if ledger.lock(symbol).locked():
        return  # a request of that symbol is under way: it will tell
    try:
        if cancel:
            wanted = book.open_order(symbol, coid)
            if wanted is None:
                broker.cancel_settled(symbol, coid)
            elif wanted.status != OrderStatus.PENDING_NEW:  # (else: settled first, above)
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


async def reconcile_all(broker: ExchangeBroker) -> None:
    """Reconcile every traded symbol with the account (one account read for all): adopt the
    trades of ours the journal lacks, halt a symbol whose holding the account falls short
    of, lift the halt once it agrees again."""
    if not broker.traded:
        return
    try:
        account = await broker.client.account()
    except ExchangeError as exc:
        log.warning("periodic reconciliation: cannot read the account: %s", exc.message)
        return
    for symbol in sorted(broker.traded):
        try:
            updates, problem = await check(broker.ledger, symbol, account)
        except ExchangeError as exc:
            log.warning("%s: periodic reconciliation: %s", symbol, exc.message)
            continue
        except Exception:
            log.exception("%s: periodic reconciliation failed", symbol)
            continue
        for update in updates:
            broker.notify(update)
        if not problem:
            broker.suspect.discard(symbol)
            if broker.halts.pop(symbol, None) is not None:
                log.warning("%s: reconciled again: trading resumes", symbol)
        elif symbol not in broker.suspect:
            broker.suspect.add(symbol)  # a fill between the two reads: look again next round
        else:
            halt = f"not reconciled with the exchange: {problem}"
            if broker.halts.get(symbol) != halt:
                log.error("%s: %s; no new orders", symbol, halt)
            broker.halts[symbol] = halt
