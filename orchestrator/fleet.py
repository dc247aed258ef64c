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
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from multibot.market.bar import Bar
from multibot.wire.home import Home, HomeError, HomeLock
from multibot.wire.protocol import (
    BROKER_MAX_MESSAGE_BYTES,
    HEARTBEAT_S,
    MARKET_HWM,
    SUBSCRIPTION_MAX_BYTES,
    ZMQ_MAX_MESSAGE_BYTES,
    EventKind,
    Message,
    OrderUpdate,
    SymbolRules,
    Up,
    encode,
    encode_bar,
    heartbeat_frame,
)
from multibot.wire.settings import FleetSettings, Mode
from orchestrator.broker.base import Broker, at_once
from orchestrator.broker.journal import Journal, JournalError
from orchestrator.broker.memory_journal import MemoryJournal
from orchestrator.broker.paper import PaperBroker
from orchestrator.control.base import ControlPorts
from orchestrator.control.server import ControlServer
from orchestrator.events import FleetEvents, JournalHealth
from orchestrator.feeds.base import ClockedFeed, Feed, PendingFeed, StreamingFeed
from orchestrator.feeds.factory import make_feed
from orchestrator.flatten import sell_leftover
from orchestrator.live import DrawFrame, live_view
from orchestrator.ports import Trading
from orchestrator.remote import bind_curve_router, start_authenticator
from orchestrator.status import StatusBuilder, StatusSources
from orchestrator.supervisor import Policy, Supervisor, WorkerHandle
from orchestrator.worker_link import WorkerLink, WorkerLinkPorts

if TYPE_CHECKING:
    from orchestrator.exchange.client import ExchangeClient
    from orchestrator.feeds.binance import BinanceFeed

log = logging.getLogger(__name__)

_PROBE_S = 1.0  # the journal's health probe (it rewrites the feed cursor)

_JOURNAL_BUSY_S = 0.25
_HOUSEKEEPING_S = 0.25
_STALL_WARN_S = 1.0  # a stall the log mentions (shorter ones are excused silently)


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
        self._check_mode()
        self.journal.start_decision_clock(f"{settings.feed}:{settings.interval}")
        # On testnet and live the exchange broker comes with the venue (run), before any
        # worker starts. A paper broker must never open that journal: it would close every
        # order still in flight on the exchange as never filled. Till then it holds nothing.
        paper = settings.mode == Mode.PAPER
        self.broker: Broker = PaperBroker(
            self.journal if paper else MemoryJournal(), {},
            fee_rate=Decimal(settings.fee_rate), slippage_bps=Decimal(settings.slippage_bps))
        self.exchange: ExchangeClient | None = None  # set by run() for the binance feed/modes
        self.binance_feed: BinanceFeed | None = None  # the same feed as self.feed, typed
        saved = self.journal.get_meta(self._cursor_key)
        self._journaled_cursor = int(saved) if saved else None
        self.feed: Feed = (make_feed(settings, int(saved) if saved else None)
                           if settings.feed != "binance" else PendingFeed())
        self.rules: dict[str, SymbolRules] = {}
        policy = Policy(max_restarts=settings.max_restarts,
                        window_s=settings.restart_window_s, grace_s=settings.grace_s)
        self.supervisor = Supervisor(home, policy, self.send_to_worker, self._on_state,
                                     self._on_gone)
        self.supervisor.spawner.start()  # now, so that the first `up` forks at once
        self.shutting_down = False
        self._done = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ctx = zmq.asyncio.Context()
        self._control = self._bind(zmq.ROUTER, "control", ZMQ_MAX_MESSAGE_BYTES)
        self.events = FleetEvents(self._bind(zmq.PUB, "events", SUBSCRIPTION_MAX_BYTES),
                                  self.journal)
        self.journal_health = JournalHealth(self.events)
        self._market = self._bind(zmq.PUB, "market", SUBSCRIPTION_MAX_BYTES)
        self._market.setsockopt(zmq.SNDHWM, MARKET_HWM)
        # The PUB only sends: a plain (non-asyncio) view of it skips a future per message.
        self._market_out: zmq.Socket[bytes] = zmq.Socket.shadow(self._market.underlying)
        # Workers get routing ids from ZeroMQ, and a peer claiming an id in use is ignored (no
        # ROUTER_HANDOVER): nobody takes over a worker's route (orchestrator.worker_routes).
        self._broker = self._bind(zmq.ROUTER, "broker", BROKER_MAX_MESSAGE_BYTES)
        self._auth: AsyncioAuthenticator | None = None
        self._remote: zmq.asyncio.Socket | None = None
        if settings.control_tcp:  # CURVE only: authorized keys in <home>/keys/authorized
            self._auth = start_authenticator(self._ctx, home)
            self._remote = bind_curve_router(self._ctx, home, settings.control_tcp)

    def _check_mode(self) -> None:
        """A home's journal holds one kind of money: paper, testnet or live, never a mix."""
        journaled = self.journal.get_meta("mode")
        if journaled is None:
            self.journal.set_meta("mode", self.settings.mode)
        elif journaled != self.settings.mode:
            self._lock.release()
            raise HomeError(
                f"home {self.home.root} holds a {journaled} journal; --mode "
                f"{self.settings.mode} needs a home of its own (--home DIR)")

    @property
    def _cursor_key(self) -> str:
        return f"feed_cursor:{self.settings.feed}:{self.settings.interval}"

    def _bind(self, kind: int, name: str, max_bytes: int) -> zmq.asyncio.Socket:
        """An owner-only ipc socket; a peer sending a message over ``max_bytes`` (the most its
        legitimate traffic needs) is dropped by ZeroMQ before the message is buffered."""
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 100)
        sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)
        sock.bind(self.home.endpoint(name))
        os.chmod(self.home.socket_path(name), 0o600)
        return sock

    # --- lifecycle ----------------------------------------------------------------------------

    async def run(self, initial: Up | None = None, live: DrawFrame | None = None) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_shutdown)
        if self.settings.feed == "binance":
            try:
                await self._open_exchange()
            except BaseException:
                await self._shutdown()
                raise
        self._start(initial, live)
        await self._done.wait()
        await self._shutdown()

    def _start(self, initial: Up | None, live: DrawFrame | None) -> None:
        """Serve the sockets and run the feed; each part gets the few capabilities it uses."""
        if self.settings.mode != Mode.PAPER and not self.broker.on_exchange:
            raise RuntimeError(f"--mode {self.settings.mode} without its exchange broker")
        feed = self.feed
        feed_task = (feed.run(self._publish_bars) if isinstance(feed, StreamingFeed)
                     else self._feed_loop())
        trading = Trading(broker=self.broker, feed=feed, rules=self.rules)  # the venue is open
        status = self._status_sources(trading)
        control = ControlServer(ControlPorts(
            home=str(self.home.root), settings=self.settings, supervisor=self.supervisor,
            trading=trading, status=StatusBuilder(status).report,
            shutting_down=lambda: self.shutting_down, down=self.stop_for_down))
        worker_link = WorkerLink(WorkerLinkPorts(
            supervisor=self.supervisor, trading=trading, journal=self.journal_health,
            order_event=self.events.order_update, spawn=self.spawn))
        for coro in (control.serve(self._control, self.spawn),
                     worker_link.serve(self._broker), feed_task, self._housekeeping_loop()):
            self.spawn(coro)
        if self._remote is not None:
            self.spawn(control.serve(self._remote, self.spawn))
        log.info("orchestrator pid %d up on %s (%s, feed %s %s @ %g bars/s)", os.getpid(),
                 self.home.root, self.settings.mode, self.settings.feed, self.settings.interval,
                 self.settings.speed)
        self.events.publish(EventKind.FLEET, "", f"orchestrator {os.getpid()} started")
        if initial is not None:
            self.spawn(self._initial_up(control, initial))
        if live is not None:
            self.spawn(live_view(StatusBuilder(status).report, self.journal, live))

    def _status_sources(self, trading: Trading) -> StatusSources:
        return StatusSources(
            home=str(self.home.root), settings=self.settings, started_ns=self.started_ns,
            started_mono=self.started_mono, supervisor=self.supervisor, trading=trading,
            journal=self.journal_health, exchange=self.exchange,
            binance_feed=self.binance_feed)

    async def _open_exchange(self) -> None:
        from orchestrator.exchange.userstream import follow_user_stream
        from orchestrator.exchange.venue import open_venue
        from orchestrator.exchange.watcher import watch

        venue = await open_venue(self.settings, self.journal, self._exchange_update)
        self.exchange, self.feed, self.binance_feed = venue.client, venue.feed, venue.feed
        if venue.broker is not None:
            self.broker = venue.broker
            self.spawn(watch(venue.broker))
            self.spawn(follow_user_stream(venue.broker))  # fills as they happen

    def _exchange_update(self, update: OrderUpdate) -> None:
        """An order changed on the exchange by itself (a resting order filled, say)."""
        self.send_to_worker(update.order.symbol, update)
        self.events.order_update(update)

    @staticmethod
    async def _initial_up(control: ControlServer, up: Up) -> None:
        reply = await control.handle(up)
        log.info("initial up: %s", reply)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
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
            self.spawn(self._stop_everything())

    async def _stop_everything(self, flatten: bool = False) -> None:
        await self.supervisor.stop_all(flatten)
        if flatten:  # what a worker could not flatten (none to ask, or out of time)
            trading = Trading(broker=self.broker, feed=self.feed, rules=self.rules)
            for symbol in list(self.supervisor.handles):
                await sell_leftover(trading, symbol)
        if self.broker.on_exchange:  # nothing may rest on the exchange unwatched
            for symbol in list(self.supervisor.handles):
                await self._cancel_all(symbol)
        self._done.set()

    async def stop_for_down(self, flatten: bool) -> None:
        self.shutting_down = True
        await self._stop_everything(flatten)

    async def _shutdown(self) -> None:
        self._save_cursor()
        self.events.publish(EventKind.FLEET, "", "orchestrator stopped")
        await asyncio.sleep(0.05)  # let the last replies and events flush
        for task in list(self._tasks):
            task.cancel()
        if self._auth is not None:
            self._auth.stop()
        self._ctx.destroy(linger=100)
        if isinstance(self.feed, StreamingFeed):
            await self.feed.close()
        if self.exchange is not None:
            await self.exchange.close()
        self.supervisor.spawner.stop()
        self.journal.close()
        self._lock.release()
        log.info("orchestrator stopped")

    # --- broker socket (workers) --------------------------------------------------------------

    def send_to_worker(self, symbol: str, message: Message, msg_id: str | None = None) -> None:
        """To the connection the symbol's current worker registered on; dropped if none."""
        route = self.supervisor.routes.route_of(symbol)
        if route is None:
            return
        with contextlib.suppress(zmq.ZMQError):
            self._broker.send_multipart([route, encode(message, msg_id)], flags=zmq.NOBLOCK)

    # --- feed clock ---------------------------------------------------------------------------

    async def _feed_loop(self) -> None:
        feed = self.feed
        assert isinstance(feed, ClockedFeed)
        period = 1.0 / self.settings.speed
        next_at, ended = time.monotonic(), feed.ended
        while True:
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:  # fell far behind (e.g. suspended): do not replay a burst
                next_at = time.monotonic()
            self._publish_bars(feed.step())
            if feed.ended and not ended:  # said once, again only after a hot-add reopened it
                self.events.replay_ended(feed.cursor)
            if ended := feed.ended:
                await asyncio.sleep(0.5)

    def _publish_bars(self, bars: list[Bar]) -> None:
        """Closed bars to the broker (resting paper orders fill), then to the workers.

        The feed's new position is journaled first (one write per step, whatever the number
        of symbols): after a crash the feed resumes past these bars, so no bar a worker may
        have acted on is ever sent again (one in flight at the crash becomes history)."""
        self._journal_cursor()
        for bar in bars:
            updates: list[OrderUpdate] = []
            if not self.journal_health.error:  # no fill may happen that cannot be journaled
                try:
                    updates = self.broker.on_bar(bar)
                except JournalError as exc:
                    self.journal_health.failed(exc)
            self._market_out.send(encode_bar(bar))
            for update in updates:
                self.send_to_worker(bar.symbol, update)
                self.events.order_update(update)

    # --- housekeeping -------------------------------------------------------------------------

    async def _housekeeping_loop(self) -> None:
        last_beat = last_save = 0.0
        last_tick = time.monotonic()
        while True:
            await asyncio.sleep(_HOUSEKEEPING_S)
            now = time.monotonic()
            # Woken late: the loop did not run (a blocking call, SIGSTOP), so nothing was
            # read meanwhile; that time does not count against the workers' heartbeats.
            late = now - last_tick - _HOUSEKEEPING_S
            last_tick = now
            if late > 0:
                if late > _STALL_WARN_S:
                    log.warning("the orchestrator's loop stalled for %.1fs", late)
                self.supervisor.excuse_stall(late)
            self.supervisor.check_liveness()
            if now - last_beat >= HEARTBEAT_S:  # one broadcast, not a message per worker
                last_beat = now
                with contextlib.suppress(zmq.ZMQError):
                    self._market_out.send(heartbeat_frame(), zmq.NOBLOCK)
            if now - last_save >= _PROBE_S:
                last_save = now
                self._save_cursor()

    def _journal_cursor(self) -> None:
        """The feed's position, if it moved; a failed write halts trading (as a failed order
        write does), so nothing is acted on that a restart could see again. While halted,
        only the health probe tries (each try may wait out the busy timeout)."""
        cursor = self.feed.cursor
        if cursor is None or cursor == self._journaled_cursor or self.journal_health.error:
            return
        try:
            self.journal.set_meta(self._cursor_key, str(cursor))
        except JournalError as exc:
            self.journal_health.failed(exc)
            return
        self._journaled_cursor = cursor

    def _save_cursor(self) -> None:
        """Also the journal's health probe: a journal file deleted or replaced under us halts
        trading for good; otherwise a successful write lifts a trading halt."""
        try:
            self.journal.check_file()
            if self.feed.cursor is None:
                return
            self.journal.set_meta(self._cursor_key, str(self.feed.cursor))
            self._journaled_cursor = self.feed.cursor
        except JournalError as exc:
            self.journal_health.failed(exc)
            return
        self.journal_health.written()

    # --- supervision --------------------------------------------------------------------------

    def _on_state(self, handle: WorkerHandle) -> None:
        self.events.worker_state(handle)

    def _on_gone(self, symbol: str) -> None:
        """A symbol stopped or gave up: no order may rest without a worker watching it."""
        if self.broker.on_exchange:
            if not self.shutting_down:  # else _stop_everything cancels every symbol itself
                self.spawn(self._cancel_all(symbol))
            return
        try:  # paper: cancelled now, before anything else is read
            self._cancelled(at_once(self.broker.cancel_all(symbol)))
        except JournalError as exc:
            log.error("%s: could not cancel open orders: %s", symbol, exc)

    async def _cancel_all(self, symbol: str) -> None:
        try:
            self._cancelled(await self.broker.cancel_all(symbol))
        except JournalError as exc:
            log.error("%s: could not cancel open orders: %s", symbol, exc)

    def _cancelled(self, updates: list[OrderUpdate]) -> None:
        for update in updates:
            self.events.order_update(update)

