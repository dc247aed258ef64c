"""The SQLite journal: durability settings, round trips, atomic fills, error wrapping."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from multibot.market.orders import OrderStatus, OrderType, Side
from multibot.wire.protocol import FillView, OrderView
from orchestrator.broker.journal import SCHEMA_VERSION, Journal, JournalError


def order(coid: str = "mb-BTCUSDT-1", symbol: str = "BTCUSDT", **kw: Any) -> OrderView:
    fields: dict[str, Any] = dict(
        side=Side.BUY, type=OrderType.LIMIT, quantity="0.001", price="50000", created_ns=1
    )
    fields.update(kw)
    return OrderView(client_order_id=coid, symbol=symbol, **fields)


def fill(trade_id: int = 1, coid: str = "mb-BTCUSDT-1", symbol: str = "BTCUSDT") -> FillView:
    return FillView(
        trade_id=trade_id, client_order_id=coid, symbol=symbol, side=Side.BUY, price="50000",
        qty="0.001", fee="0.05", fee_asset="USDT", time_ns=7,
    )  # fmt: skip


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal(tmp_path / "multibot.db") as j:
        yield j


def test_durability_settings(journal: Journal, tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / "multibot.db")
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in other.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"orders", "fills", "events", "meta"} <= tables
    finally:
        other.close()
    conn = journal._conn
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_order_round_trip_and_update(journal: Journal) -> None:
    placed = order(reason="", updated_ns=1)
    journal.insert_order(placed, seq=1)
    assert journal.get_order("mb-BTCUSDT-1") == placed
    assert journal.get_order("nope") is None
    journal.update_order("mb-BTCUSDT-1", "CANCELED", "0", "by user", 9)
    got = journal.get_order("mb-BTCUSDT-1")
    assert got is not None
    assert (got.status, got.reason, got.updated_ns, got.created_ns) == ("CANCELED", "by user", 9, 1)
    market = order("m1", type=OrderType.MARKET, price=None)
    journal.insert_order(market, seq=0)
    assert journal.get_order("m1") == market  # NULL price survives


def test_orders_filter_by_symbol_and_openness_in_journal_order(journal: Journal) -> None:
    journal.insert_order(order("b2", status=OrderStatus.NEW), seq=2)
    journal.insert_order(order("e1", symbol="ETHUSDT", status=OrderStatus.PARTIALLY_FILLED), seq=1)
    journal.insert_order(order("b1", status=OrderStatus.FILLED), seq=1)
    journal.insert_order(order("b3", status=OrderStatus.REJECTED), seq=3)
    assert [o.client_order_id for o in journal.orders()] == ["b2", "e1", "b1", "b3"]
    assert [o.client_order_id for o in journal.orders("BTCUSDT")] == ["b2", "b1", "b3"]
    assert [o.client_order_id for o in journal.orders(open_only=True)] == ["b2", "e1"]
    assert [o.client_order_id for o in journal.orders("BTCUSDT", open_only=True)] == ["b2"]
    assert journal.max_seq("BTCUSDT") == 3
    assert journal.max_seq("ETHUSDT") == 1
    assert journal.max_seq("XRPUSDT") == 0


def test_record_fill_updates_the_order_in_the_same_transaction(journal: Journal) -> None:
    journal.insert_order(order(reason="why"), seq=1)
    assert journal.next_trade_id() == 1
    journal.record_fill(fill(), "FILLED", "0.001")
    got = journal.get_order("mb-BTCUSDT-1")
    assert got is not None
    assert (got.status, got.executed_qty, got.updated_ns, got.reason) == (
        "FILLED",
        "0.001",
        7,
        "why",
    )
    assert journal.fills() == [fill()]
    assert journal.order_fills("mb-BTCUSDT-1") == [fill()]
    assert journal.next_trade_id() == 2


def test_a_failed_fill_leaves_neither_fill_nor_status(journal: Journal) -> None:
    journal.insert_order(order(), seq=1)
    journal.record_fill(fill(1), "PARTIALLY_FILLED", "0.0005")
    with pytest.raises(JournalError, match="record fill 1"):
        journal.record_fill(fill(1), "FILLED", "0.001")  # duplicate trade id
    got = journal.get_order("mb-BTCUSDT-1")
    assert got is not None and (got.status, got.executed_qty) == ("PARTIALLY_FILLED", "0.0005")
    with pytest.raises(JournalError):
        journal.record_fill(fill(2, coid="ghost"), "FILLED", "1")  # no such order
    assert [f.trade_id for f in journal.fills()] == [1]
    assert not journal._conn.in_transaction


def test_fills_by_symbol_are_ordered_by_trade_id(journal: Journal) -> None:
    journal.insert_order(order("b"), seq=0)
    journal.insert_order(order("e", symbol="ETHUSDT"), seq=0)
    for trade_id, coid, symbol in [(3, "b", "BTCUSDT"), (1, "e", "ETHUSDT"), (2, "b", "BTCUSDT")]:
        journal.record_fill(fill(trade_id, coid, symbol), "PARTIALLY_FILLED", "0")
    assert [f.trade_id for f in journal.fills()] == [1, 2, 3]
    assert [f.trade_id for f in journal.fills("BTCUSDT")] == [2, 3]


def test_events_and_meta(journal: Journal) -> None:
    for i in range(5):
        journal.add_event("state", "BTCUSDT", f"step {i}")
    events = journal.events(limit=3)
    assert [e.detail for e in events] == ["step 2", "step 3", "step 4"]  # newest, oldest first
    assert events[0].ts_ns <= events[-1].ts_ns and events[0].kind == "state"
    assert journal.get_meta("mode") is None
    journal.set_meta("mode", "paper")
    journal.set_meta("mode", "live")
    assert journal.get_meta("mode") == "live"


def test_everything_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "multibot.db"
    with Journal(path) as first:
        first.insert_order(order(), seq=4)
        first.record_fill(fill(), "FILLED", "0.001")
        first.add_event("fill", "BTCUSDT", "x")
        first.set_meta("k", "v")
    with Journal(path) as second:
        assert second.orders()[0].status == "FILLED"
        assert second.fills() == [fill()]
        assert second.max_seq("BTCUSDT") == 4
        assert [e.detail for e in second.events()] == ["x"]
        assert second.get_meta("k") == "v"


def test_duplicate_order_is_a_journal_error(journal: Journal) -> None:
    journal.insert_order(order(), seq=1)
    with pytest.raises(JournalError, match="insert order mb-BTCUSDT-1"):
        journal.insert_order(order(), seq=1)
    with pytest.raises(JournalError, match="no journaled order"):
        journal.update_order("ghost", "CANCELED", "0", "", 1)


def test_unopenable_paths_are_journal_errors(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(JournalError, match="cannot open journal"):
        Journal(not_a_dir / "multibot.db")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not an sqlite database, not at all" * 100)
    with pytest.raises(JournalError, match=r"garbage\.db"):
        Journal(garbage)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "multibot.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(JournalError, match="schema version"):
        Journal(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_file_is_a_journal_error(tmp_path: Path) -> None:
    path = tmp_path / "multibot.db"
    Journal(path).close()
    for p in tmp_path.iterdir():
        p.chmod(0o444)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(JournalError):
            j = Journal(path)
            j.insert_order(order(), seq=1)
    finally:
        tmp_path.chmod(0o755)


def test_a_locked_database_is_a_journal_error_and_reads_still_work(tmp_path: Path) -> None:
    # Another writer holding the lock is what a read-only or busy disk looks like to a root
    # process: writes fail, cleanly wrapped, and the journal stays usable afterwards.
    path = tmp_path / "multibot.db"
    journal = Journal(path, timeout=0.05)
    journal.insert_order(order(), seq=1)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(JournalError, match="locked"):
            journal.insert_order(order("mb-BTCUSDT-2"), seq=2)
        assert [o.client_order_id for o in journal.orders()] == ["mb-BTCUSDT-1"]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    journal.insert_order(order("mb-BTCUSDT-2"), seq=2)
    assert journal.max_seq("BTCUSDT") == 2
    journal.close()


def test_a_closed_journal_raises_journal_error(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "multibot.db")
    journal.close()
    journal.close()  # idempotent
    with pytest.raises(JournalError):
        journal.orders()
    with pytest.raises(JournalError):
        journal.insert_order(order(), seq=1)


def test_an_empty_file_is_refused_not_taken_for_a_fresh_journal(tmp_path: Path) -> None:
    path = tmp_path / "multibot.db"
    path.write_bytes(b"")
    with pytest.raises(JournalError, match=r"is empty \(0 bytes\).*remove it"):
        Journal(path)
    assert path.read_bytes() == b""  # left as it was


def test_a_database_without_our_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "multibot.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.close()
    with pytest.raises(JournalError, match="without multibot's schema"):
        Journal(path)


def test_a_corrupt_journal_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "multibot.db"
    with Journal(path) as journal:
        for n in range(1, 200):
            journal.insert_order(order(f"mb-BTCUSDT-{n}", reason="x" * 200), seq=n)
    page = sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0]
    with open(path, "r+b") as f:
        f.seek(page * 3)
        f.write(b"\xff" * page)
    with pytest.raises(JournalError, match=r"corrupt|not a readable database") as err:
        Journal(path)
    assert "\n" not in str(err.value) and "restore it from a backup" in str(err.value)


def test_a_locked_journal_at_open_is_not_called_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "multibot.db"
    Journal(path).close()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("PRAGMA journal_mode=DELETE")  # WAL cannot be enabled while it is locked
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(JournalError) as err:
            Journal(path, timeout=0.05)
        assert "locked" in str(err.value) and "backup" not in str(err.value)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def test_the_journal_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "multibot.db"
    previous = os.umask(0)
    try:
        with Journal(path) as journal:
            journal.set_meta("k", "v")
            modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    finally:
        os.umask(previous)
    assert modes == {"multibot.db": 0o600, "multibot.db-wal": 0o600, "multibot.db-shm": 0o600}


@pytest.mark.parametrize("how", ["delete", "replace", "delete-wal"])
def test_a_journal_file_deleted_or_replaced_while_open_is_noticed_and_saved(
        tmp_path: Path, how: str) -> None:
    path = tmp_path / "multibot.db"
    journal = Journal(path)
    journal.insert_order(order(), seq=1)
    journal.check_file()  # nothing happened yet
    if how == "delete":
        path.unlink()
    elif how == "replace":
        (tmp_path / "other").write_bytes(b"")
        os.replace(tmp_path / "other", path)
    else:
        (tmp_path / "multibot.db-wal").unlink()
    with pytest.raises(JournalError, match=r"deleted|replaced") as err:
        journal.check_file()
    with pytest.raises(JournalError) as again:  # it stays noticed, saved only once
        journal.check_file()
    assert str(again.value) == str(err.value)
    journal.close()
    rescued = list(tmp_path.glob("multibot.db.rescued-*"))
    assert len(rescued) == 1 and str(rescued[0]) in str(err.value)
    assert rescued[0].stat().st_mode & 0o777 == 0o600
    with Journal(rescued[0]) as saved:
        assert [o.client_order_id for o in saved.orders()] == ["mb-BTCUSDT-1"]


@pytest.mark.parametrize("how", ["truncate", "copy-over"])
def test_a_journal_file_overwritten_in_place_is_noticed_and_saved(
        tmp_path: Path, how: str) -> None:
    """Same inode, other content: `cp other.db multibot.db` or `: > multibot.db` while the
    orchestrator runs. The inode check cannot see it; the journal's id in the header can."""
    path = tmp_path / "multibot.db"
    other = tmp_path / "other.db"
    with Journal(other) as foreign:  # another home's journal: same schema, another id
        foreign.set_meta("k", "v")
    journal = Journal(path)
    journal.insert_order(order(), seq=1)
    journal.check_file()
    inode = path.stat().st_ino
    with open(path, "r+b") as file:
        file.truncate(0)
        if how == "copy-over":
            file.write(other.read_bytes())
    assert path.stat().st_ino == inode
    with pytest.raises(JournalError, match="overwritten in place") as err:
        journal.check_file()
    journal.close()
    rescued = list(tmp_path.glob("multibot.db.rescued-*"))
    assert len(rescued) == 1 and str(rescued[0]) in str(err.value)
    with Journal(rescued[0]) as saved:
        assert [o.client_order_id for o in saved.orders()] == ["mb-BTCUSDT-1"]


def test_an_untouched_journal_passes_its_file_check_across_checkpoints(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "multibot.db")
    for seq in range(1, 300):  # enough pages for automatic checkpoints to rewrite the header
        journal.insert_order(order(coid=f"mb-BTCUSDT-{seq}"), seq=seq)
        if seq % 50 == 0:
            journal.check_file()
    journal.close()
    with Journal(tmp_path / "multibot.db") as again:  # the id survives a reopen
        again.check_file()


_FILL_A_TINY_DISK = """
import sys
from pathlib import Path
from orchestrator.broker.journal import Journal, JournalError
journal = Journal(Path(sys.argv[1]) / "multibot.db")
n = 0
try:
    while n < 100_000:  # the feed cursor, rewritten step after step: a WAL of copies
        journal.set_meta("feed_cursor", str(n))
        n += 1
except JournalError as exc:
    print("full:", exc)
journal.set_meta("probe", "1")  # the health probe: raises if the journal stays unwritable
print("cursor", journal.get_meta("feed_cursor"), "of", n)
"""


def test_a_disk_filled_by_the_wal_becomes_writable_again(tmp_path: Path) -> None:
    """On a 1 MiB filesystem the WAL fills the disk before its automatic checkpoint; every
    commit then fails, and the automatic checkpoint only follows a successful commit: halted
    for good, unless the failure itself reclaims the WAL's space."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    script = tmp_path / "fill.py"
    script.write_text(_FILL_A_TINY_DISK)
    if subprocess.run(["unshare", "-Urm", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs a user and mount namespace (unshare -Urm) for a tiny filesystem")
    proc = subprocess.run(
        ["unshare", "-Urm", "sh", "-c",
         f'mount -t tmpfs -o size=1m tmpfs "{mount}" && exec "{sys.executable}" "{script}" '
         f'"{mount}"'],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "full: " in proc.stdout and "database or disk is full" in proc.stdout, proc.stdout
    cursor, _, written = proc.stdout.rsplit("cursor ", 1)[1].split()
    assert int(cursor) == int(written) - 1  # every committed write is still there


def test_a_side_file_of_another_user_is_refused_before_sqlite_maps_it(tmp_path: Path) -> None:
    path = tmp_path / "multibot.db"
    with Journal(path) as journal:
        journal.set_meta("k", "v")
    shm = tmp_path / "multibot.db-shm"
    shm.write_bytes(b"\0" * 32768)
    os.chown(shm, 65534, 65534) if os.getuid() == 0 else shm.chmod(0o400)
    with pytest.raises(JournalError, match=r"multibot.db-shm is not this user's to write"):
        Journal(path)
    shm.unlink()
    with Journal(path) as journal:  # once it is gone, SQLite rebuilds it
        assert journal.get_meta("k") == "v"
