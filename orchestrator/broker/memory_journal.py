"""A journal held in dicts and lists: the SQLite ``Journal``'s interface and semantics, no file.

For throwaway runs (backtests), where the paper broker must behave exactly as in paper
trading but nothing has to survive the process. Every method answers as ``Journal`` does:
orders in the order they were journaled, fills by trade id, ``COALESCE``-style maxima, a fill
and its order's new status written together or not at all, and the same ``JournalError`` for
what SQLite refuses (a duplicate client_order_id or trade id, a fill or update of an order
that is not journaled, an integer beyond 64 bits, any use after ``close``). Each write checks
everything before it changes anything, so a refused write leaves no trace.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec

from multibot.wire.protocol import FillView, OrderView
from orchestrator.broker.journal import OPEN_STATUSES, JournalError, JournalEvent

__all__ = ["MemoryJournal"]

_LOW, _HIGH = -(2**63), 2**63 - 1  # SQLite's INTEGER
_TOO_BIG = "Python int too large to convert to SQLite INTEGER"  # sqlite3's OverflowError
_CLOSED = "Cannot operate on a closed database."  # sqlite3's ProgrammingError


class MemoryJournal:
    """In-memory ``Journal``: same methods, same results, same errors; nothing is persisted."""

    def __init__(self, path: Path | str = ":memory:") -> None:
        self.path = Path(path)  # only names the journal in error messages
        self._orders: dict[str, OrderView] = {}  # by client_order_id, in journal order
        self._max_seq: dict[str, int] = {}  # symbol -> max seq
        self._fills: dict[int, FillView] = {}  # by trade_id, in insertion order
        self._fills_sorted = True  # trade ids were inserted in increasing order
        self._order_fills: dict[str, list[FillView]] = {}
        self._max_trade_id: int | None = None  # None: no fills yet
        self._events: list[JournalEvent] = []
        self._meta: dict[str, str] = {}
        self._decided: dict[str, int] = {}  # symbol -> newest bar_time of a decision
        self._duplicates: dict[str, int] = {}
        self._closed = False

    # --- plumbing ----------------------------------------------------------------------------
    # (an action's name is only formatted when it fails: writes are on a backtest's hot path)

    def _error(self, action: str, reason: object) -> JournalError:
        return JournalError(f"journal {self.path}: {action} failed: {reason}")

    def _open(self, action: str) -> None:
        if self._closed:
            raise self._error(action, _CLOSED)

    # --- orders and fills --------------------------------------------------------------------

    def insert_order(self, order: OrderView, seq: int, bar_time: int | None = None,
                     exit_retry: bool = False) -> None:
        coid = order.client_order_id
        reason: str | None = None  # checked in SQLite's order: closed, binding, constraints
        if self._closed:
            reason = _CLOSED
        elif not (
            _LOW <= seq <= _HIGH
            and _LOW <= order.created_ns <= _HIGH
            and _LOW <= order.updated_ns <= _HIGH
            and (bar_time is None or _LOW <= bar_time <= _HIGH)
        ):
            reason = _TOO_BIG
        elif coid in self._orders:
            reason = "UNIQUE constraint failed: orders.client_order_id"
        if reason is not None:
            raise self._error(f"insert order {coid}", reason)
        self._orders[coid] = order
        symbol = order.symbol
        if symbol not in self._max_seq or seq > self._max_seq[symbol]:
            self._max_seq[symbol] = seq
        if bar_time is not None and not exit_retry and bar_time > self._decided.get(symbol, _LOW):
            self._decided[symbol] = bar_time

    def update_order(
        self, client_order_id: str, status: str, executed_qty: str, reason: str, updated_ns: int
    ) -> None:
        """Set an order's state; JournalError if the order is not journaled."""
        order = self._orders.get(client_order_id)
        problem: str | None = None
        if self._closed:
            problem = _CLOSED
        elif not _LOW <= updated_ns <= _HIGH:
            problem = _TOO_BIG
        elif order is None:
            problem = f"no journaled order {client_order_id!r}"
        if problem is not None or order is None:
            raise self._error(f"update order {client_order_id}", problem)
        self._orders[client_order_id] = msgspec.structs.replace(
            order, status=status, executed_qty=executed_qty, reason=reason, updated_ns=updated_ns
        )

    def record_fill(self, fill: FillView, status: str, executed_qty: str) -> None:
        """Journal a fill and its order's new status together (both or neither)."""
        trade_id, coid = fill.trade_id, fill.client_order_id
        order = self._orders.get(coid)
        reason: str | None = None  # checked in SQLite's order: closed, binding, constraints
        if self._closed:
            reason = _CLOSED
        elif not (_LOW <= trade_id <= _HIGH and _LOW <= fill.time_ns <= _HIGH):
            reason = _TOO_BIG
        elif trade_id in self._fills:
            reason = "UNIQUE constraint failed: fills.trade_id"
        elif order is None:
            reason = "FOREIGN KEY constraint failed"
        if reason is not None or order is None:
            raise self._error(f"record fill {trade_id} of {coid}", reason)
        # nothing can fail from here on; the order keeps its reason
        self._orders[coid] = msgspec.structs.replace(
            order, status=status, executed_qty=executed_qty, updated_ns=fill.time_ns
        )
        self._fills[trade_id] = fill
        if self._max_trade_id is None or trade_id > self._max_trade_id:
            self._max_trade_id = trade_id
        else:
            self._fills_sorted = False
        fills = self._order_fills.get(coid)
        if fills is None:
            self._order_fills[coid] = [fill]
        else:
            fills.append(fill)
            if fills[-2].trade_id > trade_id:
                fills.sort(key=_trade_id)

    def get_order(self, client_order_id: str) -> OrderView | None:
        if self._closed:
            raise self._error(f"read order {client_order_id}", _CLOSED)
        return self._orders.get(client_order_id)

    def orders(self, symbol: str | None = None, open_only: bool = False) -> list[OrderView]:
        """Orders in the order they were journaled; open = NEW or PARTIALLY_FILLED."""
        self._open("read orders")
        return [
            o
            for o in self._orders.values()
            if (symbol is None or o.symbol == symbol)
            and (not open_only or o.status in OPEN_STATUSES)
        ]

    def fills(self, symbol: str | None = None) -> list[FillView]:
        self._open("read fills")
        if not self._fills_sorted:
            self._fills = dict(sorted(self._fills.items()))
            self._fills_sorted = True
        return [f for f in self._fills.values() if symbol is None or f.symbol == symbol]

    def order_fills(self, client_order_id: str) -> list[FillView]:
        self._open(f"read fills of {client_order_id}")
        return list(self._order_fills.get(client_order_id, ()))

    def next_trade_id(self) -> int:
        self._open("read trade ids")
        return 1 if self._max_trade_id is None else self._max_trade_id + 1

    def max_seq(self, symbol: str) -> int:
        self._open(f"read max seq of {symbol}")
        return self._max_seq.get(symbol, 0)

    # --- decisions ---------------------------------------------------------------------------

    def last_decision_bars(self) -> dict[str, int]:
        self._open("read last decision bars")
        return dict(self._decided)

    def add_duplicate_bars(self, symbol: str, count: int) -> None:
        self._open(f"count duplicate bars of {symbol}")
        self._duplicates[symbol] = self._duplicates.get(symbol, 0) + count

    def duplicate_bars(self) -> dict[str, int]:
        self._open("read duplicate bars")
        return dict(self._duplicates)

    # --- events and meta ---------------------------------------------------------------------

    def add_event(self, kind: str, symbol: str, detail: str) -> None:
        self._open(f"add {kind} event")
        event = JournalEvent(
            id=len(self._events) + 1, ts_ns=time.time_ns(), kind=kind, symbol=symbol,
            detail=detail,
        )  # fmt: skip
        self._events.append(event)

    def events(self, limit: int = 100) -> list[JournalEvent]:
        """The newest ``limit`` events, oldest first (a negative limit: all, as in SQL)."""
        self._open("read events")
        if limit < 0:
            return list(self._events)
        return self._events[-limit:] if limit else []

    def get_meta(self, key: str) -> str | None:
        self._open(f"read meta {key}")
        return self._meta.get(key)

    def set_meta(self, key: str, value: str) -> None:
        self._open(f"set meta {key}")
        self._meta[key] = value

    def close(self) -> None:
        """Close (idempotent); later calls raise JournalError."""
        self._closed = True

    def __enter__(self) -> MemoryJournal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _trade_id(fill: FillView) -> int:
    return fill.trade_id
