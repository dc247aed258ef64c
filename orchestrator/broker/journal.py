"""The journal: one SQLite file (WAL, synchronous=FULL) holding orders, fills, events and meta.

It is what makes the orchestrator crash-only: every write is committed before the method
returns, and positions are rebuilt from the fills it holds. One connection, used from one
thread (the orchestrator's asyncio loop). Every sqlite3 failure surfaces as ``JournalError``;
callers halt trading for the symbol concerned rather than trade on an unrecorded state.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from multibot.errors import ErrorCode, MultibotError
from multibot.market.orders import OPEN_STATUSES
from multibot.wire.protocol import FillView, OrderView
from orchestrator.broker.journal_decisions import DecisionRecords
from orchestrator.broker.journal_file import (
    FileWatch,
    corruption,
    damaged,
    empty_file,
    make_private,
    out_of_space,
    reclaim_wal,
    stamp_identity,
    unusable_side_file,
)
from orchestrator.broker.journal_schema import SCHEMA_VERSION, STEPS
from orchestrator.broker.order_journal import OrderJournal as OrderJournal

__all__ = [
    "OPEN_STATUSES",
    "SCHEMA_VERSION",
    "Journal",
    "JournalError",
    "JournalEvent",
    "OrderJournal",
]

_WAL_KEEP_BYTES = 4 << 20

# Column names equal the wire structs' field names, so rows map straight onto them.
_ORDER_FIELDS = OrderView.__struct_fields__
_FILL_FIELDS = FillView.__struct_fields__
_ORDER_COLUMNS = ", ".join(_ORDER_FIELDS)
_FILL_COLUMNS = ", ".join(_FILL_FIELDS)
_ORDER_MARKS = ", ".join("?" * (len(_ORDER_FIELDS) + 1))  # + seq
_FILL_MARKS = ", ".join("?" * len(_FILL_FIELDS))
_INSERT_ORDER = (f"INSERT INTO orders ({_ORDER_COLUMNS}, seq, bar_time, exit_retry) "
                 f"VALUES ({_ORDER_MARKS}, ?, ?)")
_INSERT_FILL = f"INSERT INTO fills ({_FILL_COLUMNS}) VALUES ({_FILL_MARKS})"


class JournalError(MultibotError):
    """The journal could not be read or written; the message names the file and the action."""

    CODE = ErrorCode.JOURNAL_UNAVAILABLE


class JournalEvent(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    ts_ns: int
    kind: str
    symbol: str
    detail: str


_Record = TypeVar("_Record", OrderView, FillView)


def _record(cls: type[_Record], fields: tuple[str, ...], row: tuple[Any, ...]) -> _Record:
    """A row as its record, with sides, types and statuses as the enums again. A rejected
    order journaled with a side or type the wire now refuses keeps its text: reading a
    journal never fails on what it holds."""
    values = dict(zip(fields, row, strict=True))
    try:
        return msgspec.convert(values, cls)
    except msgspec.ValidationError:
        return cls(**values)


def _order(row: tuple[Any, ...]) -> OrderView:
    return _record(OrderView, _ORDER_FIELDS, row)


def _fill(row: tuple[Any, ...]) -> FillView:
    return _record(FillView, _FILL_FIELDS, row)


class Journal(DecisionRecords):
    def __init__(self, path: Path, *, timeout: float = 5.0, durable: bool = True) -> None:
        """Open (creating if needed) the journal at ``path``; ``timeout`` = busy wait, seconds.

        A missing file is a fresh journal; a file that exists must be a journal: an empty
        one, or one that is not a sound SQLite database with this schema, is refused (it is
        a journal that lost what it held, or not ours). The files are made private (0600).

        ``durable=False`` is for throwaway journals (backtests): no WAL, no fsync
        (journal_mode=MEMORY, synchronous=OFF), and ``path`` may be ``":memory:"``. Every write
        is still one transaction; only crash durability is given up.
        """
        self.path = Path(path)
        on_disk = str(path) != ":memory:"
        if on_disk and (problem := empty_file(self.path) or unusable_side_file(self.path)):
            raise JournalError(problem)
        try:
            # isolation_level=None: no implicit transactions; writes use explicit BEGIN/COMMIT.
            # check_same_thread=False only lets the owner hand the journal to its loop thread.
            conn = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {self.path}: {exc}") from exc
        self._conn = conn
        try:
            if durable:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise JournalError(f"journal {self.path}: cannot enable WAL (mode is {mode})")
                conn.execute("PRAGMA synchronous=FULL")
                # a WAL grown by a burst is cut back to this once checkpointed, not kept
                conn.execute(f"PRAGMA journal_size_limit={_WAL_KEEP_BYTES}")
                if corrupt := corruption(conn, self.path):
                    raise JournalError(corrupt)
            else:
                conn.execute("PRAGMA journal_mode=MEMORY")
                conn.execute("PRAGMA synchronous=OFF")
            conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error) and damaged(exc):
                raise JournalError(
                    f"journal {self.path} is not a readable database ({exc}): restore it from "
                    "a backup, or move it away to start a fresh journal") from exc
            if isinstance(exc, sqlite3.Error):
                raise JournalError(f"cannot open journal {self.path}: {exc}") from exc
            raise
        self._watch: FileWatch | None = None
        if on_disk:
            make_private(self.path)
            try:
                identity = stamp_identity(conn)
            except sqlite3.Error as exc:
                raise self._error("write its identity", exc) from exc
            self._watch = FileWatch(self.path, identity)

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"journal {self.path} has schema version {version}; this multibot reads "
                f"up to {SCHEMA_VERSION} (upgrade multibot or use another home)"
            )
        if version == SCHEMA_VERSION:
            return
        if version == 0 and self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise JournalError(
                f"{self.path} is a database without multibot's schema, not a journal: move it "
                "away (this home's journal is its multibot.db)")
        with self._write(f"upgrade schema {version} -> {SCHEMA_VERSION}") as conn:
            for step in STEPS[version:]:
                for statement in step:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # --- plumbing ----------------------------------------------------------------------------

    def _error(self, action: str, exc: Exception) -> JournalError:
        return JournalError(f"journal {self.path}: {action} failed: {exc}")

    @contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        """One committed transaction; rolled back and wrapped on any error."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except (sqlite3.Error, OverflowError) as exc:
            self._rollback()
            if isinstance(exc, sqlite3.Error) and out_of_space(exc):
                reclaim_wal(conn, self.path)
            raise self._error(action, exc) from exc
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the original error is the one worth reporting

    def _read(self, action: str, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except (sqlite3.Error, OverflowError) as exc:
            raise self._error(action, exc) from exc

    # --- orders and fills --------------------------------------------------------------------

    def insert_order(self, order: OrderView, seq: int, bar_time: int | None = None,
                     exit_retry: bool = False) -> None:
        """Journal an intent; ``bar_time``: open time of the bar it was decided on."""
        with self._write(f"insert order {order.client_order_id}") as conn:
            conn.execute(
                _INSERT_ORDER,
                (*msgspec.structs.astuple(order), seq, bar_time, int(exit_retry)),
            )

    def update_order(
        self, client_order_id: str, status: str, executed_qty: str, reason: str, updated_ns: int
    ) -> None:
        """Set an order's state; JournalError if the order is not journaled."""
        action = f"update order {client_order_id}"
        with self._write(action) as conn:
            self._set_status(conn, client_order_id, status, executed_qty, reason, updated_ns)

    @staticmethod
    def _set_status(
        conn: sqlite3.Connection,
        coid: str,
        status: str,
        executed: str,
        reason: str | None,
        ns: int,
    ) -> None:
        # reason None keeps the journaled one (a fill does not explain anything new)
        cursor = conn.execute(
            "UPDATE orders SET status=?, executed_qty=?, reason=COALESCE(?, reason), "
            "updated_ns=? "
            "WHERE client_order_id=?",
            (status, executed, reason, ns, coid),
        )
        if cursor.rowcount != 1:
            raise sqlite3.IntegrityError(f"no journaled order {coid!r}")

    def record_fill(self, fill: FillView, status: str, executed_qty: str) -> None:
        """Journal a fill and its order's new status in one transaction (both or neither)."""
        with self._write(f"record fill {fill.trade_id} of {fill.client_order_id}") as conn:
            conn.execute(
                _INSERT_FILL,
                msgspec.structs.astuple(fill),
            )
            self._set_status(conn, fill.client_order_id, status, executed_qty, None, fill.time_ns)

    def get_order(self, client_order_id: str) -> OrderView | None:
        rows = self._read(
            f"read order {client_order_id}",
            f"SELECT {_ORDER_COLUMNS} FROM orders WHERE client_order_id=?",
            (client_order_id,),
        )
        return _order(rows[0]) if rows else None

    def orders(self, symbol: str | None = None, open_only: bool = False) -> list[OrderView]:
        """Orders in the order they were journaled; open = one of OPEN_STATUSES."""
        where, params = self._filter(symbol)
        if open_only:
            where.append(f"status IN ({', '.join('?' * len(OPEN_STATUSES))})")
            params.extend(sorted(OPEN_STATUSES))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {_ORDER_COLUMNS} FROM orders{clause} ORDER BY rowid"
        return [_order(row) for row in self._read("read orders", sql, tuple(params))]

    def fills(self, symbol: str | None = None) -> list[FillView]:
        where, params = self._filter(symbol)
        clause = f" WHERE {where[0]}" if where else ""
        sql = f"SELECT {_FILL_COLUMNS} FROM fills{clause} ORDER BY trade_id"
        return [_fill(row) for row in self._read("read fills", sql, tuple(params))]

    def order_fills(self, client_order_id: str) -> list[FillView]:
        sql = f"SELECT {_FILL_COLUMNS} FROM fills WHERE client_order_id=? ORDER BY trade_id"
        rows = self._read(f"read fills of {client_order_id}", sql, (client_order_id,))
        return [_fill(row) for row in rows]

    @staticmethod
    def _filter(symbol: str | None) -> tuple[list[str], list[Any]]:
        return (["symbol=?"], [symbol]) if symbol is not None else ([], [])

    def exchange_trade_ids(self, client_order_id: str) -> set[int]:
        """Binance tradeIds already journaled for an order."""
        rows = self._read(f"read trade ids of {client_order_id}",
                          "SELECT exchange_trade_id FROM fills WHERE client_order_id=? "
                          "AND exchange_trade_id IS NOT NULL", (client_order_id,))
        return {int(row[0]) for row in rows}

    def next_trade_id(self) -> int:
        rows = self._read("read trade ids", "SELECT COALESCE(MAX(trade_id), 0) + 1 FROM fills")
        return int(rows[0][0])

    def max_seq(self, symbol: str) -> int:
        sql = "SELECT COALESCE(MAX(seq), 0) FROM orders WHERE symbol=?"
        return int(self._read(f"read max seq of {symbol}", sql, (symbol,))[0][0])

    # --- events and meta ---------------------------------------------------------------------

    def add_event(self, kind: str, symbol: str, detail: str) -> None:
        with self._write(f"add {kind} event") as conn:
            conn.execute(
                "INSERT INTO events (ts_ns, kind, symbol, detail) VALUES (?,?,?,?)",
                (time.time_ns(), kind, symbol, detail),
            )

    def events(self, limit: int = 100) -> list[JournalEvent]:
        """The newest ``limit`` events, oldest first."""
        rows = self._read(
            "read events",
            "SELECT id, ts_ns, kind, symbol, detail FROM events ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [
            JournalEvent(id=i, ts_ns=ts, kind=kind, symbol=symbol, detail=detail)
            for i, ts, kind, symbol, detail in reversed(rows)
        ]

    def get_meta(self, key: str) -> str | None:
        rows = self._read(f"read meta {key}", "SELECT value FROM meta WHERE key=?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._write(f"set meta {key}") as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                (key, value),
            )

    def check_file(self) -> None:
        """JournalError when the journal's path no longer names the file this connection
        writes (deleted or replaced while open): what it takes now would be lost."""
        problem = self._watch.problem(self._conn) if self._watch is not None else None
        if problem is not None:
            raise JournalError(problem)

    def close(self) -> None:
        """Close the connection (idempotent); later calls raise JournalError."""
        try:
            self._conn.close()
        except sqlite3.Error as exc:
            raise self._error("close", exc) from exc
        finally:
            if self._watch is not None:
                self._watch.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
