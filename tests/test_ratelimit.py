"""The account-wide rate limiter, on a clock the test controls."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.exchange.ratelimit import RateLimiter, RateLimitWait

LIMITS = [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 100},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 10},
    {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 9},
]


class Clock:
    def __init__(self, now: float = 1_000_040.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_callers_wait_for_the_next_window_instead_of_going_over() -> None:
    clock = Clock()  # 20 s into a minute
    limiter = RateLimiter(LIMITS, clock=clock)
    slept: list[float] = []

    async def main() -> None:
        real_sleep = asyncio.sleep

        async def fake_sleep(seconds: float) -> None:
            slept.append(seconds)
            clock.now += seconds
            await real_sleep(0)

        asyncio.sleep = fake_sleep  # type: ignore[assignment]
        try:
            for _ in range(9):  # 90 of the 90 allowed (limit 100 x safety 0.9)
                await limiter.acquire(10)
            assert not slept
            await limiter.acquire(10)  # would be 100: waits for the next minute
        finally:
            asyncio.sleep = real_sleep

    asyncio.run(main())
    assert slept and 39.9 < sum(slept) < 41  # the 40 s left of the minute
    assert limiter.snapshot().used_weight == 10 and limiter.throttled == 1


def test_exchange_counts_win_and_orders_have_their_own_window() -> None:
    clock = Clock()
    limiter = RateLimiter(LIMITS, clock=clock)
    limiter.observe({"X-MBX-USED-WEIGHT-1M": "85", "x-mbx-order-count-10s": "9",
                     "Content-Type": "application/json"})
    assert limiter.snapshot().used_weight == 85

    async def try_order() -> None:
        await limiter.acquire(1, orders=1, max_wait_s=0.5)

    with pytest.raises(RateLimitWait):  # 9 + 1 > 10 x 0.9: the 10 s window must roll first
        asyncio.run(try_order())
    clock.now += 10
    asyncio.run(try_order())


def test_429_and_418_block_everyone_until_retry_after() -> None:
    clock = Clock()
    limiter = RateLimiter(LIMITS, clock=clock)
    limiter.back_off(3.0, banned=False)
    assert limiter.snapshot().blocked_s == 3.0

    async def blocked() -> None:
        await limiter.acquire(1, max_wait_s=1.0)

    with pytest.raises(RateLimitWait):
        asyncio.run(blocked())
    limiter.back_off(120.0, banned=True)
    clock.now += 119
    assert limiter.snapshot().blocked_s == 1.0
    clock.now += 2
    asyncio.run(blocked())
    assert limiter.weight_budget_per_s() == pytest.approx(100 / 60 / 4)
