"""The runner's bookkeeping of what it must try again: exits until flat, and cancels until an
update confirms the order final. Policy (when to exit, what to cancel) stays in the runner;
this module only keeps the times and counts, against the runner's clock.
"""

from __future__ import annotations

from multibot.market.orders import OrderType
from multibot.wire.protocol import CancelOrder

FIRST_RETRY_S = 1.0  # the first wait between two tries; it doubles after each ...
MAX_RETRY_S = 30.0  # ... up to this: an exchange in maintenance is asked twice a minute
EXPIRIES_BEFORE_MARKET = 3  # LIMIT exits that expired unfilled before exits go as MARKET
CANCEL_ANSWER_S = 30.0  # a cancel with no answer at all is sent again after this


def backoff(tries: int) -> float:
    """The wait after the ``tries``-th try (1, 2, 4, ... up to MAX_RETRY_S)."""
    return min(FIRST_RETRY_S * 2.0 ** max(tries - 1, 0), MAX_RETRY_S)


class ExitPlan:
    """The tries at one flat decision: the first SELL goes at once (a normal order when this
    process made the decision), every further one after a growing wait and as an
    ``exit_retry``; after a few LIMIT exits expired unfilled, exits go as MARKET orders."""

    def __init__(self) -> None:
        self.tries = 0
        self.expiries = 0
        self.next_at = 0.0  # the runner's clock: no try before this
        # a flat decision this process made and no SELL has carried out yet; False after a
        # restart, where the decision was made (and journaled) by the process before
        self.decided = False

    def decide(self) -> None:
        """The target became flat on a live bar: a fresh decision."""
        self.reset()
        self.decided = True

    def reset(self) -> None:
        """Flat (or long again): the next exit starts from scratch."""
        self.tries = self.expiries = 0
        self.next_at = 0.0
        self.decided = False

    def ready(self, now: float) -> bool:
        return now >= self.next_at

    def tried(self, now: float) -> bool:
        """Count a try sent at ``now``; True if it is a retry (not the decision's own order)."""
        retry = not self.decided
        self.decided = False
        self.tries += 1
        self.next_at = now + backoff(self.tries)
        return retry

    def expired(self) -> None:
        """A LIMIT exit ended unfilled (or partly filled)."""
        self.expiries += 1

    def order_type(self, configured: OrderType) -> OrderType:
        return OrderType.MARKET if self.expiries >= EXPIRIES_BEFORE_MARKET else configured


class Cancels:
    """Cancels asked of the broker and not yet confirmed by a final OrderUpdate. One the
    broker refused (it could not reach the exchange, the exchange said no) is asked again
    after a growing wait; one never answered, after CANCEL_ANSWER_S."""

    def __init__(self) -> None:
        self._due: dict[str, float] = {}  # client order id -> when to ask again
        self._refusals: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self._due)

    def __contains__(self, client_order_id: object) -> bool:
        return client_order_id in self._due

    def ask(self, coids: list[str], now: float) -> list[CancelOrder]:
        """Cancels of those of ``coids`` not already asked."""
        fresh = [c for c in coids if c not in self._due]
        for coid in fresh:
            self._due[coid] = now + CANCEL_ANSWER_S
        return [CancelOrder(client_order_id=c) for c in fresh]

    def settled(self, client_order_id: str) -> None:
        """The order is final (or unknown to the broker): nothing more to ask."""
        if self._due.pop(client_order_id, None) is not None:
            self._refusals.pop(client_order_id, None)

    def refused(self, client_order_id: str, now: float) -> bool:
        """The broker answered the cancel with an error: ask again later. False if it was
        not being cancelled (already settled)."""
        if client_order_id not in self._due:
            return False
        refusals = self._refusals[client_order_id] = self._refusals.get(client_order_id, 0) + 1
        self._due[client_order_id] = now + backoff(refusals)
        return True

    def due(self, now: float) -> list[CancelOrder]:
        """The cancels to ask again now."""
        again = [c for c, at in self._due.items() if at <= now]
        for coid in again:
            self._due[coid] = now + CANCEL_ANSWER_S
        return [CancelOrder(client_order_id=c) for c in again]

    def wake_at(self) -> float | None:
        return min(self._due.values()) if self._due else None
