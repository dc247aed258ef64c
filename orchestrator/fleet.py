"""The orchestrator process: sockets, the feed clock, the broker link and the lifecycle.

One asyncio loop owns everything; the journal is the only state that outlives it
(crash-only: a new orchestrator on the same home resumes from the journal).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Coroutine
from decimal import Decimal
from typing import Any

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from orchestrator.broker.journal import Journal, JournalError
from orchestrator.broker.paper import PaperBroker
from orchestrator.control import ControlHandlers
from orchestrator.feeds.base import Feed
from orchestrator.feeds.replay import ReplayFeed
from orchestrator.feeds.synthetic import SyntheticFeed
from orchestrator.home import Home, HomeLock
from orchestrator.protocol import (
    ZMQ_MAX_MESSAGE_BYTES,
    BarMessage,
    CancelOrder,
    Error,
    ErrorCode,
    Event,
    Goodbye,
    Message,
    OrchestratorHeartbeat,
    OrderUpdate,
    PlaceOrder,
    ProtocolError,
    Register,
    SymbolRules,
    Up,
    Welcome,
    WorkerHeartbeat,
    decode,
    encode,
    error_reply,
)
from orchestrator.remote import bind_curve_router, start_authenticator
from orchestrator.settings import FleetSettings
from orchestrator.supervisor import Policy, Supervisor, WorkerHandle

log = logging.getLogger(__name__)

_CURSOR_SAVE_S = 1.0
_JOURNAL_BUSY_S = 0.25


def make_feed(settings: FleetSettings, cursor: int | None) -> Feed:
    if settings.feed == "synthetic":
        return SyntheticFeed(settings.interval, settings.seed, cursor)
    return ReplayFeed(settings.interval, cursor)


class Fleet:
    def __init__(self, home: Home, settings: FleetSettings) -> None:
        self.home = home
        self.settings = settings
        self.started_ns = time.time_ns()
        self.started_mono = time.monotonic()
        self._lock = HomeLock(home)
        self._lock.acquire()  # raises HomeError when another orchestrator owns the home
        # A short busy timeout: a locked journal must not stall the loop (and heartbeats).
        self.journal = Journal(home.journal_path, timeout=_JOURNAL_BUSY_S)
        self.journal_error = ""  # non-empty while the journal cannot be written
        self.broker = PaperBroker(self.journal, {}, fee_rate=Decimal(settings.fee_rate),
                                  slippage_bps=Decimal(settings.slippage_bps))
        saved = self.journal.get_meta(self._cursor_key)
        self.feed = make_feed(settings, int(saved) if saved else None)
        self.rules: dict[str, SymbolRules] = {}
        policy = Policy(max_restarts=settings.max_restarts,
                        window_s=settings.restart_window_s, grace_s=settings.grace_s)
        self.supervisor = Supervisor(home, policy, self.send_to_worker, self._on_state,
                                     self._on_gone)
        self.supervisor.spawner.start()  # ~0.3 s once, so the first `up` forks at once
        self.control = ControlHandlers(self)
        self.shutting_down = False
        self._done = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ctx = zmq.asyncio.Context()
        self._control = self._bind(zmq.ROUTER, "control")
        self._events = self._bind(zmq.PUB, "events")
        self._market = self._bind(zmq.PUB, "market")
        self._market.setsockopt(zmq.SNDHWM, 100_000)  # a burst must not drop bars
        # The PUB only sends: a plain (non-asyncio) view of it skips a future per message.
        self._market_out: zmq.Socket[bytes] = zmq.Socket.shadow(self._market.underlying)
        self._broker = self._bind(zmq.ROUTER, "broker", handover=True)
        self._auth: AsyncioAuthenticator | None = None
        self._remote: zmq.asyncio.Socket | None = None
        if settings.control_tcp:  # CURVE only: authorized keys in <home>/keys/authorized
            self._auth = start_authenticator(self._ctx, home)
            self._remote = bind_curve_router(self._ctx, home, settings.control_tcp)

    @property
    def _cursor_key(self) -> str:
        return f"feed_cursor:{self.settings.feed}:{self.settings.interval}"

    def _bind(self, kind: int, name: str, handover: bool = False) -> zmq.asyncio.Socket:
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 100)
        sock.setsockopt(zmq.MAXMSGSIZE, ZMQ_MAX_MESSAGE_BYTES)
        if handover:  # a restarted worker takes over its symbol's routing id at once
            sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        sock.bind(self.home.endpoint(name))
        os.chmod(self.home.socket_path(name), 0o600)
        return sock

    # --- lifecycle ----------------------------------------------------------------------------

    async def run(self, initial: Up | None = None, live: bool = False) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_shutdown)
        for coro in (self.control.serve(self._control, self._spawn), self._broker_loop(),
                     self._feed_loop(), self._housekeeping_loop()):
            self._spawn(coro)
        if self._remote is not None:
            self._spawn(self.control.serve(self._remote, self._spawn))
        log.info("orchestrator pid %d up on %s (%s, feed %s %s @ %g bars/s)", os.getpid(),
                 self.home.root, self.settings.mode, self.settings.feed, self.settings.interval,
                 self.settings.speed)
        self.publish_event("fleet", "", f"orchestrator {os.getpid()} started")
        if initial is not None:
            self._spawn(self._initial_up(initial))
        if live:
            from orchestrator.live import live_view

            self._spawn(live_view(self))
        await self._done.wait()
        await self._shutdown()

    async def _initial_up(self, up: Up) -> None:
        reply = await self.control.handle(up)
        log.info("initial up: %s", reply)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("orchestrator task failed", exc_info=task.exception())

    def request_shutdown(self) -> None:
        """SIGTERM, SIGINT and `down`: an orderly stop of every worker, then exit."""
        if not self.shutting_down:
            self.shutting_down = True
            self._spawn(self._stop_everything())

    async def _stop_everything(self, flatten: bool = False) -> None:
        await self.supervisor.stop_all(flatten)
        self._done.set()

    async def stop_for_down(self, flatten: bool) -> None:
        self.shutting_down = True
        await self._stop_everything(flatten)

    async def _shutdown(self) -> None:
        self._save_cursor()
        self.publish_event("fleet", "", "orchestrator stopped")
        await asyncio.sleep(0.05)  # let the last replies and events flush
        for task in list(self._tasks):
            task.cancel()
        if self._auth is not None:
            self._auth.stop()
        self._ctx.destroy(linger=100)
        self.supervisor.spawner.stop()
        self.journal.close()
        self._lock.release()
        log.info("orchestrator stopped")

    # --- broker socket (workers) --------------------------------------------------------------

    def send_to_worker(self, symbol: str, message: Message, msg_id: str | None = None) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._broker.send_multipart([symbol.encode(), encode(message, msg_id)],
                                        flags=zmq.NOBLOCK)

    async def _broker_loop(self) -> None:
        while True:
            frames = await self._broker.recv_multipart()
            identity = frames[0]
            try:
                if len(frames) != 2:
                    raise ProtocolError(ErrorCode.MALFORMED, "expected exactly one frame")
                envelope, message = decode(frames[1])
                reply = self._serve_worker(identity.decode("ascii"), message)
                msg_id = envelope.id
            except ProtocolError as exc:
                reply, msg_id = error_reply(exc), ""
            except UnicodeDecodeError:
                reply, msg_id = Error(code=ErrorCode.NOT_ALLOWED, reason="bad identity"), ""
            except JournalError as exc:  # trading halts; the worker resends the same id later
                self._journal_failed(exc)
                reply = Error(code=ErrorCode.JOURNAL_UNAVAILABLE,
                              reason=f"trading halted, journal unavailable: {exc}")
                msg_id = ""
            if reply is not None:
                with contextlib.suppress(zmq.ZMQError):
                    self._broker.send_multipart([identity, encode(reply, msg_id)],
                                                flags=zmq.NOBLOCK)

    def _serve_worker(self, symbol: str, message: Message) -> Message | None:
        if isinstance(message, Register):
            if message.symbol != symbol:
                raise ProtocolError(ErrorCode.NOT_ALLOWED, "register under your own symbol")
            handle = self.supervisor.registered(symbol, message.pid)
            return self._welcome(handle)
        if not self.supervisor.is_live(symbol):
            raise ProtocolError(ErrorCode.NOT_ALLOWED, f"{symbol} is not a registered worker")
        if isinstance(message, Goodbye):
            self.supervisor.goodbye(symbol, message.reason)
            return None
        if isinstance(message, WorkerHeartbeat):
            self.supervisor.heartbeat(symbol, message)
            return None
        if isinstance(message, PlaceOrder | CancelOrder):
            self._journal_guard()
        if isinstance(message, PlaceOrder):
            update = self.broker.place(symbol, message)
            self._order_event(update)
            return update
        if isinstance(message, CancelOrder):
            update = self.broker.cancel(symbol, message.client_order_id)
            self._order_event(update)
            return update
        raise ProtocolError(ErrorCode.NOT_ALLOWED, f"{message.TYPE!r} is not a worker request")

    def _welcome(self, handle: WorkerHandle) -> Welcome:
        symbol = handle.symbol
        return Welcome(
            config=handle.config,
            rules=self.rules[symbol],
            position=self.broker.position(symbol),
            open_orders=self.broker.open_orders(symbol),
            next_seq=self.broker.next_seq(symbol),
            history=self.feed.history(symbol, handle.warmup + 1),
        )

    # --- feed clock ---------------------------------------------------------------------------

    async def _feed_loop(self) -> None:
        period = 1.0 / self.settings.speed
        next_at = time.monotonic()
        while True:
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:  # fell far behind (e.g. suspended): do not replay a burst
                next_at = time.monotonic()
            for bar in self.feed.step():
                updates: list[OrderUpdate] = []
                if not self.journal_error:  # no fill may happen that cannot be journaled
                    try:
                        updates = self.broker.on_bar(bar)
                    except JournalError as exc:
                        self._journal_failed(exc)
                self._market_out.send(bar.symbol.encode() + b"\0", zmq.SNDMORE)
                self._market_out.send(encode(BarMessage(bar=bar)))
                for update in updates:
                    self.send_to_worker(bar.symbol, update)
                    self._order_event(update)
            if self.feed.ended:
                await asyncio.sleep(0.5)

    # --- housekeeping -------------------------------------------------------------------------

    async def _housekeeping_loop(self) -> None:
        last_beat = last_save = 0.0
        while True:
            await asyncio.sleep(0.25)
            self.supervisor.check_liveness()
            now = time.monotonic()
            if now - last_beat >= 1.0:
                last_beat = now
                for symbol in list(self.supervisor.handles):
                    if self.supervisor.is_live(symbol):
                        self.send_to_worker(symbol, OrchestratorHeartbeat())
            if now - last_save >= _CURSOR_SAVE_S:
                last_save = now
                self._save_cursor()

    def _save_cursor(self) -> None:
        """Also the journal's health probe: a successful write lifts a trading halt."""
        if self.feed.cursor is None:
            return
        try:
            self.journal.set_meta(self._cursor_key, str(self.feed.cursor))
        except JournalError as exc:
            self._journal_failed(exc)
            return
        if self.journal_error:
            log.warning("journal writable again: trading resumes")
            self.journal_error = ""
            self._event("fleet", "", "journal writable again: trading resumes")

    # --- journal faults -----------------------------------------------------------------------

    def _journal_guard(self) -> None:
        """Fail fast while halted instead of waiting on a broken journal for every request."""
        if self.journal_error:
            raise JournalError(self.journal_error)

    def _journal_failed(self, exc: JournalError) -> None:
        if not self.journal_error:
            log.error("journal unavailable, trading halted: %s", exc)
            self.publish_event("fleet", "", f"trading halted, journal unavailable: {exc}")
        self.journal_error = str(exc) or type(exc).__name__

    # --- events -------------------------------------------------------------------------------

    def publish_event(self, kind: str, symbol: str, detail: str) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._events.send_multipart(
                [kind.encode(), encode(Event(kind=kind, symbol=symbol, detail=detail))],
                flags=zmq.NOBLOCK,
            )

    def _on_state(self, handle: WorkerHandle) -> None:
        detail = handle.state.value
        if handle.state.value in ("BACKOFF", "FAILED") and handle.last_error:
            detail += f": {handle.last_error}"
        self._event("state", handle.symbol, detail)

    def _on_gone(self, symbol: str) -> None:
        """A symbol stopped or gave up: no order may rest without a worker watching it."""
        try:
            for update in self.broker.cancel_all(symbol):
                self._order_event(update)
        except JournalError as exc:
            log.error("%s: could not cancel open orders: %s", symbol, exc)

    def _order_event(self, update: OrderUpdate) -> None:
        order = update.order
        for fill in update.fills:
            self._event("fill", order.symbol, f"{fill.side} {fill.qty} @ {fill.price} "
                        f"fee {fill.fee} ({order.client_order_id})")
        if order.status in ("REJECTED", "CANCELED", "EXPIRED"):
            self._event("order", order.symbol,
                        f"{order.client_order_id} {order.status} {order.reason}".strip())

    def _event(self, kind: str, symbol: str, detail: str) -> None:
        """Published for subscribers and journaled for the record."""
        self.publish_event(kind, symbol, detail)
        with contextlib.suppress(JournalError):
            self.journal.add_event(kind, symbol, detail)
