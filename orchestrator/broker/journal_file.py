"""The journal's files on disk: refused when damaged, kept private, and watched for being
deleted or replaced. Each check returns what is wrong (None if nothing is), for the journal
to raise.

SQLite writes through the file descriptors it opened. A journal file deleted (or renamed
over) while the orchestrator runs goes on taking writes that nobody will ever read again:
the next start finds no journal, or another one, and with it no positions. So the running
orchestrator compares what it holds open with what the path names now, and says so.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path

__all__ = ["FileWatch", "corruption", "damaged", "empty_file", "make_private"]

_FileId = tuple[int, int] | None  # (st_dev, st_ino); None = no such file


def side_files(path: Path) -> tuple[Path, Path, Path]:
    """The database and the two files SQLite keeps next to it in WAL mode."""
    return path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


def make_private(path: Path) -> None:
    """Drop group and other permission bits from the journal's files, whatever the umask
    was when they were made (SQLite gives -wal and -shm the database's own mode)."""
    for file in side_files(path):
        with contextlib.suppress(FileNotFoundError):
            mode = file.stat().st_mode & 0o777
            if mode & 0o077:
                os.chmod(file, mode & 0o700)


def empty_file(path: Path) -> str | None:
    """A 0-byte file where a journal should be is one that lost what it held (or never was
    one): starting afresh on it would silently forget every position."""
    try:
        if path.stat().st_size or not path.is_file():
            return None
    except OSError:
        return None  # missing: a fresh journal (or not openable: sqlite3 says why)
    return (f"journal {path} is empty (0 bytes): it lost what it held, or was never a "
            "journal; restore it from a backup, or remove it to start a fresh journal")


def corruption(conn: sqlite3.Connection, path: Path) -> str | None:
    """A corrupt page found at start is a clear refusal, not a failure in the middle of a
    fill."""
    problems = conn.execute("PRAGMA quick_check(3)").fetchall()
    if problems == [("ok",)]:
        return None
    found = " ".join(" ".join(str(row[0]) for row in problems).split())  # one line
    return (f"journal {path} is corrupt ({found}): restore it from a backup, or move it "
            "away to start a fresh journal")


def damaged(exc: sqlite3.Error) -> bool:
    """The file is not a database, or a corrupt one (not: locked, busy, unwritable)."""
    return exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _file_id(path: Path) -> _FileId:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class FileWatch:
    """What the journal's path and its -wal named when the connection opened them."""

    def __init__(self, path: Path) -> None:
        self._db, self._wal, _ = side_files(path)
        self._opened = (_file_id(self._db), _file_id(self._wal))
        self._advice: str | None = None  # set once the open journal has been copied aside

    def problem(self, conn: sqlite3.Connection) -> str | None:
        """None while the path still names the open files; else why not and what to do.

        The first time, what the open connection holds is copied to a file next to the
        journal (``multibot.db.rescued-<time>``), so that nothing journaled is lost even if
        this process dies before anyone acts on the message."""
        now = (_file_id(self._db), _file_id(self._wal))
        if now == self._opened:
            return None
        file, current = ((self._db, now[0]) if now[0] != self._opened[0]
                         else (self._wal, now[1]))
        what = "deleted" if current is None else "replaced by another file"
        if self._advice is None:
            self._advice = self._rescue(conn)
        return (f"journal file {file} was {what} while the orchestrator ran: trading is "
                f"halted (journal writes would be lost). {self._advice}")

    def _rescue(self, conn: sqlite3.Connection) -> str:
        """Copy the open database (WAL included) aside; say where, and what to do with it."""
        target = self._db.with_name(
            f"{self._db.name}.rescued-{time.strftime('%Y%m%dT%H%M%S')}")
        try:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            copy = sqlite3.connect(target)
            try:
                conn.backup(copy)
            finally:
                copy.close()
            make_private(target)
        except (OSError, sqlite3.Error) as exc:
            return (f"Copying the open journal aside failed ({exc}): stop the fleet with "
                    "`multibot down` and restore the home's multibot.db from a backup")
        return (f"The open journal was saved to {target}: stop the fleet with `multibot "
                f"down`, move that file to {self._db} (removing any {self._db.name}-wal and "
                f"-shm left), then `up` again")
