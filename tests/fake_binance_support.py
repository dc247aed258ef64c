"""Shared by the fake Binance server's own tests: a started server, the REAL python-binance
client pointed at it, bounded waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from binance import AsyncClient, BinanceSocketManager
from binance.exceptions import BinanceAPIException

from tests.fakes.binance import FakeBinance

KEY, SECRET = "test-key", "fake-secret-4f2a9c"
ZERO = Decimal(0)
T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    server = FakeBinance(api_key=KEY, api_secret=SECRET, symbols=["BTCUSDT", "ETHUSDT"],
                         balances={"USDT": "10000", "BTC": "1"}, tick_s=0.05,
                         start_prices={"BTCUSDT": 50000.0, "ETHUSDT": 2500.0})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def run(coro: Awaitable[T], timeout: float = 20.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


@asynccontextmanager
async def client_for(fake: FakeBinance, key: str = KEY,
                     secret: str = SECRET) -> AsyncIterator[AsyncClient]:
    class Local(AsyncClient):  # type: ignore[misc]  # python-binance is untyped (Any)
        API_URL = fake.rest_url  # class attribute: create() pings before we could set it
        WS_API_URL = fake.ws_api_url  # the user data stream; __init__ builds ws_api from it

    client = await Local.create(key, secret)
    try:
        yield client
    finally:
        await client.close_connection()


async def until(probe: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def api_error(call: Awaitable[Any]) -> BinanceAPIException:
    with pytest.raises(BinanceAPIException) as info:
        await call
    return info.value


def sockets(client: AsyncClient, fake: FakeBinance) -> BinanceSocketManager:
    bsm = BinanceSocketManager(client)
    bsm.STREAM_URL = fake.stream_url
    return bsm


def quick(socket: T) -> T:
    """python-binance's read loop notices an exit only between receives (10 s timeout by
    default): a short timeout on this one socket keeps a quiet socket's teardown fast."""
    socket.TIMEOUT = 0.5  # type: ignore[attr-defined]
    return socket


async def next_data(socket: Any, timeout: float = 5.0) -> dict[str, Any]:
    """The next market message, skipping python-binance's error notices."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = await asyncio.wait_for(socket.recv(), deadline - time.monotonic())
        if msg.get("e") != "error":
            return dict(msg)
    raise AssertionError("no market message")


# -- public endpoints ------------------------------------------------------------------------
