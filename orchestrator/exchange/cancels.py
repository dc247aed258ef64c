"""Cancels not yet confirmed by the exchange: tried again with backoff until the exchange says
the order is final (cancelled, filled, expired). While one is pending, its symbol places
nothing new: a new order must not race a resting one that may still fill."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["PendingCancels"]

BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)  # waits before each retry


@dataclass
class _Pending:
    why: str
    attempts: int
    due: float  # monotonic


class PendingCancels:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pending: dict[tuple[str, str], _Pending] = {}

    def failed(self, symbol: str, client_order_id: str, why: str) -> None:
        """A cancel attempt did not end in a confirmed final state: try again later."""
        key = (symbol, client_order_id)
        pending = self._pending.get(key)
        attempts = 0 if pending is None else pending.attempts + 1
        wait = BACKOFF_S[min(attempts, len(BACKOFF_S) - 1)]
        self._pending[key] = _Pending(why, attempts, self._clock() + wait)

    def done(self, symbol: str, client_order_id: str) -> None:
        self._pending.pop((symbol, client_order_id), None)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._pending

    def due(self) -> list[tuple[str, str]]:
        """(symbol, client order id) of the cancels whose next try is due."""
        now = self._clock()
        return [key for key, pending in self._pending.items() if pending.due <= now]

    def of(self, symbol: str) -> list[tuple[str, str]]:
        """(client order id, why the last try failed) of ``symbol``'s pending cancels."""
        return [(coid, p.why) for (s, coid), p in self._pending.items() if s == symbol]
