"""The fake Binance server's market streams, driven by the REAL python-binance
BinanceSocketManager over 127.0.0.1: payloads, subscriptions, limits, drops, shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal
from typing import Any

import pytest
import websockets

from tests.fake_binance_support import (
    ROOT,
    client_for,
    fake,
    next_data,
    quick,
    run,
    sockets,
    until,
)
from tests.fakes.binance import FakeBinance
from tests.fakes.binance.market import INTERVALS_MS

__all__ = ["fake"]  # the fixture


def test_closed_stream_bars_equal_rest_klines(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client:
            names = ["btcusdt@kline_1s", "ethusdt@kline_1s", "btcusdt@kline_1m"]
            closed: dict[tuple[str, int], dict[str, Any]] = {}
            updates = 0
            async with quick(sockets(client, fake).multiplex_socket(names)) as socket:
                await until(lambda: fake.subscriptions() == set(names))
                while len([k for k in closed if k[0] != "btcusdt@kline_1m"]) < 4:
                    msg = await next_data(socket)
                    k = msg["data"]["k"]
                    assert msg["stream"] in names and msg["data"]["e"] == "kline"
                    if k["x"]:
                        assert (msg["stream"], k["t"]) not in closed, "two x=true for one bar"
                        closed[(msg["stream"], k["t"])] = k
                    else:
                        updates += 1
            assert updates > 0
            for (stream, open_time), k in closed.items():
                symbol = stream.split("@")[0].upper()
                interval = stream.split("_")[1]
                rest = await client.get_klines(symbol=symbol, interval=interval,
                                               startTime=open_time, limit=1)
                assert rest[0] == [k["t"], k["o"], k["h"], k["l"], k["c"], k["v"], k["T"],
                                   k["q"], k["n"], k["V"], k["Q"], "0"]
                assert set(k) == {"t", "T", "s", "i", "f", "L", "o", "c", "h", "l", "v", "n",
                                  "x", "q", "V", "Q", "B"}
            # the bar being formed is the last REST kline
            last = (await client.get_klines(symbol="BTCUSDT", interval="1s", limit=1))[0]
            assert last[0] > max(t for (_, t) in closed) - 1000
    run(scenario())


def test_trade_stream_raw_socket(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client:
            async with quick(sockets(client, fake).trade_socket("BTCUSDT")) as socket:
                msg = await next_data(socket)
            assert msg["e"] == "trade" and msg["s"] == "BTCUSDT"
            assert set(msg) >= {"E", "t", "p", "q", "T", "m", "M"}
            assert isinstance(msg["p"], str) and Decimal(msg["p"]) > 0
    run(scenario())


def test_subscribe_unsubscribe_on_a_live_connection(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client, \
                quick(sockets(client, fake).multiplex_socket([])) as socket:
            await until(lambda: fake.ws_connections() == 1)
            assert fake.subscriptions() == set()

            async def reply(request: dict[str, Any]) -> dict[str, Any]:
                await socket.ws.send(json.dumps(request))
                while True:
                    msg = await next_data(socket)
                    if msg.get("id") == request.get("id") and "stream" not in msg:
                        return msg

            sub = {"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 1}
            assert await reply(sub) == {"result": None, "id": 1}
            assert fake.subscriptions() == {"ethusdt@trade"}
            msg = await next_data(socket)
            assert msg["stream"] == "ethusdt@trade" and msg["data"]["s"] == "ETHUSDT"
            listed = await reply({"method": "LIST_SUBSCRIPTIONS", "id": 2})
            assert listed == {"result": ["ethusdt@trade"], "id": 2}
            unsub = {"method": "UNSUBSCRIBE", "params": ["ethusdt@trade"], "id": 3}
            assert await reply(unsub) == {"result": None, "id": 3}
            assert fake.subscriptions() == set()
            bad = await reply({"method": "SUBSCRIBE", "params": ["nope@kline_9x"], "id": 4})
            assert bad == {"error": {"code": 2, "msg": "Invalid request"}, "id": 4}
    run(scenario())


def test_at_most_1024_streams_per_connection() -> None:
    symbols = [f"FAKE{i}USDT" for i in range(80)]  # synthetic rules: 80 * 14 valid streams
    with FakeBinance(symbols=symbols, tick_s=1.0) as fake:
        names = [f"{s.lower()}@kline_{i}" for s in symbols for i in INTERVALS_MS]
        names += [f"{s.lower()}@trade" for s in symbols]

        async def scenario() -> None:
            async with websockets.connect(fake.stream_url + "ws", close_timeout=0.5) as ws:
                async def reply(params: list[str], ident: int) -> Any:
                    await ws.send(json.dumps({"method": "SUBSCRIBE", "params": params,
                                              "id": ident}))
                    return json.loads(await asyncio.wait_for(ws.recv(), 5))

                assert await reply(names[:1024], 1) == {"result": None, "id": 1}
                assert len(fake.subscriptions()) == 1024
                too_many = await reply(names[1024:1025], 2)
                assert too_many == {"error": {"code": 2, "msg": "Invalid request"}, "id": 2}
                assert names[1024] not in fake.subscriptions()
        run(scenario())


def test_drop_streams_and_python_binance_reconnects(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client, \
                quick(sockets(client, fake).kline_socket("BTCUSDT", "1s")) as socket:
            first = await next_data(socket)
            assert first["e"] == "kline"
            fake.drop_streams()
            assert fake.ws_connections() == 0
            while (await asyncio.wait_for(socket.recv(), 5))["e"] != "error":
                pass  # messages queued before the cut come first
            await until(lambda: fake.ws_connections() == 1, timeout=8,
                        what="python-binance to reconnect")
            again = await next_data(socket)
            assert again["e"] == "kline" and again["E"] > first["E"]
    run(scenario())


def test_server_shutdown_event_then_close_and_python_binance_reconnects(
        fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client, \
                quick(sockets(client, fake).kline_socket("BTCUSDT", "1s")) as socket:
            await next_data(socket)
            fake.server_shutdown(grace_s=0.3)
            while (await asyncio.wait_for(socket.recv(), 5))["e"] != "serverShutdown":
                pass
            while (await asyncio.wait_for(socket.recv(), 5))["e"] != "error":
                pass  # the close that follows: python-binance reports it and reconnects
            await until(lambda: fake.ws_connects() == 2 and fake.ws_connections() == 1,
                        timeout=8, what="python-binance to reconnect")
            assert (await next_data(socket))["e"] == "kline"
    run(scenario())


def test_connection_lifetime_closes_with_a_close_frame(fake: FakeBinance) -> None:
    async def scenario() -> None:
        fake.set_connection_lifetime(0.5)
        async with websockets.connect(fake.stream_url + "ws/btcusdt@trade",
                                      close_timeout=0.5) as ws:
            opened = time.monotonic()
            with pytest.raises(websockets.ConnectionClosedOK) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert time.monotonic() - opened >= 0.4
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        async with websockets.connect(fake.ws_api_url, close_timeout=0.5) as api:
            with pytest.raises(websockets.ConnectionClosedOK):
                await asyncio.wait_for(api.recv(), 5)  # the WebSocket API ends the same way
    run(scenario())


def test_more_than_five_messages_a_second_closes_the_connection(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with websockets.connect(fake.stream_url + "ws", close_timeout=0.5) as ws:
            for i in range(6):
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
            replies = 0
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
                    replies += 1
            assert replies == 5
        await until(lambda: fake.ws_connections() == 0)
    run(scenario())


def test_invalid_stream_name_is_refused(fake: FakeBinance) -> None:
    async def scenario() -> None:
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(fake.stream_url + "ws/btcusdt@kline_7m"):
                pass
        async with websockets.connect(fake.stream_url + "stream?streams=") as ws:
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 9}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"result": [], "id": 9}
    run(scenario())


# -- lifecycle -------------------------------------------------------------------------------
def test_stop_is_bounded_and_idempotent_with_clients_connected() -> None:
    fake = FakeBinance(symbols=["BTCUSDT"], tick_s=0.05).start()

    async def scenario() -> None:
        async with client_for(fake, key="test-key", secret="test-secret") as client:
            await client.get_account()  # a keep-alive HTTP connection stays open
            async with websockets.connect(fake.stream_url + "ws/btcusdt@trade") as ws:
                await asyncio.wait_for(ws.recv(), 5)
                started = time.monotonic()
                await asyncio.to_thread(fake.stop)
                assert time.monotonic() - started < 3.0
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    while True:
                        await asyncio.wait_for(ws.recv(), 5)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001

    try:
        run(scenario())
    finally:
        fake.stop()  # idempotent: also when the scenario failed before its own stop
    with pytest.raises(RuntimeError):
        fake.start()


def test_runnable_by_hand() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.binance", "--port", "0", "--api-key", "K",
         "--api-secret", "S", "--balance", "USDT=5", "--symbol", "BTCUSDT"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)  # never an unbounded read
        assert ready, "the fake printed nothing within 20 s"
        rest_line, stream_line = proc.stdout.readline(), proc.stdout.readline()
        assert rest_line.split()[0] == "REST" and stream_line.startswith("streams ws://")
        url = rest_line.split()[1] + "/v3/ping"
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no env proxy
        with direct.open(url, timeout=5) as response:
            assert json.loads(response.read()) == {}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
