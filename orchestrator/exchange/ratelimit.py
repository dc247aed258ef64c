"""One rate limiter for the whole account and IP, shared by every symbol.

Binance counts request weight per IP per minute and orders per account per 10 s and per day,
in windows aligned to the clock. The limiter keeps its own count of what it sent in each
window, takes the larger of that and what the exchange reports (``X-MBX-USED-WEIGHT-1M``,
``X-MBX-ORDER-COUNT-10S/1D``), and makes callers wait for the next window rather than go
over a safety fraction of a limit. A 429 or 418 stops every caller until its Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from multibot.errors import ErrorCode, MultibotError

log = logging.getLogger(__name__)

_INTERVAL_S = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86400}
_HEADER_UNIT = {"S": "SECOND", "M": "MINUTE", "H": "HOUR", "D": "DAY"}
SAFETY = 0.9  # never plan to use more than this fraction of a limit


@dataclass
class _Window:
    kind: str  # REQUEST_WEIGHT | ORDERS
    seconds: int
    limit: int
    start: float = 0.0  # wall-clock start of the current window
    used: int = 0

    def roll(self, now: float) -> None:
        start = now - now % self.seconds
        if start != self.start:
            self.start, self.used = start, 0

    @property
    def budget(self) -> int:
        return max(1, int(self.limit * SAFETY))


@dataclass(frozen=True)
class LimiterSnapshot:
    used_weight: int  # in the current minute
    weight_limit: int
    blocked_s: float  # seconds until a 429/418 back-off ends (0 = none)
    throttled: int  # times a caller had to wait for a window


def _windows(rate_limits: Iterable[Mapping[str, Any]]) -> list[_Window]:
    windows = []
    for item in rate_limits:
        kind = item.get("rateLimitType")
        if kind not in ("REQUEST_WEIGHT", "ORDERS"):
            continue  # RAW_REQUESTS is per 5 min and far above what weight allows
        seconds = _INTERVAL_S.get(str(item.get("interval")), 60) * int(item.get("intervalNum", 1))
        windows.append(_Window(kind=str(kind), seconds=seconds, limit=int(item["limit"])))
    return windows


DEFAULT_LIMITS = [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 50},
    {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 160000},
]


class RateLimitWait(MultibotError):
    """Waiting for the limits would take longer than the caller allows."""

    CODE = ErrorCode.BUSY


class RateLimiter:
    def __init__(self, rate_limits: Iterable[Mapping[str, Any]] = DEFAULT_LIMITS,
                 clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._windows = _windows(rate_limits) or _windows(DEFAULT_LIMITS)
        self._blocked_until = 0.0
        self.offset_s = 0.0  # the exchange's clock minus ours: windows follow its clock
        self.throttled = 0

    def set_limits(self, rate_limits: Iterable[Mapping[str, Any]]) -> None:
        """Adopt the exchange's own limits (``exchangeInfo.rateLimits``)."""
        windows = _windows(rate_limits)
        if windows:
            self._windows = windows

    def _now(self) -> float:
        return self._clock() + self.offset_s

    def _wait_needed(self, weight: int, orders: int) -> float:
        now = self._now()
        wait = max(0.0, self._blocked_until - now)
        for w in self._windows:
            w.roll(now)
            cost = weight if w.kind == "REQUEST_WEIGHT" else orders
            if cost and w.used + cost > w.budget:
                wait = max(wait, w.start + w.seconds - now + 0.05)
        return wait

    async def acquire(self, weight: int, orders: int = 0, max_wait_s: float = 600.0) -> None:
        """Wait until ``weight`` (and ``orders`` new orders) fit, then count them as used;
        RateLimitWait, at once, when that would take longer than ``max_wait_s`` in all.
        No lock: the check and the count happen between two awaits, so a waiter never holds
        up a caller whose request fits now (a cancel behind an order waiting for its window)."""
        deadline = self._clock() + max_wait_s
        while (wait := self._wait_needed(weight, orders)) > 0:
            if self._clock() + wait > deadline:
                raise RateLimitWait(f"the rate limits need a {wait:.0f}s wait")
            self.throttled += 1
            log.info("rate limit: waiting %.2fs before sending (weight %d, orders %d)",
                     wait, weight, orders)
            await asyncio.sleep(wait)
        for w in self._windows:
            w.used += weight if w.kind == "REQUEST_WEIGHT" else orders

    def observe(self, headers: Mapping[str, str]) -> None:
        """Take the exchange's counts from a response's headers (they win when higher)."""
        now = self._now()
        for name, value in headers.items():
            upper = name.upper()
            if upper.startswith("X-MBX-USED-WEIGHT-"):
                kind, suffix = "REQUEST_WEIGHT", upper.removeprefix("X-MBX-USED-WEIGHT-")
            elif upper.startswith("X-MBX-ORDER-COUNT-"):
                kind, suffix = "ORDERS", upper.removeprefix("X-MBX-ORDER-COUNT-")
            else:
                continue
            seconds = _parse_interval(suffix)
            if seconds is None or not value.isdigit():
                continue
            for w in self._windows:
                if w.kind == kind and w.seconds == seconds:
                    w.roll(now)
                    w.used = max(w.used, int(value))

    def back_off(self, retry_after_s: float, banned: bool) -> None:
        """A 429 (or a 418 ban): nobody sends anything until ``retry_after_s`` from now."""
        until = self._now() + max(retry_after_s, 1.0)
        if until > self._blocked_until:
            self._blocked_until = until
            log.warning("exchange says %s: every request waits %.1fs (Retry-After)",
                        "IP banned (418)" if banned else "too many requests (429)",
                        retry_after_s)

    def snapshot(self) -> LimiterSnapshot:
        now = self._now()
        weight = next((w for w in self._windows if w.kind == "REQUEST_WEIGHT"), None)
        if weight is not None:
            weight.roll(now)
        return LimiterSnapshot(
            used_weight=weight.used if weight else 0,
            weight_limit=weight.limit if weight else 0,
            blocked_s=round(max(0.0, self._blocked_until - now), 3),
            throttled=self.throttled,
        )

    def weight_budget_per_s(self) -> float:
        """Weight per second a background poller may spend: a quarter of the minute limit."""
        weight = next((w for w in self._windows if w.kind == "REQUEST_WEIGHT"), None)
        return (weight.limit / weight.seconds / 4) if weight else 25.0


def _parse_interval(suffix: str) -> int | None:
    """"1M" -> 60, "10S" -> 10, "1D" -> 86400."""
    number, unit = suffix[:-1], _HEADER_UNIT.get(suffix[-1:])
    if not number.isdigit() or unit is None:
        return None
    return int(number) * _INTERVAL_S[unit]
