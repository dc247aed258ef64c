"""What the orchestrator needs from a feed.

Two kinds: a ``ClockedFeed`` (replay, synthetic) produces the next bar of every symbol when
the fleet's clock calls ``step()``; a ``StreamingFeed`` (binance) delivers closed bars as the
exchange publishes them, through the ``on_bars`` callback given to ``run()``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

from multibot.errors import ErrorCode, MultibotError
from multibot.market.bar import (
    HISTORY_LIMIT as HISTORY_LIMIT,  # bars of warm-up history a worker may ask for
    Bar,
)
from multibot.wire.protocol import SymbolRules


class UnknownSymbol(MultibotError):
    """The feed has no data for this symbol; the message lists what is available."""

    CODE = ErrorCode.UNKNOWN_SYMBOL


class FeedError(MultibotError):
    """The feed could not serve a symbol right now (e.g. the exchange did not answer)."""

    CODE = ErrorCode.NOT_AVAILABLE


class Feed(abc.ABC):
    name: str
    interval: str

    @abc.abstractmethod
    def validate(self, symbol: str) -> None:
        """Raise UnknownSymbol with a helpful message if the symbol cannot be served."""

    @abc.abstractmethod
    async def add(self, symbol: str) -> SymbolRules:
        """Start serving a symbol (hot-add); returns its exchange rules. FeedError if the
        symbol cannot be served right now."""

    @abc.abstractmethod
    def remove(self, symbol: str) -> None: ...

    @abc.abstractmethod
    def history(self, symbol: str, limit: int) -> list[Bar]:
        """The last ``limit`` closed bars up to the cursor, oldest first."""

    @property
    @abc.abstractmethod
    def cursor(self) -> int | None:
        """Open time (ms) of the latest bar produced."""

    @property
    def ended(self) -> bool:
        return False


class ClockedFeed(Feed):
    @abc.abstractmethod
    def step(self) -> list[Bar]:
        """Advance one interval; the newly closed bar of every served symbol."""


class StreamingFeed(Feed):
    @abc.abstractmethod
    async def run(self, on_bars: Callable[[list[Bar]], None]) -> None:
        """Deliver closed bars until cancelled: each bar of a symbol exactly once, in open
        time order."""

    async def close(self) -> None:
        """Release connections (called once at shutdown)."""


class PendingFeed(Feed):
    """Stands in for a feed that needs the exchange until the fleet has connected to it."""

    name, interval = "pending", ""

    def validate(self, symbol: str) -> None:
        raise UnknownSymbol("the exchange is not connected yet")

    async def add(self, symbol: str) -> SymbolRules:
        raise FeedError("the exchange is not connected yet")

    def remove(self, symbol: str) -> None:
        pass

    def history(self, symbol: str, limit: int) -> list[Bar]:
        return []

    @property
    def cursor(self) -> int | None:
        return None
