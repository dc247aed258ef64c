"""``FakeBinance``: the fake Binance spot server in a background thread, and the thread-safe
inspection and fault API a test uses while the real python-binance client talks to it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from decimal import Decimal
from typing import Any

from aiohttp import web

from tests.fakes.binance import rest
from tests.fakes.binance.errors import ApiError, FakeBinanceError
from tests.fakes.binance.faults import normalize_path
from tests.fakes.binance.liquidity import liquidity_of
from tests.fakes.binance.state import FakeState, RequestRecord
from tests.fakes.binance.symbols import with_filter

log = logging.getLogger(__name__)
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


class FakeBinance:
    """A local Binance spot server (REST + market streams) on 127.0.0.1."""

    def __init__(self, api_key: str = "test-key", api_secret: str = "test-secret", *,
                 balances: dict[str, str] | None = None, symbols: list[str] | None = None,
                 seed: int = 1, tick_s: float = 0.1, volatility: float = 0.0005,
                 weight_limit: int = 6000, orders_10s_limit: int = 100,
                 orders_1d_limit: int = 200000, start_prices: dict[str, float] | None = None,
                 partial_fills: bool = False, weight_window_s: float = 60.0,
                 ban_s: float | None = None, port: int = 0) -> None:
        if tick_s <= 0:
            raise ValueError("tick_s must be > 0")
        self._state = FakeState(
            api_key=api_key, api_secret=api_secret,
            balances=balances if balances is not None else {"USDT": "10000"},
            symbols=symbols, seed=seed, tick_s=tick_s, volatility=volatility,
            weight_limit=weight_limit, orders_10s_limit=orders_10s_limit,
            orders_1d_limit=orders_1d_limit, start_prices=start_prices,
            partial_fills=partial_fills, weight_window_s=weight_window_s,
            ban_s=2 * weight_window_s if ban_s is None else ban_s)
        self._requested_port = port
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._stopped = False

    def __repr__(self) -> str:  # never the secret
        return f"FakeBinance(port={self._port})"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FakeBinance:
        if self._thread is not None:
            raise RuntimeError("FakeBinance already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._requested_port))
        self._port = sock.getsockname()[1]
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(sock, ready, failure),
                                        name=f"fake-binance-{self._port}", daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT_S):
            raise RuntimeError("FakeBinance did not start in time")
        if failure:
            raise RuntimeError("FakeBinance failed to start") from failure[0]
        return self

    def _run(self, sock: socket.socket, ready: threading.Event,
             failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(sock, ready))
        except BaseException as exc:  # reported to start(), which re-raises it
            failure.append(exc)
        finally:
            ready.set()
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self, sock: socket.socket, ready: threading.Event) -> None:
        state = self._state
        self._stopping = asyncio.Event()
        app = web.Application()

        async def on_rest(request: web.Request) -> web.StreamResponse:
            return await rest.handle(state, request)

        state.ws_api.attach(asyncio.get_running_loop())
        app.router.add_get("/ws-api/v3", state.ws_api.handle)
        app.router.add_get("/ws", state.hub.handle)
        app.router.add_get("/ws/{tail:.*}", state.hub.handle)
        app.router.add_get("/stream", state.hub.handle)
        app.router.add_route("*", "/{tail:.*}", on_rest)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        ticker = asyncio.create_task(self._tick_forever())
        ready.set()
        try:
            await self._stopping.wait()
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await state.hub.close_all()
            await state.ws_api.close_all()
            await runner.cleanup()

    async def _tick_forever(self) -> None:
        """A tick every tick_s on a fixed schedule; late ticks are not caught up in a burst."""
        tick_s = self._state.tick_s
        due = time.monotonic()
        while True:
            due += tick_s
            delay = due - time.monotonic()
            if delay < -tick_s:
                due, delay = time.monotonic(), 0.0
            await asyncio.sleep(max(delay, 0.0))
            try:
                self._state.hub.publish(self._state.tick())
            except Exception:
                log.exception("fake Binance market tick failed")

    def stop(self) -> None:
        """Close the websockets, stop the server and join its thread (idempotent, bounded)."""
        if self._stopped or self._thread is None:
            self._stopped = True
            return
        self._stopped = True
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        self._thread.join(STOP_TIMEOUT_S)
        if self._thread.is_alive():
            log.warning("fake Binance thread did not stop within %.0f s", STOP_TIMEOUT_S)

    def __enter__(self) -> FakeBinance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeBinance not started")
        return self._port

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def stream_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def ws_api_url(self) -> str:
        """The WebSocket API (user data stream): python-binance's ``WS_API_URL``."""
        return f"ws://127.0.0.1:{self.port}/ws-api/v3"

    # -- inspection (thread-safe copies) -----------------------------------------------------
    def orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        with self._state.lock:
            return [o.view() for o in self._state.account.orders
                    if symbol is None or o.symbol == symbol]

    def open_orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        with self._state.lock:
            return self._state.account.open_orders(symbol)

    def trades(self, symbol: str | None = None) -> list[dict[str, Any]]:
        with self._state.lock:
            return [dict(t) for t in self._state.account.trades
                    if symbol is None or t["symbol"] == symbol]

    def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        with self._state.lock:
            return {a: (v[0], v[1]) for a, v in self._state.account.balances.items()}

    def requests(self) -> list[RequestRecord]:
        with self._state.lock:
            return list(self._state.records)

    def count(self, method: str, path: str, status: int | None = None) -> int:
        method, path = method.upper(), normalize_path(path)
        return sum(1 for r in self.requests() if r.method == method and r.path == path
                   and (status is None or r.status == status))

    def price(self, symbol: str) -> Decimal:
        with self._state.lock:
            return self._state.market[symbol].price

    def set_price(self, symbol: str, price: float) -> None:
        """The next tick trades exactly at ``price`` (snapped to the tick grid); MARKET orders
        fill there already; the walk continues from it."""
        if price <= 0:
            raise ValueError("price must be > 0")
        with self._state.lock:
            self._state.market[symbol].set_price(price)

    def set_liquidity(self, symbol: str, levels: list[str] | None = None, level_ticks: int = 1,
                      fill_parts: int = 1) -> None:
        """A thin book for ``symbol``: partial fills and EXPIRED remainders (liquidity.py)."""
        liquidity = liquidity_of(levels, level_ticks, fill_parts)
        if symbol not in self._state.rules:
            raise ValueError(f"{symbol} is not one of this fake's symbols")
        with self._state.lock:
            self._state.account.liquidity[symbol] = liquidity

    def set_maintenance(self, symbol: str | None = None, on: bool = True) -> None:
        """Put ``symbol`` (None: every symbol, the whole exchange) in maintenance, or take it
        out (``on=False``). In maintenance exchangeInfo shows status BREAK, a new order gets
        -2010 "Market is closed." (HTTP 400), resting orders do not fill, and cancels and
        lookups work as usual."""
        with self._state.lock:
            names = list(self._state.rules) if symbol is None else [symbol]
            for name in names:
                if name not in self._state.rules:
                    raise ValueError(f"{name} is not one of this fake's symbols")
                self._state.account.status[name] = "BREAK" if on else "TRADING"

    def set_filter(self, symbol: str, table: dict[str, Any]) -> None:
        """Replace one of ``symbol``'s filters (by filterType) in exchangeInfo and in the
        order checks, e.g. ``{"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 2}`` (the
        market keeps its price grid: change PRICE_FILTER's tickSize at your own risk)."""
        with self._state.lock:
            if symbol not in self._state.rules:
                raise ValueError(f"{symbol} is not one of this fake's symbols")
            self._state.rules[symbol] = with_filter(self._state.rules[symbol], table)

    def set_max_page(self, rows: int = 1000) -> None:
        """allOrders and myTrades answer at most ``rows`` rows a page (Binance: 1000; a
        larger limit is -1130), so a paging test needs only a few trades (history.py)."""
        if not 1 <= rows <= 1000:
            raise ValueError("rows must be 1..1000")
        with self._state.lock:
            self._state.account.max_page = rows

    def set_exchange_max_num_orders(self, count: int) -> None:
        """EXCHANGE_MAX_NUM_ORDERS: open orders per account (0: no limit); over it a new
        order gets -2010 "Filter failure: EXCHANGE_MAX_NUM_ORDERS"."""
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._state.lock:
            self._state.account.max_open_orders = count

    def subscriptions(self) -> set[str]:
        return self._state.hub.wanted()

    def ws_connections(self) -> int:
        return self._state.hub.connections()

    def set_clock_offset(self, ms: int) -> None:
        """From now on the server's clock (serverTime, timestamp checks) is wall time + ms."""
        with self._state.lock:
            self._state.clock_offset_ms = int(ms)

    def add_api_key(self, api_key: str, public_key_pem: str) -> None:
        """Register an API key that signs with Ed25519 or RSA: ``public_key_pem`` is the public
        half of the user's key pair, as uploaded to Binance."""
        with self._state.lock:
            self._state.signer.add_public_key(api_key, public_key_pem)

    def place_external_order(self, symbol: str, side: str, type: str, quantity: str,
                             price: str | None = None,
                             client_order_id: str = "web_external_1") -> dict[str, Any]:
        """An order the same account placed elsewhere (the Binance website): matched and
        booked like any other; the FULL response, or FakeBinanceError if Binance would have
        rejected it."""
        params = {"symbol": symbol, "side": side, "type": type, "quantity": quantity,
                  "newClientOrderId": client_order_id, "newOrderRespType": "FULL"}
        if price is not None:
            params.update(price=price, timeInForce="GTC")
        with self._state.lock:
            if symbol not in self._state.rules:
                raise FakeBinanceError(400, -1121, "Invalid symbol.")
            try:
                return self._state.account.place(symbol, params, self._state.server_ms())
            except ApiError as error:
                raise FakeBinanceError(error.status, error.code, error.msg) from None
            finally:
                self._state.flush_user_events()

    def deposit(self, asset: str, amount: str) -> None:
        """A deposit (a negative amount: a withdrawal) from outside trading; the user data
        stream gets a balanceUpdate and an outboundAccountPosition."""
        with self._state.lock:
            self._state.account.deposit(asset.upper(), Decimal(amount), self._state.server_ms())
        self._state.flush_user_events()

    # -- user data stream faults (ws_api.py) -------------------------------------------------
    def user_stream_subscriptions(self) -> int:
        return self._state.ws_api.subscriptions()

    def drop_user_streams(self) -> None:
        """Cut every WebSocket API connection now (no close frame); their subscriptions die."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._state.ws_api.drop_all(), loop).result(
            STOP_TIMEOUT_S)

    def terminate_user_streams(self) -> None:
        """End every user data stream subscription with eventStreamTerminated; the
        connections stay up (ws_api.py)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._state.ws_api.terminate, self._state.server_ms())

    def push_user_events(self, events: list[Any]) -> None:
        """Push ``events`` to every user data stream subscription as they are (malformed or
        hostile ones too), after the account's own events so far."""
        self._state.flush_user_events()
        self._state.ws_api.push(events)

    def delay_user_events(self, seconds: float) -> None:
        """Push each later user data stream event ``seconds`` after it happened (0: at once)."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self._state.ws_api.event_delay_s = float(seconds)

    def pending_bookings(self) -> int:
        """Order requests answered 5xx by a ``late_booking`` fault and not booked yet."""
        with self._state.lock:
            return len(self._state.late)

    # -- faults ------------------------------------------------------------------------------
    def fail(self, kind: str, times: int = 1, method: str | None = None,
             path: str | None = None, **options: Any) -> None:
        """Arm a fault for the next ``times`` requests matching method/path (see faults.py)."""
        with self._state.lock:
            self._state.faults.arm(kind, times, method, path, options)

    def clear_faults(self) -> None:
        with self._state.lock:
            self._state.faults.clear()

    def server_shutdown(self, grace_s: float = 0.5) -> None:
        """serverShutdown on every market stream connection, each closed ``grace_s`` later
        (streams.py); clients reconnect to the same server, which keeps running."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        now_ms = self._state.server_ms()
        loop.call_soon_threadsafe(self._state.hub.shutdown, now_ms, grace_s)

    def set_connection_lifetime(self, seconds: float | None) -> None:
        """Close each market stream and WebSocket API connection opened from now on
        ``seconds`` after it opened (Binance: 24 h); None: no limit."""
        if seconds is not None and seconds <= 0:
            raise ValueError("seconds must be > 0")
        self._state.hub.lifetime_s = seconds
        self._state.ws_api.lifetime_s = seconds

    def ws_connects(self) -> int:
        """Market stream connections accepted so far (a reconnect counts again)."""
        return self._state.hub.opened

    def drop_streams(self) -> None:
        """Cut every websocket connection now (no close frame); the market keeps running."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(self._state.hub.drop_all(), loop)
        future.result(STOP_TIMEOUT_S)
