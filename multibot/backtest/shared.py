"""Shared memory for backtest children: the job's bars and the progress counters.

A job's bars (about 2 MB a year of 1m klines) used to travel pickled through the pipe that
starts a child; the parent then blocked until the new child had booted and read them all,
64 KB at a time (~6 ms a symbol, and one symbol's child could not start booting before the
previous one had read its bars). Now they are copied once into a memfd whose descriptor goes
with the child, and the child maps it read-only: nothing is copied again and every child of
the run starts at once. Each child's progress (bars done) is a 64-bit slot of a shared array.
"""

from __future__ import annotations

import mmap
import os
import tempfile

import numpy as np

from multibot.market.bundled import KLINE_DTYPE

__all__ = ["Counters", "SharedBars", "attach_bars", "attach_counters", "shareable"]


def shareable() -> bool:
    """Whether this platform has memfds (Linux); elsewhere the bars go pickled, as before."""
    return hasattr(os, "memfd_create")


class SharedBars:
    """A read-only copy of ``bars`` (KLINE_DTYPE) in a memfd, for ``attach_bars`` in a child."""

    def __init__(self, bars: np.ndarray) -> None:
        self.fd = os.memfd_create("multibot-bars", os.MFD_CLOEXEC)
        data = np.ascontiguousarray(bars, dtype=KLINE_DTYPE).view(np.uint8).reshape(-1).data
        # write(), not a mapping: the kernel fills the pages without a fault per page
        while data:
            data = data[os.write(self.fd, data):]

    def close(self) -> None:
        """The parent's descriptor; a started child keeps its own."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def attach_bars(fd: int, count: int) -> np.ndarray:
    """The ``count`` bars of a SharedBars' descriptor (closed here: the mapping keeps the
    memory)."""
    try:
        if not count:
            return np.empty(0, dtype=KLINE_DTYPE)
        view = mmap.mmap(fd, count * KLINE_DTYPE.itemsize, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    return np.frombuffer(view, dtype=KLINE_DTYPE, count=count)


class Counters:
    """``size`` signed 64-bit counters in shared memory: a memfd, or an unlinked temporary
    file where there are none. ``values[i]`` reads and writes one."""

    def __init__(self, size: int) -> None:
        if shareable():
            self.fd = os.memfd_create("multibot-progress", os.MFD_CLOEXEC)
        else:
            with tempfile.TemporaryFile() as file:
                self.fd = os.dup(file.fileno())
        os.ftruncate(self.fd, max(1, size) * 8)
        self._map = mmap.mmap(self.fd, max(1, size) * 8)
        self.values = memoryview(self._map).cast("q")

    def total(self) -> int:
        return sum(self.values)

    def close(self) -> None:
        if self.fd >= 0:
            self.values.release()
            self._map.close()
            os.close(self.fd)
            self.fd = -1


def attach_counters(fd: int) -> memoryview:
    """The counters of a Counters' descriptor, in a child (the descriptor is closed here)."""
    try:
        view = mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    return memoryview(view).cast("q")
