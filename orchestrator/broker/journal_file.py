"""The journal's files on disk: refused when damaged, kept private, watched for being
deleted, replaced or overwritten in place, and their WAL's space reclaimed when the disk is
full. Each check returns what is wrong (None if nothing is), for the journal to raise.

SQLite writes through the file descriptors it opened. A journal file deleted (or renamed
over) while the orchestrator runs goes on taking writes that nobody will ever read again:
the next start finds no journal, or another one, and with it no positions. So the running
orchestrator compares what it holds open with what the path names now, and says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path

__all__ = ["FileWatch", "corruption", "damaged", "empty_file", "make_private", "out_of_space",
           "reclaim_wal", "stamp_identity", "unusable_side_file"]

log = logging.getLogger(__name__)

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


def unusable_side_file(path: Path) -> str | None:
    """A -wal or -shm left next to the journal that this user cannot write (or does not own):
    SQLite would map the shared memory read-only and the process die of SIGBUS mid-write."""
    for side in side_files(path)[1:]:
        try:
            st = side.stat()
        except OSError:
            continue
        if st.st_uid != os.getuid() or not os.access(side, os.R_OK | os.W_OK):
            return (f"journal file {side} is not this user's to write (owner uid {st.st_uid}, "
                    f"mode {st.st_mode & 0o777:o}): if no multibot runs on this home, remove it "
                    "(SQLite rebuilds it), then start again")
    return None


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


def header_id(fd: int) -> int | None:
    """The application id in the SQLite header of the file open as ``fd`` (None: no SQLite
    header there, e.g. the file was truncated or overwritten with something else)."""
    try:
        head = os.pread(fd, 100, 0)
    except OSError:
        return None
    if len(head) < 100 or not head.startswith(b"SQLite format 3\0"):
        return None
    return int.from_bytes(head[68:72], "big", signed=True)


def stamp_identity(conn: sqlite3.Connection) -> int:
    """The journal's random application id, made once and checkpointed into the file's
    header, where the file watch reads it back to notice the file overwritten in place."""
    identity = int(conn.execute("PRAGMA application_id").fetchone()[0])
    if identity == 0:
        while identity == 0:
            identity = int.from_bytes(os.urandom(4), "big", signed=True)
        conn.execute(f"PRAGMA application_id={identity}")
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    return identity


def out_of_space(exc: sqlite3.Error) -> bool:
    """SQLite's "database or disk is full", or the I/O error a write past a size limit gives."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_FULL,
                                                         sqlite3.SQLITE_IOERR)


def reclaim_wal(conn: sqlite3.Connection, path: Path) -> None:
    """A full disk: the WAL holds many copies of the same few pages (the feed cursor is
    rewritten often) and is checkpointed only after a commit succeeds, so no write would ever
    succeed again. Copy its pages into the database and truncate it, so the next write has
    room (best effort: the caller reports the failure either way)."""
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    except sqlite3.Error as exc:
        log.warning("journal %s: cannot reclaim the WAL's space: %s", path, exc)


def _file_id(path: Path) -> _FileId:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class FileWatch:
    """What the journal's path and its -wal named when the connection opened them."""

    def __init__(self, path: Path, identity: int) -> None:
        """``identity``: the journal's own application id, as its file header holds it. A file
        overwritten in place keeps its inode, but not (unless it is a copy of this very
        journal) this id."""
        self._db, self._wal, _ = side_files(path)
        self._opened = (_file_id(self._db), _file_id(self._wal))
        self._identity = identity
        # Read through one descriptor held until the connection is closed: closing any
        # descriptor of the file would drop the POSIX locks SQLite holds on it, and another
        # process could then delete the WAL under us.
        self._fd = os.open(self._db, os.O_RDONLY | os.O_CLOEXEC)
        # the id reaches the file's header with a checkpoint: until then the header's 0 is fine
        self._stamped = header_id(self._fd) == identity
        self._advice: str | None = None  # set once the open journal has been copied aside

    def problem(self, conn: sqlite3.Connection) -> str | None:
        """None while the path still names the open files; else why not and what to do.

        The first time, what the open connection holds is copied to a file next to the
        journal (``multibot.db.rescued-<time>``), so that nothing journaled is lost even if
        this process dies before anyone acts on the message."""
        now = (_file_id(self._db), _file_id(self._wal))
        if now != self._opened:
            file, current = ((self._db, now[0]) if now[0] != self._opened[0]
                             else (self._wal, now[1]))
            what = "deleted" if current is None else "replaced by another file"
        elif self._header_intact():
            return None
        else:
            file, what = self._db, "overwritten in place (truncated, or copied over)"
        if self._advice is None:
            self._advice = self._rescue(conn)
        return (f"journal file {file} was {what} while the orchestrator ran: trading is "
                f"halted (journal writes would be lost). {self._advice}")

    def close(self) -> None:
        """After the connection is closed (see ``__init__``)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _header_intact(self) -> bool:
        head = header_id(self._fd)
        if head == self._identity:
            self._stamped = True
            return True
        return head == 0 and not self._stamped

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
