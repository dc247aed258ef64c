"""A one-line progress bar on stderr, drawn only on a terminal and only for long runs."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar"]

_WIDTH = 30


class ProgressBar:
    """``update(done)`` redraws at most ~10 times a second, after ``delay`` seconds."""

    def __init__(self, total: int, *, enabled: bool = True, stream: TextIO | None = None,
                 delay: float = 1.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total = max(1, total)
        self.enabled = enabled and self.stream.isatty()
        self.delay = delay
        self._started = time.monotonic()
        self._drawn_at = 0.0
        self._drawn = False

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        elapsed = now - self._started
        if elapsed < self.delay or now - self._drawn_at < 0.1:
            return
        self._drawn_at = now
        share = min(1.0, done / self.total)
        filled = int(share * _WIDTH)
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (self.total - done) / rate if rate > 0 else 0.0
        self.stream.write(f"\r[{'#' * filled}{'.' * (_WIDTH - filled)}] {share:4.0%} "
                          f"{done:,}/{self.total:,} bars  {rate:,.0f} bars/s  ~{left:.0f}s left ")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Erase the bar (if one was drawn), leaving the line for what follows."""
        if self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._drawn = False
