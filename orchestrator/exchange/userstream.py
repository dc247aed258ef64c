"""Fills as they happen: Binance's user data stream over the WebSocket API
(``userDataStream.subscribe.signature``; the listenKey endpoints are retired), through
python-binance's user socket.

Each ``executionReport`` of one of our journaled orders goes through the ledger like a
polled report: trades are journaled by their exchange trade id, so a trade seen on the stream
and by polling (or twice on the stream) is journaled once. Events of one symbol are handled
in order, under the symbol's lock, each symbol on its own (a slow order of one symbol does
not hold up another's fills). A stale event (less executed than journaled, a NEW after the
fill) changes nothing; an order the journal had closed (as never booked) that trades is
adopted. Orders that are not ours are ignored: the user's own, and another home's that
reuses the id of one of ours the exchange had confirmed final (``unknown.may_trade``).

The subscription is renewed with backoff whenever it ends (a dropped connection, the 24 h
limit, a server shutdown); while it is down ``broker.stream_healthy`` is False and the
watcher polls at full speed, so a stream that cannot be kept never stops trading. Events
missed while it was down are found by polling.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

from orchestrator.exchange.broker import ExchangeBroker
from orchestrator.exchange.reports import execution_report
from orchestrator.exchange.unknown import NEVER_BOOKED, may_trade

__all__ = ["follow_user_stream"]

log = logging.getLogger(__name__)

RESUBSCRIBE_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)  # waits before each new subscription
_ENDED = {"error", "serverShutdown", "eventStreamTerminated"}  # the subscription is over


class StreamEnded(Exception):
    """The subscription delivers no more events."""


async def follow_user_stream(broker: ExchangeBroker,
                             resubscribe_s: tuple[float, ...] = RESUBSCRIBE_S) -> None:
    """Forever: subscribe, hand each event to its symbol's queue; subscribe again with
    backoff when the stream ends or cannot be had."""
    router = _Router(broker)
    failures = 0
    try:
        while True:
            try:
                async with broker.client.user_socket() as socket:
                    broker.stream_healthy = True
                    broker.client.user_stream = "subscribed"
                    broker.stream_subscriptions += 1
                    failures = 0
                    log.info("user data stream subscribed: fills arrive as they happen")
                    while True:
                        router.route(await socket.recv())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: polling covers, we subscribe again
                why = broker.client.redact(_describe(exc))[:200]
                broker.stream_healthy = False
                broker.client.user_stream = f"down, polling covers: {why}"
                wait = resubscribe_s[min(failures, len(resubscribe_s) - 1)]
                failures += 1
                log.warning("user data stream: %s; polling covers, subscribing again in "
                            "%gs", why, wait)
                await asyncio.sleep(wait)
    finally:
        broker.stream_healthy = False
        broker.client.user_stream = ""
        router.close()


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _Router:
    """One queue and one task per symbol: a symbol's events in order, symbols apart."""

    def __init__(self, broker: ExchangeBroker) -> None:
        self._broker = broker
        self._queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def route(self, event: Any) -> None:
        if not isinstance(event, dict):
            return
        kind = event.get("e")
        if not isinstance(kind, str):
            return  # not an event we know (an unhashable kind would end the subscription)
        if kind in _ENDED:
            raise StreamEnded(str(event.get("m") or event.get("type") or kind))
        if kind != "executionReport":
            return  # balances: reconciliation reads the account itself
        symbol = str(event.get("s", ""))
        queue = self._queues.get(symbol)
        if queue is None:
            queue = self._queues[symbol] = asyncio.Queue()
            self._tasks.append(asyncio.get_running_loop().create_task(
                self._drain(symbol, queue)))
        queue.put_nowait(event)

    async def _drain(self, symbol: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            event = await queue.get()
            try:
                await on_execution(self._broker, event)
            except Exception:  # one bad event must not stop a symbol's stream
                log.exception("%s: user data stream event %s could not be handled", symbol,
                              event.get("c"))

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()


async def on_execution(broker: ExchangeBroker, event: dict[str, Any]) -> None:
    """Journal one executionReport of one of our orders and tell its worker."""
    try:
        report = execution_report(event)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("user data stream: an executionReport we cannot read (%s): ignored; "
                    "polling finds what it said", exc)
        return
    ledger = broker.ledger
    async with ledger.lock(report.symbol):
        order = broker.journal.get_order(report.client_order_id)
        if order is None or order.symbol != report.symbol or not ledger.is_ours(order, report):
            log.debug("%s: %s is not this bot's order", report.symbol, report.client_order_id)
            return
        if report.executed_qty is not None and (
                Decimal(report.executed_qty) < Decimal(order.executed_qty)):
            return  # older than what is journaled
        if order.reason.startswith(NEVER_BOOKED):  # any event proves it booked
            update = await ledger.adopt(order, report, "the user data stream")
        elif may_trade(order):
            update = await ledger.apply(order, report)
        else:
            # confirmed final with all its trades: a stale event, or another order that
            # reuses the id (another home's) whose trades are not ours
            return
    if update.fills or update.order.status != order.status:
        broker.notify(update)
