"""The fleet's events: published on the events socket and journaled for the record."""

from __future__ import annotations

import contextlib
import logging
import time

import zmq
import zmq.asyncio

from multibot.market.orders import OrderStatus
from multibot.wire.protocol import Event, EventKind, OrderUpdate, encode
from orchestrator.broker.journal import Journal, JournalError
from orchestrator.supervisor import State, WorkerHandle

log = logging.getLogger(__name__)

_ENDED_UNFILLED = (OrderStatus.REJECTED, OrderStatus.CANCELED, OrderStatus.EXPIRED)


class FleetEvents:
    def __init__(self, sock: zmq.asyncio.Socket, journal: Journal) -> None:
        self._sock = sock
        self._journal = journal

    def publish(self, kind: EventKind, symbol: str, detail: str) -> None:
        """For subscribers only (e.g. when the journal is what failed)."""
        with contextlib.suppress(zmq.ZMQError):
            self._sock.send_multipart(
                [kind.encode(), encode(Event(kind=kind, symbol=symbol, detail=detail))],
                flags=zmq.NOBLOCK,
            )

    def record(self, kind: EventKind, symbol: str, detail: str) -> None:
        """Published for subscribers and journaled for the record."""
        self.publish(kind, symbol, detail)
        with contextlib.suppress(JournalError):
            self._journal.add_event(kind, symbol, detail)

    def replay_ended(self, last_bar_ms: int | None) -> None:
        """The replay feed has no more bars: logged, published and journaled once."""
        when = "-" if last_bar_ms is None else time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(last_bar_ms / 1000))
        detail = (f"replay data ended at {when}: no more bars; the fleet keeps its positions "
                  "and open orders until `multibot down`")
        log.info("%s", detail)
        self.record(EventKind.FLEET, "", detail)

    def worker_state(self, handle: WorkerHandle) -> None:
        detail = handle.state.value
        if handle.state in (State.BACKOFF, State.FAILED) and handle.last_error:
            detail += f": {handle.last_error}"
        self.record(EventKind.STATE, handle.symbol, detail)

    def order_update(self, update: OrderUpdate) -> None:
        order = update.order
        for fill in update.fills:
            self.record(EventKind.FILL, order.symbol, f"{fill.side} {fill.qty} @ {fill.price} "
                        f"fee {fill.fee} {fill.fee_asset} ({order.client_order_id})")
        if order.status in _ENDED_UNFILLED:
            self.record(EventKind.ORDER, order.symbol,
                        f"{order.client_order_id} {order.status} {order.reason}".strip())


class JournalHealth:
    """Trading halts while the journal cannot be written: no order or fill may happen that
    could not be journaled. A successful write lifts the halt."""

    def __init__(self, events: FleetEvents) -> None:
        self._events = events
        self.error = ""  # non-empty while the journal cannot be written

    def guard(self) -> None:
        """Fail fast while halted instead of waiting on a broken journal for every request."""
        if self.error:
            raise JournalError(self.error)

    def failed(self, exc: JournalError) -> None:
        if not self.error:
            log.error("journal unavailable, trading halted: %s", exc)
            self._events.publish(EventKind.FLEET, "",
                                 f"trading halted, journal unavailable: {exc}")
        self.error = str(exc) or type(exc).__name__

    def written(self) -> None:
        if self.error:
            log.warning("journal writable again: trading resumes")
            self.error = ""
            self._events.record(EventKind.FLEET, "", "journal writable again: trading resumes")
