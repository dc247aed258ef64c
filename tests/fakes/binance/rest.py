"""The REST API under /api/v3/: routing, weights, the signed-endpoint checks, faults, and the
request log. Every handler is synchronous and runs under the fake's lock, so a request sees
(and leaves) the market and the account in one consistent state."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tests.fakes.binance.errors import ApiError, bad_request, illegal, invalid_symbol, mandatory
from tests.fakes.binance.faults import (
    BEFORE,
    LATE,
    Fault,
    LateBooking,
    before_error,
    server_error,
)
from tests.fakes.binance.history import trades_weight
from tests.fakes.binance.limits import WEIGHT_HEADER
from tests.fakes.binance.market import INTERVALS_MS
from tests.fakes.binance.matching import limit_param, order_id_param
from tests.fakes.binance.state import FakeState, RequestRecord

log = logging.getLogger(__name__)
Params = dict[str, str]


@dataclass(frozen=True)
class Route:
    weight: Callable[[Params], int]
    signed: bool
    handler: Callable[[FakeState, Params], Any]


def _symbol(state: FakeState, params: Params) -> str:
    symbol = params.get("symbol")
    if not symbol:
        raise mandatory("symbol")
    if symbol not in state.rules:
        raise invalid_symbol()
    return symbol


def _exchange_info(state: FakeState, params: Params) -> Any:
    if params.get("symbol"):
        names = [params["symbol"]]
    elif params.get("symbols"):
        try:
            names = json.loads(params["symbols"])
        except ValueError:
            raise illegal("symbols", '["SYMBOL1","SYMBOL2"]') from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise illegal("symbols", '["SYMBOL1","SYMBOL2"]')
    else:
        names = list(state.rules)
    if any(name not in state.rules for name in names):
        raise invalid_symbol()
    return state.exchange_info(names)


def _time_param(params: Params, name: str) -> int | None:
    return order_id_param(params, name)


def _klines(state: FakeState, params: Params) -> Any:
    symbol = _symbol(state, params)
    interval = params.get("interval")
    if not interval:
        raise mandatory("interval")
    if interval not in INTERVALS_MS:
        raise bad_request(-1120, "Invalid interval.")
    start, end = _time_param(params, "startTime"), _time_param(params, "endTime")
    if start is not None and end is not None and start > end:
        raise bad_request(-1023, "Start time is greater than end time.")
    return state.market[symbol].klines(interval, start, end, limit_param(params))


def _open_orders(state: FakeState, params: Params) -> Any:
    symbol = _symbol(state, params) if params.get("symbol") else None
    return state.account.open_orders(symbol)


ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/api/v3/ping"): Route(lambda p: 1, False, lambda s, p: {}),
    ("GET", "/api/v3/time"): Route(lambda p: 1, False,
                                   lambda s, p: {"serverTime": s.server_ms()}),
    ("GET", "/api/v3/exchangeInfo"): Route(lambda p: 20, False, _exchange_info),
    ("GET", "/api/v3/klines"): Route(lambda p: 2, False, _klines),
    ("POST", "/api/v3/order"): Route(lambda p: 1, True, lambda s, p: s.account.place(
        _symbol(s, p), p, s.server_ms())),
    ("GET", "/api/v3/order"): Route(lambda p: 4, True, lambda s, p: s.account.get(
        _symbol(s, p), p)),
    ("DELETE", "/api/v3/order"): Route(lambda p: 1, True, lambda s, p: s.account.cancel(
        _symbol(s, p), p, s.server_ms())),
    ("GET", "/api/v3/openOrders"): Route(lambda p: 6 if p.get("symbol") else 80, True,
                                         _open_orders),
    ("GET", "/api/v3/allOrders"): Route(lambda p: 20, True, lambda s, p: s.account.all_orders(
        _symbol(s, p), p)),
    ("GET", "/api/v3/myTrades"): Route(trades_weight, True, lambda s, p: s.account.my_trades(
        _symbol(s, p), p)),
    ("GET", "/api/v3/account"): Route(lambda p: 20, True,
                                      lambda s, p: s.account.view(s.server_ms())),
}


@dataclass
class Reply:
    status: int
    text: str
    content_type: str
    headers: dict[str, str]
    code: int | None = None


def _process(state: FakeState, method: str, path: str, query: str, body: str, params: Params,
             api_key: str | None, fault: Fault | None) -> Reply:
    """The reply to one request; the caller holds the lock."""
    now = time.time()
    headers: dict[str, str] = {}
    try:
        if fault is not None and fault.kind in BEFORE:
            headers[WEIGHT_HEADER] = str(state.limiter.used_weight(now))
            if fault.kind == "5xx":
                status, text, ctype = server_error(fault)
                return Reply(status, text, ctype, headers)
            error = before_error(fault, state.server_ms())
            if fault.kind == "429" and fault.options.get("ban"):
                state.limiter.arm_retry_after(float(error.headers["Retry-After"]), now)
            raise error
        route = ROUTES.get((method, path))
        headers.update(state.limiter.admit(route.weight(params) if route else 1, now))
        if route is None:
            raise ApiError(404, -1000, f"Unknown endpoint {method} {path}.")
        if route.signed:
            state.signer.check(api_key, query, body, params, state.server_ms())
        if (method, path) == ("POST", "/api/v3/order"):
            headers.update(state.limiter.admit_order(now))
        if fault is not None and fault.kind in LATE:
            symbol = _symbol(state, params)
            if fault.kind == "late_booking":
                delay = float(fault.options.get("delay", 2.0))
                state.late.add(LateBooking(time.monotonic() + delay, symbol, dict(params)))
            status, text, ctype = server_error(fault)
            return Reply(status, text, ctype, headers,
                         -1007 if ctype == "application/json" else None)
        result = route.handler(state, params)
        reply = Reply(200, json.dumps(result), "application/json", headers)
    except ApiError as error:
        headers.update(error.headers)
        reply = Reply(error.status, json.dumps(error.body()), "application/json", headers,
                      error.code)
    except Exception:
        log.exception("fake Binance failed on %s %s", method, path)
        reply = Reply(500, json.dumps({"code": -1000, "msg": "An unknown error occurred while "
                                       "processing the request."}), "application/json",
                      headers, -1000)
    if fault is not None and fault.kind == "5xx_after_accept":
        status, text, ctype = server_error(fault)
        reply = Reply(status, text, ctype, headers, -1007 if ctype == "application/json" else None)
    return reply


async def handle(state: FakeState, request: web.Request) -> web.StreamResponse:
    body = (await request.read()).decode("utf-8", "replace")
    query = request.rel_url.raw_query_string
    method, path = request.method, request.path
    params: Params = dict(parse_qsl(query, keep_blank_values=True))
    params.update(parse_qsl(body, keep_blank_values=True))
    with state.lock:
        fault = state.faults.take(method, path)
    if fault is not None and fault.kind == "slow":
        await asyncio.sleep(float(fault.options.get("delay", 1.0)))
        fault = None
    with state.lock:
        reply = _process(state, method, path, query, body, params,
                         request.headers.get("X-MBX-APIKEY"), fault)
        recorded = {k: v for k, v in params.items() if k != "signature"}
        state.records.append(RequestRecord(method, path, recorded, reply.status, reply.code,
                                           time.monotonic()))
    state.flush_user_events()
    return web.Response(status=reply.status, text=reply.text, content_type=reply.content_type,
                        headers=reply.headers)
