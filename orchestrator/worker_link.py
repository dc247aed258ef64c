"""The broker socket: what workers ask of the orchestrator (register, heartbeats, orders).

Paper orders are answered at once. Orders that go to an exchange are answered when it has
answered, by a task of their own, so one slow exchange call never delays another symbol's
heartbeats or orders.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import zmq
import zmq.asyncio

from multibot.wire.protocol import (
    CancelOrder,
    Error,
    ErrorCode,
    Goodbye,
    Message,
    OrderUpdate,
    PlaceOrder,
    ProtocolError,
    Register,
    Welcome,
    WorkerHeartbeat,
    decode,
    encode,
    error_reply,
)
from orchestrator.broker.base import at_once
from orchestrator.broker.journal import JournalError
from orchestrator.broker.order_ids import MAX_SEQ, parse_seq
from orchestrator.events import JournalHealth
from orchestrator.ports import Spawn, Trading
from orchestrator.supervisor import Supervisor, WorkerHandle

_DRAIN_BATCH = 256
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerLinkPorts:
    """What the worker link may use of the fleet, and nothing else."""

    supervisor: Supervisor
    trading: Trading
    journal: JournalHealth
    order_event: Callable[[OrderUpdate], None]  # an order changed: events and journal
    spawn: Spawn


class WorkerLink:
    def __init__(self, ports: WorkerLinkPorts) -> None:
        self._ports = ports

    async def serve(self, sock: zmq.asyncio.Socket) -> None:
        # After each awaited message, take what else has arrived without an asyncio future
        # per message: 200 workers' heartbeats are 200 messages a second.
        plain: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)
        while True:
            self._handle(sock, await sock.recv_multipart())
            for _ in range(_DRAIN_BATCH):
                try:
                    frames = plain.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._handle(sock, frames)

    def _handle(self, sock: zmq.asyncio.Socket, frames: list[bytes]) -> None:
        identity = frames[0]  # the connection's routing id, assigned by ZeroMQ
        msg_id = ""  # an error reply carries the request's id too: it says what it refused
        try:
            if len(frames) != 2:
                raise ProtocolError(ErrorCode.MALFORMED, "expected exactly one frame")
            envelope, message = decode(frames[1])
            msg_id = envelope.id
            reply = self._serve(identity, message)
        except ProtocolError as exc:
            reply = error_reply(exc)
        except JournalError as exc:  # trading halts; the worker resends the same id later
            reply = self._halted(exc)
        except Exception as exc:  # one message must never stop the loop that serves them all
            log.exception("worker message could not be handled")
            reply = Error(code=ErrorCode.INTERNAL, reason=f"{type(exc).__name__}: {exc}")
        if inspect.isawaitable(reply):  # the exchange answers later: others go on meanwhile
            self._ports.spawn(self._reply_later(sock, identity, msg_id, reply))
        elif reply is not None:
            _send(sock, identity, reply, msg_id)

    def _halted(self, exc: JournalError) -> Error:
        self._ports.journal.failed(exc)
        return Error(code=ErrorCode.JOURNAL_UNAVAILABLE,
                     reason=f"trading halted, journal unavailable: {exc}")

    async def _reply_later(self, sock: zmq.asyncio.Socket, identity: bytes, msg_id: str,
                           pending: Awaitable[OrderUpdate]) -> None:
        reply: Message
        try:
            update = await pending
            self._ports.order_event(update)
            reply = update
        except ProtocolError as exc:
            reply = error_reply(exc)
        except JournalError as exc:
            reply = self._halted(exc)
        except Exception as exc:  # a bad request must never go unanswered or stop anything
            log.exception("worker request failed")
            reply = Error(code=ErrorCode.INTERNAL, reason=f"{type(exc).__name__}: {exc}")
        _send(sock, identity, reply, msg_id)
        if isinstance(reply, OrderUpdate):
            # The worker that asked may have died meanwhile (the exchange can take seconds):
            # its successor, which got the order as still open, must learn what became of it.
            current = self._ports.supervisor.routes.route_of(reply.order.symbol)
            if current is not None and current != identity:
                _send(sock, current, reply, "")

    def _serve(self, route: bytes, message: Message) -> Message | Awaitable[OrderUpdate] | None:
        supervisor = self._ports.supervisor
        if isinstance(message, Register):
            return self._welcome(self._register(route, message))
        # A symbol's messages count only from the connection its current worker registered on
        symbol = supervisor.symbol_of(route)
        if symbol is None or not supervisor.is_live(symbol):
            raise ProtocolError(ErrorCode.NOT_ALLOWED,
                                "not a registered worker: register with your token first")
        if isinstance(message, Goodbye):
            supervisor.goodbye(symbol, message.reason)
            return None
        if isinstance(message, WorkerHeartbeat):
            supervisor.heartbeat(symbol, message)
            if not self._ports.journal.error:  # else counted once the journal writes again
                self._ports.trading.broker.decisions.reported(
                    symbol, supervisor.handles[symbol].pid, message.duplicate_bars)
            return None
        if not isinstance(message, PlaceOrder | CancelOrder):
            raise ProtocolError(ErrorCode.NOT_ALLOWED,
                                f"{message.TYPE!r} is not a worker request")
        self._ports.journal.guard()
        if isinstance(message, PlaceOrder):
            _check_seq(symbol, message)
            self._check_bar_time(symbol, message)
        broker = self._ports.trading.broker
        call = (broker.place(symbol, message) if isinstance(message, PlaceOrder)
                else broker.cancel(symbol, message.client_order_id))
        if broker.on_exchange:
            return call  # the exchange answers later: other requests go on meanwhile
        update = at_once(call)
        self._ports.order_event(update)
        return update

    def _check_bar_time(self, symbol: str, order: PlaceOrder) -> None:
        """A decision is made on a bar the feed has produced: a ``bar_time`` beyond the newest
        (the feed's cursor, or the symbol's newest history bar) is refused before anything is
        journaled. Journaled, it would make every later decision of the symbol stale, for
        ever; too big for the journal, its failed write would halt every symbol's trading."""
        if order.bar_time is None:
            return
        feed = self._ports.trading.feed
        newest = feed.cursor
        if newest is None or order.bar_time > newest:  # a warm-up bar may be newer
            with contextlib.suppress(KeyError):  # a symbol the feed no longer serves
                for bar in feed.history(symbol, 1):
                    newest = bar.open_time if newest is None else max(newest, bar.open_time)
        if newest is None or order.bar_time > newest:
            raise ProtocolError(
                ErrorCode.BAD_BODY, f"order {order.client_order_id}: bar_time "
                f"{order.bar_time} is not a bar the feed has produced (newest: {newest})")

    def _register(self, route: bytes, message: Register) -> WorkerHandle:
        try:
            return self._ports.supervisor.registered(message.symbol, message.pid,
                                                     message.token, route)
        except ProtocolError as exc:  # the reason names the symbol, never the token
            log.warning("refused a worker registration (pid %d): %.200s", message.pid,
                        exc.reason)
            raise

    def _welcome(self, handle: WorkerHandle) -> Welcome:
        trading, symbol = self._ports.trading, handle.symbol
        return Welcome(
            config=handle.config,
            rules=trading.rules[symbol],
            position=trading.broker.position(symbol),
            open_orders=trading.broker.open_orders(symbol),
            next_seq=trading.broker.next_seq(symbol),
            history=trading.feed.history(symbol, handle.warmup + 1),
            last_decision_bar=trading.broker.decisions.last(symbol),
        )


def _check_seq(symbol: str, order: PlaceOrder) -> None:
    """A client order id's sequence number is far below what ids can number: journaled, one
    near the limit would make the symbol's next ids unnumbered (seq 0), and a restarted worker
    would reuse them (its new orders answered from the journal, never placed)."""
    if parse_seq(symbol, order.client_order_id) > MAX_SEQ:
        raise ProtocolError(ErrorCode.BAD_BODY, f"order {order.client_order_id}: sequence "
                            f"number beyond {MAX_SEQ}")


def _send(sock: zmq.asyncio.Socket, identity: bytes, reply: Message, msg_id: str) -> None:
    try:
        data = encode(reply, msg_id)
    except ProtocolError as exc:  # a reply the wire cannot carry: say so instead
        log.error("reply %s cannot be sent: %s", reply.TYPE, exc)
        data = encode(error_reply(exc), msg_id)
    with contextlib.suppress(zmq.ZMQError):
        sock.send_multipart([identity, data], flags=zmq.NOBLOCK)
