"""The journal's record of decisions: each symbol's last decided bar and its duplicate bars.

Part of ``Journal`` (orchestrator.broker.journal), which gives it its connection: intents
carry ``bar_time`` and ``exit_retry`` in the orders table (schema step 3), duplicate bars are
counted per symbol in the ``duplicate_bars`` table.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from typing import Any

__all__ = ["DecisionRecords"]


class DecisionRecords:
    """The decision queries and writes of ``Journal``."""

    def _write(self, action: str) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # Journal's: one committed transaction

    def _read(self, action: str, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        raise NotImplementedError  # Journal's

    def start_decision_clock(self, clock: str) -> None:
        """Bar times compare only on one clock (a feed and its interval): a fleet on another
        clock than the journal's last (replay 1h after replay 1m, say) starts afresh, the
        decisions journaled before no longer bounding its own."""
        with self._write("start the decision clock") as conn:
            row = conn.execute("SELECT value FROM meta WHERE key='decision_clock'").fetchone()
            if row is None or row[0] != clock:
                since = conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM orders").fetchone()[0]
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                    (("decision_clock", clock), ("decisions_from", str(since))))

    def last_decision_bars(self) -> dict[str, int]:
        """Each symbol's newest bar an intent was decided on (exit retries are no decision),
        on the current decision clock."""
        rows = self._read("read last decision bars",
                          "SELECT symbol, MAX(bar_time) FROM orders WHERE exit_retry=0 "
                          "AND bar_time IS NOT NULL AND rowid > COALESCE((SELECT CAST(value "
                          "AS INTEGER) FROM meta WHERE key='decisions_from'), 0) GROUP BY symbol")
        return {str(symbol): int(bar_time) for symbol, bar_time in rows}

    def add_duplicate_bars(self, symbol: str, count: int) -> None:
        """Count ``count`` more live bars ``symbol`` saw twice (over the fleet's life)."""
        with self._write(f"count duplicate bars of {symbol}") as conn:
            conn.execute(
                "INSERT INTO duplicate_bars (symbol, count) VALUES (?, ?) "
                "ON CONFLICT (symbol) DO UPDATE SET count=count + excluded.count",
                (symbol, count),
            )

    def duplicate_bars(self) -> dict[str, int]:
        rows = self._read("read duplicate bars", "SELECT symbol, count FROM duplicate_bars")
        return {str(symbol): int(count) for symbol, count in rows}
