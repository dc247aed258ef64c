"""Reading log files for `multibot logs [-f]` (rotation-aware follow)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TextIO


def last_lines(path: Path, count: int) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - max(count, 1) * 400))
        data = f.read()
    lines = data.splitlines(keepends=True)[-count:] if count > 0 else []
    return b"".join(lines).decode(errors="replace")


def follow_file(path: Path, out: TextIO, poll_s: float = 0.2,
                stop_after_s: float | None = None) -> None:
    """Print what is appended to ``path``; reopens when the file is rotated or truncated."""
    started = time.monotonic()
    f = open(path, "rb")  # noqa: SIM115 - reopened on rotation, closed in finally
    f.seek(0, os.SEEK_END)
    inode = os.fstat(f.fileno()).st_ino
    try:
        while stop_after_s is None or time.monotonic() - started < stop_after_s:
            chunk = f.read()
            if chunk:
                out.write(chunk.decode(errors="replace"))
                out.flush()
                continue
            time.sleep(poll_s)
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                continue
            if stat.st_ino != inode or stat.st_size < f.tell():
                f.close()
                f = open(path, "rb")  # noqa: SIM115
                inode = os.fstat(f.fileno()).st_ino
    finally:
        f.close()
