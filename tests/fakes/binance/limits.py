"""Binance's REST limits: request weight per minute (429, then 418 for a client that does not
wait out the Retry-After), and new orders per 10 s and per day (429 -1015).

Windows are fixed and aligned to the wall clock, as Binance's are. The minute can be shrunk
(``weight_window_s``) so a test reaches a window's end quickly."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tests.fakes.binance.errors import ApiError

WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
ORDER_10S_HEADER = "X-MBX-ORDER-COUNT-10S"
ORDER_1D_HEADER = "X-MBX-ORDER-COUNT-1D"
_DAY_S = 86_400.0


@dataclass
class _Window:
    length_s: float
    index: int = -1
    used: int = 0

    def current(self, now: float) -> int:
        index = math.floor(now / self.length_s)
        if index != self.index:
            self.index, self.used = index, 0
        return self.used

    def seconds_left(self, now: float) -> int:
        return max(1, math.ceil((self.index + 1) * self.length_s - now))


class RateLimiter:
    def __init__(self, weight_limit: int, orders_10s_limit: int, orders_1d_limit: int,
                 weight_window_s: float, ban_s: float) -> None:
        self.weight_limit = weight_limit
        self.orders_10s_limit = orders_10s_limit
        self.orders_1d_limit = orders_1d_limit
        self.ban_s = ban_s
        self._weight = _Window(weight_window_s)
        self._orders_10s = _Window(10.0)
        self._orders_1d = _Window(_DAY_S)
        self._retry_until = 0.0   # the last 429's Retry-After runs until then
        self._banned_until = 0.0

    def used_weight(self, now: float) -> int:
        return self._weight.current(now)

    def admit(self, weight: int, now: float) -> dict[str, str]:
        """Count a request's weight; its headers, or raise the 429/418 (headers included)."""
        used = self._weight.current(now) + weight
        self._weight.used = used
        headers = {WEIGHT_HEADER: str(used)}
        if now < self._banned_until:
            raise self._banned(now, headers)
        if now < self._retry_until:
            self._banned_until = now + self.ban_s  # it did not wait: Binance bans the IP
            raise self._banned(now, headers)
        if used > self.weight_limit:
            retry = self._weight.seconds_left(now)
            self._retry_until = now + retry
            raise ApiError(429, -1003, f"Too many requests; current limit of IP(127.0.0.1) is "
                                       f"{self.weight_limit} requests per minute. Please use "
                                       "the websocket for live updates to avoid polling the "
                                       "API.", {**headers, "Retry-After": str(retry)})
        return headers

    def arm_retry_after(self, seconds: float, now: float) -> None:
        """An injected 429 that should ban a client ignoring it, like a real one."""
        self._retry_until = max(self._retry_until, now + seconds)

    def _banned(self, now: float, headers: dict[str, str]) -> ApiError:
        retry = max(1, math.ceil(self._banned_until - now))
        until_ms = int(self._banned_until * 1000)
        return ApiError(418, -1003, f"Way too many requests; IP(127.0.0.1) banned until "
                                    f"{until_ms}. Please use the websocket for live updates "
                                    "to avoid bans.", {**headers, "Retry-After": str(retry)})

    def admit_order(self, now: float) -> dict[str, str]:
        """Count one new order against the 10 s and day limits (429 -1015 when over)."""
        count_10s = self._orders_10s.current(now)
        count_1d = self._orders_1d.current(now)
        for count, limit, name in ((count_10s, self.orders_10s_limit, "TEN_SECONDS"),
                                   (count_1d, self.orders_1d_limit, "DAY")):
            if count >= limit:
                window = self._orders_10s if name == "TEN_SECONDS" else self._orders_1d
                raise ApiError(429, -1015, f"Too many new orders; current limit is {limit} "
                                           f"orders per {name}.",
                               {ORDER_10S_HEADER: str(count_10s), ORDER_1D_HEADER: str(count_1d),
                                "Retry-After": str(window.seconds_left(now))})
        self._orders_10s.used = count_10s + 1
        self._orders_1d.used = count_1d + 1
        return {ORDER_10S_HEADER: str(count_10s + 1), ORDER_1D_HEADER: str(count_1d + 1)}
