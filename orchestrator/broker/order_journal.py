"""What the paper broker needs of a journal: its orders and fills. ``Journal`` (SQLite) and
``MemoryJournal`` (a backtest's, where nothing has to persist) both answer it."""

from __future__ import annotations

from typing import Protocol

from multibot.wire.protocol import FillView, OrderView


class OrderJournal(Protocol):
    """The orders-and-fills part of the journal that the paper broker uses: ``Journal``, or
    ``MemoryJournal`` (orchestrator.broker.memory_journal) where nothing has to persist."""

    def insert_order(self, order: OrderView, seq: int, bar_time: int | None = None,
                     exit_retry: bool = False) -> None: ...

    def update_order(
        self, client_order_id: str, status: str, executed_qty: str, reason: str, updated_ns: int
    ) -> None: ...

    def record_fill(self, fill: FillView, status: str, executed_qty: str) -> None: ...

    def get_order(self, client_order_id: str) -> OrderView | None: ...

    def orders(self, symbol: str | None = None, open_only: bool = False) -> list[OrderView]: ...

    def fills(self, symbol: str | None = None) -> list[FillView]: ...

    def order_fills(self, client_order_id: str) -> list[FillView]: ...

    def next_trade_id(self) -> int: ...

    def max_seq(self, symbol: str) -> int: ...

    def last_decision_bars(self) -> dict[str, int]: ...

    def add_duplicate_bars(self, symbol: str, count: int) -> None: ...

    def duplicate_bars(self) -> dict[str, int]: ...
