"""Everything the fake knows, behind one lock: symbols, market, account, limits, faults, the
request log and the server clock. The REST handlers, the market's tick and the test's
inspection calls all go through here, from different threads."""

from __future__ import annotations

import copy
import logging
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from tests.fakes.binance.auth import Signer
from tests.fakes.binance.errors import ApiError
from tests.fakes.binance.faults import Faults, LateBookings
from tests.fakes.binance.limits import RateLimiter
from tests.fakes.binance.market import INTERVALS_MS, Event, Market
from tests.fakes.binance.matching import Account
from tests.fakes.binance.streams import StreamHub
from tests.fakes.binance.symbols import bundled_exchange_info, load_rules, start_price
from tests.fakes.binance.ws_api import WsApi

log = logging.getLogger(__name__)
_STREAM = re.compile(r"^([a-z0-9]+)@(trade|kline_([0-9]+[smhd]))$")
MAX_RECORDS = 100_000


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    params: dict[str, str]  # query and body, without the signature
    status: int
    code: int | None
    at: float = 0.0  # time.monotonic() when it was answered


def wall_ms() -> int:
    return int(time.time() * 1000)


class FakeState:
    def __init__(self, *, api_key: str, api_secret: str, balances: dict[str, str],
                 symbols: list[str] | None, seed: int, tick_s: float, volatility: float,
                 weight_limit: int, orders_10s_limit: int, orders_1d_limit: int,
                 start_prices: dict[str, float] | None, partial_fills: bool,
                 weight_window_s: float, ban_s: float) -> None:
        self.lock = threading.RLock()
        self.rules = load_rules(symbols)
        self.tick_s = tick_s
        starts = {name: start_price(r, start_prices) for name, r in self.rules.items()}
        self.market = Market(self.rules, starts, seed, volatility, tick_s, wall_ms())
        self.account = Account(self.rules, self.market, balances, partial_fills, seed)
        self.limiter = RateLimiter(weight_limit, orders_10s_limit, orders_1d_limit,
                                   weight_window_s, ban_s)
        self.faults = Faults()
        self.late = LateBookings()
        self.signer = Signer(api_key, api_secret)
        self.records: deque[RequestRecord] = deque(maxlen=MAX_RECORDS)
        self.clock_offset_ms = 0
        self.hub = StreamHub(self.lock, self.valid_stream)
        self.ws_api = WsApi(self.lock, self.verify_ws)
        self._lower = {name.lower(): name for name in self.rules}

    def server_ms(self) -> int:
        """The server's clock: wall time moved by set_clock_offset (the market keeps wall time,
        so bars stay continuous when a test skews the clock)."""
        return wall_ms() + self.clock_offset_ms

    def valid_stream(self, name: str) -> bool:
        match = _STREAM.match(name)
        if not match or match.group(1) not in self._lower:
            return False
        return match.group(3) is None or match.group(3) in INTERVALS_MS

    def tick(self) -> list[Event]:
        """One market tick, then the resting orders it crosses."""
        wanted = self.hub.wanted()
        with self.lock:
            events = self.market.advance(wall_ms(), wanted)
            self.book_late(time.monotonic())
            self.account.on_tick(self.server_ms())
        self.flush_user_events()
        return events

    def flush_user_events(self) -> None:
        """Push the account's queued events to the user data stream subscriptions."""
        with self.lock:
            events, self.account.outbox = self.account.outbox, []
        self.ws_api.push(events)

    def verify_ws(self, params: dict[str, str]) -> None:
        """A signed WebSocket API request: the payload is its params but the signature,
        sorted by name and URL-encoded (what python-binance signs). It is checked as the
        query string of a REST request would be (the signature percent-encoded, as REST
        clients send it: an Ed25519 or RSA one is base64)."""
        payload = urlencode(sorted((k, v) for k, v in params.items() if k != "signature"))
        query = f"{payload}&signature={quote(params.get('signature', ''), safe='')}"
        self.signer.check(params.get("apiKey"), query, "", params, self.server_ms())

    def book_late(self, now: float) -> None:
        """The matching engine books the requests the API gave up on whose time has come."""
        for booking in self.late.take_due(now):
            try:
                self.account.place(booking.symbol, booking.params, self.server_ms())
            except ApiError as error:  # rejected by the engine: it never appears
                log.info("a late booking of %s was rejected: %s", booking.symbol, error.msg)

    def exchange_info(self, symbols: list[str]) -> dict[str, Any]:
        info = bundled_exchange_info()
        limits = self.limiter
        return {
            "timezone": "UTC", "serverTime": self.server_ms(),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": limits.weight_limit},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
                 "limit": limits.orders_10s_limit},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1,
                 "limit": limits.orders_1d_limit},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5,
                 "limit": 61000},
            ],
            "exchangeFilters": self._exchange_filters(info),
            "symbols": [self._symbol_info(s) for s in symbols],
        }

    def _exchange_filters(self, info: dict[str, Any]) -> list[dict[str, Any]]:
        filters = [f for f in copy.deepcopy(info.get("exchangeFilters", []))
                   if f.get("filterType") != "EXCHANGE_MAX_NUM_ORDERS"]
        if self.account.max_open_orders:
            filters.append({"filterType": "EXCHANGE_MAX_NUM_ORDERS",
                            "maxNumOrders": self.account.max_open_orders})
        return filters

    def _symbol_info(self, symbol: str) -> dict[str, Any]:
        info = copy.deepcopy(self.rules[symbol].info)
        info["status"] = self.account.status[symbol]
        return info
