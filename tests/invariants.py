"""What must hold in a fleet's journal after anything happened to it (shared by suites)."""

from __future__ import annotations

import itertools
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any


def _rows(db: Path, sql: str, *args: Any) -> list[sqlite3.Row]:
    with sqlite3.connect(db, timeout=5) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(sql, args).fetchall()


def fill_positions(db: Path) -> dict[str, Decimal]:
    """Positions recomputed from the journaled fills alone."""
    out: dict[str, Decimal] = {}
    for f in _rows(db, "SELECT symbol, side, qty FROM fills ORDER BY trade_id"):
        sign = 1 if f["side"] == "BUY" else -1
        out[f["symbol"]] = out.get(f["symbol"], Decimal(0)) + sign * Decimal(f["qty"])
    return out


def assert_never_doubled(db: Path) -> None:
    """Long/flat strategies alternate BUY and SELL fills; a doubled order breaks that.

    Also: one order per (symbol, seq), at most one fill per MARKET order.
    """
    symbols = {r[0] for r in _rows(db, "SELECT DISTINCT symbol FROM orders")}
    for symbol in symbols:
        sides = [r[0] for r in _rows(
            db, "SELECT side FROM fills WHERE symbol = ? ORDER BY trade_id", symbol)]
        assert all(a != b for a, b in itertools.pairwise(sides)), (symbol, sides)
        seqs = [r[0] for r in _rows(db, "SELECT seq FROM orders WHERE symbol = ?", symbol)]
        assert len(seqs) == len(set(seqs)), f"{symbol}: a client order id was used twice"
    doubled = _rows(db, "SELECT o.client_order_id, count(*) AS n FROM orders o JOIN fills f "
                        "USING (client_order_id) WHERE o.type = 'MARKET' "
                        "GROUP BY o.client_order_id HAVING n > 1")
    assert not doubled, [tuple(r) for r in doubled]


def assert_all_final(db: Path) -> None:
    """After `down`, every journaled intent has exactly one final state."""
    pending = _rows(db, "SELECT client_order_id, status FROM orders "
                        "WHERE status NOT IN ('FILLED', 'CANCELED', 'REJECTED', 'EXPIRED')")
    assert not pending, [tuple(r) for r in pending]
    filled_without_fill = _rows(
        db, "SELECT client_order_id FROM orders WHERE status = 'FILLED' AND client_order_id "
            "NOT IN (SELECT client_order_id FROM fills)")
    assert not filled_without_fill, [tuple(r) for r in filled_without_fill]


def assert_one_decision_per_bar(db: Path) -> int:
    """No symbol decided twice on one bar: every intent that is not an exit retry carries
    its bar's open time, and no two of one symbol carry the same. Returns the decisions."""
    undated = _rows(db, "SELECT client_order_id FROM orders WHERE exit_retry = 0 "
                        "AND bar_time IS NULL")
    assert not undated, [tuple(r) for r in undated]
    twice = _rows(db, "SELECT symbol, bar_time, group_concat(side || ' ' || client_order_id) "
                      "FROM orders WHERE exit_retry = 0 GROUP BY symbol, bar_time "
                      "HAVING count(*) > 1")
    assert not twice, [tuple(r) for r in twice]
    return int(_rows(db, "SELECT count(*) FROM orders WHERE exit_retry = 0")[0][0])
