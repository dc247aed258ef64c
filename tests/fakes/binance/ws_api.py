"""The WebSocket API (``/ws-api/v3``) as far as the user data stream needs it, in the frames
python-binance 1.0.37 speaks (binance/ws/websocket_api.py, keepalive_websocket.py):

- ``{"id", "method": "userDataStream.subscribe.signature", "params": {apiKey, timestamp,
  signature[, recvWindow]}}``, signed over the sorted, URL-encoded params (checked by the
  auth module, as a REST request is) → ``{"id", "status": 200, "result": {"subscriptionId":
  N}}``; N counts from 0 per connection. From then on every account event is pushed as
  ``{"subscriptionId": N, "event": {...}}`` (user_events.py).
- ``userDataStream.unsubscribe`` (``subscriptionId``; all when absent) → ``{"result": {}}``.
- anything else → ``{"id", "status": 400, "error": {"code", "msg"}}``.

Point python-binance at it with ``WS_API_URL = fake.ws_api_url`` on an AsyncClient subclass
(class attribute: the client builds ``client.ws_api`` in ``__init__``), then
``BinanceSocketManager(client).user_socket()``.

Faults (FakeBinance methods): ``drop_user_streams()`` cuts every WebSocket API connection
(no close frame; the subscriptions die with it, as on Binance); ``terminate_user_streams()``
ends every subscription with an ``eventStreamTerminated`` event while the connection stays
up (no event comes after it, silently for a client that ignores it); ``delay_user_events(s)``
pushes each later event ``s`` seconds after it happened (0 restores), so polling fallbacks can
be tested. ``set_connection_lifetime(s)`` closes each connection ``s`` seconds after it opened
(streams.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.binance.connections import ConnectionSet
from tests.fakes.binance.errors import ApiError

log = logging.getLogger(__name__)
Verify = Callable[[dict[str, str]], None]  # raises the ApiError Binance would answer
PING_INTERVAL_S = 20.0


class ApiConnection:
    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        self.request = request
        self.subscriptions: set[int] = set()
        self.next_subscription = 0
        self.queue: asyncio.Queue[tuple[float, str] | None] = asyncio.Queue()

    def send(self, message: dict[str, Any], due: float = 0.0) -> None:
        self.queue.put_nowait((due, json.dumps(message)))

    def abort(self) -> None:
        transport = self.request.transport
        if transport is not None:
            transport.abort()


class WsApi(ConnectionSet[ApiConnection]):
    def __init__(self, lock: threading.RLock, verify: Verify) -> None:
        super().__init__(lock)
        self._verify = verify
        self._loop: asyncio.AbstractEventLoop | None = None
        self.event_delay_s = 0.0
        self.lifetime_s: float | None = None

    # -- any thread --------------------------------------------------------------------------
    def subscriptions(self) -> int:
        with self._lock:
            return sum(len(c.subscriptions) for c in self._conns)

    def push(self, events: list[Any]) -> None:
        """Hand account events to the loop thread, which sends them to every subscription."""
        loop = self._loop
        if events and loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(self._deliver, events)

    # -- loop thread -------------------------------------------------------------------------
    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def _deliver(self, events: list[Any]) -> None:
        due = time.monotonic() + self.event_delay_s
        with self._lock:
            targets = [(c, sorted(c.subscriptions)) for c in self._conns if c.subscriptions]
        for conn, ids in targets:
            for event in events:
                for ident in ids:
                    conn.send({"subscriptionId": ident, "event": event}, due)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=PING_INTERVAL_S, timeout=1.0)
        await ws.prepare(request)
        conn = ApiConnection(ws, request)
        with self._lock:
            self._conns.add(conn)
        writer = asyncio.create_task(self._write(conn))
        ender = (asyncio.get_running_loop().call_later(self.lifetime_s, conn.queue.put_nowait,
                                                       None)
                 if self.lifetime_s is not None else None)
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    conn.send(self._request(conn, msg.data))
        finally:
            if ender is not None:
                ender.cancel()
            with self._lock:
                self._conns.discard(conn)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        return ws

    async def _write(self, conn: ApiConnection) -> None:
        while not conn.ws.closed:
            item = await conn.queue.get()
            if item is None:  # its lifetime is over: Binance closes it
                await conn.ws.close(code=1000, message=b"connection lifetime reached")
                return
            due, text = item
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                await conn.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return

    def _request(self, conn: ApiConnection, data: str | bytes) -> dict[str, Any]:
        try:
            msg = json.loads(data)
        except ValueError:
            msg = None
        if not isinstance(msg, dict) or not isinstance(msg.get("params", {}), dict):
            return _error(None, ApiError(400, -1000, "Malformed request."))
        ident, method, params = msg.get("id"), msg.get("method"), msg.get("params", {})
        try:
            if method == "userDataStream.subscribe.signature":
                self._verify({str(k): _text(v) for k, v in params.items()})
                with self._lock:
                    number = conn.next_subscription
                    conn.next_subscription += 1
                    conn.subscriptions.add(number)
                return {"id": ident, "status": 200, "result": {"subscriptionId": number}}
            if method == "userDataStream.unsubscribe":
                with self._lock:
                    if "subscriptionId" in params:
                        conn.subscriptions.discard(params["subscriptionId"])
                    else:
                        conn.subscriptions.clear()
                return {"id": ident, "status": 200, "result": {}}
            raise ApiError(400, -1000, f"Unknown method {method!r}.")
        except ApiError as error:
            return _error(ident, error)

    def terminate(self, now_ms: int) -> None:
        """eventStreamTerminated on every subscription, which then ends (loop thread)."""
        with self._lock:
            ended = [(c, sorted(c.subscriptions)) for c in self._conns]
            for conn, _ in ended:
                conn.subscriptions.clear()
        for conn, ids in ended:
            for ident in ids:
                conn.send({"subscriptionId": ident,
                           "event": {"e": "eventStreamTerminated", "E": now_ms}})


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _error(ident: object, error: ApiError) -> dict[str, Any]:
    return {"id": ident, "status": error.status, "error": error.body()}
