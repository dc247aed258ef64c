"""The fleet's log files as `multibot logs` reads them, locally or for a remote client over
the control socket (``Logs``/``LogText``): which file a name means, its last lines, and what
was appended since an offset, each reply bounded in size."""

from __future__ import annotations

import os
from pathlib import Path

from multibot.errors import ErrorCode, ProtocolError
from multibot.wire.home import Home

MAX_LOG_LINES = 10_000  # `logs -n` beyond this is refused, not read
# one reply's text: even if every byte is undecodable (3 bytes each as U+FFFD) the reply stays
# below the wire's MAX_MESSAGE_BYTES
MAX_LOG_BYTES = 256 << 10
_BYTES_PER_LINE = 400  # how far back to read for the last n lines


def log_path(home: Home, name: str) -> Path:
    """The log a user means by ``name`` (a symbol, or 'orchestrator'): only an existing log
    of this home, never a path built from the name (a remote client sends it)."""
    wanted = name.strip()
    wanted = "orchestrator" if wanted.lower() == "orchestrator" else wanted.upper()
    known = sorted(p.stem for p in home.logs_dir.glob("*.log")) if home.logs_dir.is_dir() else []
    if wanted not in known:
        raise ProtocolError(ErrorCode.NOT_AVAILABLE,
                            f"no log for {name[:64]!r} in {home.logs_dir}; "
                            f"available: {', '.join(known) or 'none'}")
    return home.logs_dir / f"{wanted}.log"


def check_lines(lines: int) -> int:
    if not 0 <= lines <= MAX_LOG_LINES:
        raise ProtocolError(ErrorCode.BAD_BODY, f"lines must be 0..{MAX_LOG_LINES}, not {lines}")
    return lines


def last_lines(path: Path, count: int) -> tuple[str, int]:
    """The last ``count`` lines of ``path`` (at most MAX_LOG_BYTES), and the file's end offset."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        f.seek(max(0, end - min(max(count, 1) * _BYTES_PER_LINE, MAX_LOG_BYTES)))
        data = f.read(end - f.tell())
    lines = data.splitlines(keepends=True)[-count:] if count > 0 else []
    return b"".join(lines).decode(errors="replace"), end


def read_from(path: Path, offset: int) -> tuple[str, int]:
    """What was appended to ``path`` after ``offset`` (at most MAX_LOG_BYTES), and the offset
    to ask from next. A file now shorter than ``offset`` was rotated or truncated: read it
    from its start."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        start = offset if 0 <= offset <= end else 0
        f.seek(start)
        data = f.read(MAX_LOG_BYTES)
    return data.decode(errors="replace"), start + len(data)
