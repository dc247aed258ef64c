"""What the orchestrator needs from a feed; every feed steps one bar interval at a time."""

from __future__ import annotations

import abc

from orchestrator.protocol import SymbolRules
from strategies.bar import Bar

HISTORY_LIMIT = 1000  # bars of warm-up history a worker may ask for


class UnknownSymbol(Exception):
    """The feed has no data for this symbol; the message lists what is available."""


class Feed(abc.ABC):
    name: str
    interval: str

    @abc.abstractmethod
    def validate(self, symbol: str) -> None:
        """Raise UnknownSymbol with a helpful message if the symbol cannot be served."""

    @abc.abstractmethod
    def add(self, symbol: str) -> SymbolRules:
        """Start serving a symbol (hot-add); returns its exchange rules."""

    @abc.abstractmethod
    def remove(self, symbol: str) -> None: ...

    @abc.abstractmethod
    def history(self, symbol: str, limit: int) -> list[Bar]:
        """The last ``limit`` closed bars up to the cursor, oldest first."""

    @abc.abstractmethod
    def step(self) -> list[Bar]:
        """Advance one interval; the newly closed bar of every served symbol."""

    @property
    @abc.abstractmethod
    def cursor(self) -> int | None:
        """Open time (ms) of the latest bar produced."""

    @property
    def ended(self) -> bool:
        return False
