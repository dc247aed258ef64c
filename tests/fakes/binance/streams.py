"""Market streams over websockets: ``/ws/<stream>`` (raw payloads) and
``/stream?streams=a/b`` (``{"stream", "data"}`` envelopes), live SUBSCRIBE / UNSUBSCRIBE /
LIST_SUBSCRIPTIONS, and Binance's per-connection limits (5 incoming messages a second,
1024 streams). Each connection has its own queue and writer task, so one slow reader never
holds up the market's tick.

Endings a client must survive (FakeBinance methods): ``server_shutdown(grace_s)`` sends
``{"e": "serverShutdown", "E": ms}`` on every market connection, then closes each (1001)
``grace_s`` later, as Binance does before a restart; ``set_connection_lifetime(s)`` closes
every connection (market streams and WebSocket API) ``s`` seconds after it opened (1000), as
Binance does after 24 h; ``drop_streams()`` cuts them without a close frame."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.binance.connections import ConnectionSet
from tests.fakes.binance.market import Event

log = logging.getLogger(__name__)

MAX_STREAMS = 1024
MAX_MESSAGES_PER_S = 5
PING_INTERVAL_S = 20.0
QUEUE_MAX = 10_000  # a reader this far behind is disconnected, as Binance does
INVALID = {"code": 2, "msg": "Invalid request"}


class Close:
    """Queued after a connection's last message: the writer closes it with this code."""

    def __init__(self, code: int, reason: str) -> None:
        self.code, self.reason = code, reason


class Connection:
    def __init__(self, ws: web.WebSocketResponse, request: web.Request, combined: bool,
                 streams: Iterable[str]) -> None:
        self.ws = ws
        self.request = request
        self.combined = combined
        self.streams: dict[str, None] = dict.fromkeys(streams)  # ordered like Binance's LIST
        # None: stop writing; Close: close the connection after what is queued before it
        self.queue: asyncio.Queue[str | Close | None] = asyncio.Queue(maxsize=QUEUE_MAX)
        self.incoming: deque[float] = deque()

    def too_fast(self) -> bool:
        now = time.monotonic()
        self.incoming.append(now)
        while self.incoming and now - self.incoming[0] > 1.0:
            self.incoming.popleft()
        return len(self.incoming) > MAX_MESSAGES_PER_S

    def send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(json.dumps(message))

    def close_later(self, code: int, reason: str) -> None:
        try:
            self.queue.put_nowait(Close(code, reason))
        except asyncio.QueueFull:
            self.abort()

    def abort(self) -> None:
        """Drop the TCP connection without a close frame (a network cut)."""
        transport = self.request.transport
        if transport is not None:
            transport.abort()


class StreamHub(ConnectionSet[Connection]):
    def __init__(self, lock: threading.RLock, valid: Callable[[str], bool]) -> None:
        super().__init__(lock)
        self._valid = valid
        self.lifetime_s: float | None = None  # Binance: 24 h
        self.opened = 0  # connections accepted so far (reconnects count)

    # -- inspection (any thread) -------------------------------------------------------------
    def wanted(self) -> set[str]:
        with self._lock:
            return {name for conn in self._conns for name in conn.streams}

    # -- connections (loop thread) -----------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        combined = request.path.rstrip("/") == "/stream"
        raw = request.query.get("streams", "") if combined else request.match_info.get("tail", "")
        names = [name for name in raw.split("/") if name]
        if len(names) > MAX_STREAMS or not all(self._valid(n) for n in names):
            return web.json_response({"code": -1121, "msg": "Invalid stream name."}, status=400)
        ws = web.WebSocketResponse(heartbeat=PING_INTERVAL_S, timeout=1.0)
        await ws.prepare(request)
        conn = Connection(ws, request, combined, names)
        with self._lock:
            self._conns.add(conn)
            self.opened += 1
        writer = asyncio.create_task(self._write(conn))
        ender = (asyncio.get_running_loop().call_later(
            self.lifetime_s, conn.close_later, 1000, "connection lifetime reached")
            if self.lifetime_s is not None else None)
        try:
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                if conn.too_fast():
                    log.info("closing a stream connection: more than %d messages in 1 s",
                             MAX_MESSAGES_PER_S)
                    with contextlib.suppress(asyncio.QueueFull):
                        conn.queue.put_nowait(None)  # the replies already queued go out first
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(asyncio.shield(writer), 1.0)
                    await ws.close(code=1008, message=b"Too many requests")
                    break
                conn.send(self._control(conn, msg.data))
        finally:
            if ender is not None:
                ender.cancel()
            with self._lock:
                self._conns.discard(conn)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        return ws

    async def _write(self, conn: Connection) -> None:
        while not conn.ws.closed:
            text = await conn.queue.get()
            if text is None:
                return
            if isinstance(text, Close):
                await conn.ws.close(code=text.code, message=text.reason.encode())
                return
            try:
                await conn.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return  # the reader's side is gone; the handler cleans up

    def _control(self, conn: Connection, data: str | bytes) -> dict[str, Any]:
        """The reply to one JSON control frame."""
        try:
            msg = json.loads(data)
        except ValueError:
            return {"error": INVALID, "id": None}
        if not isinstance(msg, dict):
            return {"error": INVALID, "id": None}
        ident = msg.get("id")
        if not (ident is None or isinstance(ident, (int, str))) or isinstance(ident, bool):
            return {"error": INVALID, "id": None}
        method, params = msg.get("method"), msg.get("params", [])
        if method == "LIST_SUBSCRIPTIONS":
            with self._lock:
                return {"result": list(conn.streams), "id": ident}
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE") or not isinstance(params, list) \
                or not all(isinstance(p, str) and self._valid(p) for p in params):
            return {"error": INVALID, "id": ident}
        with self._lock:
            if method == "SUBSCRIBE":
                if len(conn.streams.keys() | set(params)) > MAX_STREAMS:
                    return {"error": INVALID, "id": ident}
                conn.streams.update(dict.fromkeys(params))
            else:
                for name in params:
                    conn.streams.pop(name, None)
        return {"result": None, "id": ident}

    def publish(self, events: list[Event]) -> None:
        """Queue each event for the connections subscribed to its stream (loop thread)."""
        if not events:
            return
        with self._lock:
            conns = list(self._conns)
        for name, payload in events:
            raw: str | None = None
            wrapped: str | None = None
            for conn in conns:
                if name not in conn.streams:
                    continue
                if conn.combined:
                    wrapped = wrapped or json.dumps({"stream": name, "data": payload})
                    text = wrapped
                else:
                    raw = raw or json.dumps(payload)
                    text = raw
                try:
                    conn.queue.put_nowait(text)
                except asyncio.QueueFull:
                    log.warning("dropping a stream connection that stopped reading")
                    conn.abort()

    def shutdown(self, now_ms: int, grace_s: float) -> None:
        """serverShutdown on every connection, then a close ``grace_s`` later (loop thread)."""
        with self._lock:
            conns = list(self._conns)
        loop = asyncio.get_running_loop()
        for conn in conns:
            conn.send({"e": "serverShutdown", "E": now_ms})
            loop.call_later(grace_s, conn.close_later, 1001, "server shutdown")
