"""The open websocket connections of one endpoint (market streams, WebSocket API), and the
two ways the fake ends them all: cut (no close frame) or closed (1001, server going away)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Generic, Protocol, TypeVar

from aiohttp import web


class Open(Protocol):
    ws: web.WebSocketResponse

    def abort(self) -> None: ...


C = TypeVar("C", bound=Open)


class ConnectionSet(Generic[C]):
    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock  # the server's: connections change on the loop, are read anywhere
        self._conns: set[C] = set()

    def connections(self) -> int:
        with self._lock:
            return len(self._conns)

    async def drop_all(self, timeout: float = 2.0) -> None:
        """Cut every connection and wait (bounded) until their handlers are gone."""
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.abort()
        await self._wait_empty(timeout)

    async def close_all(self, timeout: float = 2.0) -> None:
        """Close every connection with a close frame (server going away)."""
        with self._lock:
            conns = list(self._conns)
        closes = [conn.ws.close(code=1001, message=b"server shutdown") for conn in conns]
        if closes:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*closes, return_exceptions=True), timeout)
        for conn in conns:
            conn.abort()
        await self._wait_empty(timeout)

    async def _wait_empty(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.connections() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
