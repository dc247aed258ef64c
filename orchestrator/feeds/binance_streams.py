"""One combined-stream websocket of the Binance feed: connect, SUBSCRIBE/UNSUBSCRIBE within the
exchange's message rate, notice every reconnect, close in bounded time.

python-binance's ``ReconnectingWebsocket`` reconnects by itself (to the URL it was built with,
so streams SUBSCRIBEd later are gone afterwards) and gives up after 5 failed attempts; we watch
its ``ws`` object to see its reconnects and rebuild the socket ourselves once it has given up.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from binance import BinanceSocketManager
from binance.exceptions import ReadLoopClosed
from binance.ws.constants import WSListenerState

log = logging.getLogger(__name__)

URL_STREAMS = 64  # streams put in a connection's URL (a long URL fails); the rest are SUBSCRIBEd
MESSAGE_STREAMS = 200  # streams per SUBSCRIBE/UNSUBSCRIBE message
BATCH_WINDOW_S = 0.05  # changes within this window share one message
POLL_S = 0.2  # how often the reader looks for a reconnect when no message arrives
QUEUE_SIZE = 100_000  # python-binance's queue: a burst must never overflow it
CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0

_ids = itertools.count(1)


class Connection:
    """Streams ``wanted`` over one socket; ``on_kline`` and ``on_reconnect`` are awaited from
    one reader task, so a gap fill always completes before the next streamed message."""

    def __init__(self, *, socket_manager: Callable[[], BinanceSocketManager],
                 on_kline: Callable[[dict[str, Any]], Awaitable[None]],
                 on_reconnect: Callable[[Connection], Awaitable[None]],
                 max_messages_per_s: float, backoff_s: tuple[float, ...]) -> None:
        self.id = next(_ids)
        self.wanted: set[str] = set()
        self.reconnects = 0
        self.messages_sent = 0
        self._factory = socket_manager
        self._on_kline = on_kline
        self._on_reconnect = on_reconnect
        self._backoff = backoff_s or (1.0,)
        # one slot of the exchange's budget stays free for the websocket keepalive pings
        self._per_s = max(1, int(max_messages_per_s) - 1) if max_messages_per_s >= 2 else 1
        self._spacing = 1.0 / max(max_messages_per_s, 1e-3)
        self._sent: collections.deque[float] = collections.deque()
        self._url_streams: tuple[str, ...] = ()
        self._live: set[str] = set()  # what the server streams to us, as far as we know
        self._wake = asyncio.Event()
        self._sock: Any = None
        self._read_task: asyncio.Task[None] | None = None
        self._ws_seen: Any = None
        self.task: asyncio.Task[None] | None = None

    def poke(self) -> None:
        """``wanted`` changed: send the difference (after a short batching window)."""
        self._wake.set()

    @property
    def connected(self) -> bool:
        sock = self._sock
        return bool(sock is not None and sock.ws is not None
                    and sock.ws_state == WSListenerState.STREAMING)

    async def run(self) -> None:
        """Keep the socket up until cancelled; the socket is closed on the way out."""
        attempt = 0
        first = True
        try:
            await asyncio.sleep(BATCH_WINDOW_S)  # adds arriving together share the URL
            while True:
                try:
                    await self._connect()
                    attempt = 0
                    reopened, first = not first, False
                    if reopened:
                        self.reconnects += 1
                        log.warning("stream connection %d reopened (%d streams)",
                                    self.id, len(self.wanted))
                    await self._serve(reopened)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # any failure: rebuild the socket after a backoff
                    log.warning("stream connection %d failed: %s: %s",
                                self.id, type(exc).__name__, exc)
                await self._close_socket()
                delay = self._backoff[min(attempt, len(self._backoff) - 1)]
                attempt += 1
                await asyncio.sleep(delay)
        finally:
            await self._close_socket()

    async def _connect(self) -> None:
        streams = tuple(sorted(self.wanted)[:URL_STREAMS])
        if not streams:
            raise RuntimeError("no streams to open a connection with")
        sock = self._factory().multiplex_socket(list(streams))
        sock.max_queue_size = max(int(sock.max_queue_size), QUEUE_SIZE)
        # We run the read loop as our own task (python-binance would spawn an anonymous one)
        # so that close() can cancel it even while it sleeps before a reconnect.
        sock._handle_read_loop = True
        self._sock = sock
        await asyncio.wait_for(sock.connect(), CONNECT_TIMEOUT_S)
        self._read_task = asyncio.create_task(sock._read_loop())
        self._ws_seen = sock.ws
        self._url_streams = streams
        self._live = set(streams)
        self._wake.set()

    async def _serve(self, reopened: bool) -> None:
        """Read until python-binance gives up (ReadLoopClosed)."""
        sock = self._sock
        sender = asyncio.create_task(self._sender())
        try:
            if reopened:
                await self._on_reconnect(self)
            while True:
                try:
                    msg = await asyncio.wait_for(sock.recv(), POLL_S)
                except TimeoutError:
                    msg = None
                except ReadLoopClosed:
                    log.warning("stream connection %d: python-binance gave up reconnecting",
                                self.id)
                    return
                if sender.done():  # a bug in the sender must not go unnoticed
                    sender.result()
                ws = sock.ws
                if (ws is not None and ws is not self._ws_seen
                        and sock.ws_state == WSListenerState.STREAMING):
                    self._ws_seen = ws
                    self.reconnects += 1
                    self._live = set(self._url_streams)  # later SUBSCRIBEs died with the drop
                    self._wake.set()
                    log.warning("stream connection %d reconnected by python-binance "
                                "(%d streams)", self.id, len(self.wanted))
                    await self._on_reconnect(self)
                if msg is not None:
                    await self._dispatch(msg)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _dispatch(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            return
        if msg.get("e") == "error":  # a drop; python-binance reconnects, we see it via ws
            log.debug("stream connection %d: %s %s", self.id, msg.get("type"), msg.get("m"))
        elif "id" in msg and ("result" in msg or "error" in msg):
            if msg.get("error") is not None:
                log.warning("stream connection %d: request %s refused: %s",
                            self.id, msg.get("id"), msg.get("error"))
        else:
            data = msg.get("data", msg)
            if isinstance(data, dict) and data.get("e") == "kline":
                await self._on_kline(data)

    async def _sender(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(BATCH_WINDOW_S)
            while self.connected:
                unsub = sorted(self._live - self.wanted)
                sub = sorted(self.wanted - self._live)
                if not unsub and not sub:
                    break
                if await self._rate_slot():
                    continue  # waited: the difference may have changed meanwhile
                method, params = (("UNSUBSCRIBE", unsub) if unsub else ("SUBSCRIBE", sub))
                params = params[:MESSAGE_STREAMS]
                frame = json.dumps({"method": method, "params": params, "id": next(_ids)})
                try:
                    await self._sock.ws.send(frame)
                except Exception as exc:  # the drop is seen and handled by the reader
                    log.debug("stream connection %d: %s not sent: %s", self.id, method, exc)
                    break
                self._sent.append(time.monotonic())
                self.messages_sent += 1
                if method == "SUBSCRIBE":
                    self._live.update(params)
                else:
                    self._live.difference_update(params)

    async def _rate_slot(self) -> bool:
        """Wait until one more message keeps us within the rate; True if it had to wait."""
        now = time.monotonic()
        while self._sent and now - self._sent[0] >= 1.0:
            self._sent.popleft()
        wait = 0.0
        if self._sent:
            wait = self._spacing - (now - self._sent[-1])
        if len(self._sent) >= self._per_s:
            wait = max(wait, 1.0 - (now - self._sent[0]))
        if wait > 0:
            await asyncio.sleep(wait + 0.01)
            return True
        return False

    async def _close_socket(self) -> None:
        sock, task = self._sock, self._read_task
        self._sock = self._read_task = None
        self._ws_seen = None
        self._live = set()
        if sock is None:
            return
        sock.ws_state = WSListenerState.EXITING
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), CLOSE_TIMEOUT_S)
        if task is None or task.done():
            sock._handle_read_loop = None  # its finally did this, unless it never started
        try:
            await asyncio.wait_for(sock.__aexit__(None, None, None), CLOSE_TIMEOUT_S)
        except Exception as exc:
            log.debug("stream connection %d: close: %s", self.id, exc)

    async def stop(self, timeout: float = 2 * CLOSE_TIMEOUT_S + 1) -> None:
        """Cancel the task (which closes the socket) and wait for it, bounded."""
        task = self.task
        if task is None or task.done():
            await self._close_socket()
            return
        task.cancel()
        await asyncio.wait([task], timeout=timeout)
