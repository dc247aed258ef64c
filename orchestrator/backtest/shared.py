"""Bars handed to a backtest child as shared memory, not as bytes in its start-up pipe.

A job's bars (about 2 MB a year of 1m klines) used to travel pickled through the pipe that
starts a forkserver child; the parent then blocked until the new child had booted and read
them all, 64 KB at a time (~6 ms a symbol, and one symbol's child could not start booting
before the previous one had read its bars). Now they are copied once into a memfd whose file
descriptor goes with the child (multiprocessing passes it like a pipe end), and the child maps
it read-only: nothing is copied again and every child of the run starts at once.
"""

from __future__ import annotations

import mmap
import os
from multiprocessing import reduction
from typing import Any

import numpy as np

__all__ = ["SharedBars", "shareable"]


def shareable() -> bool:
    """Whether this platform has memfds (Linux); elsewhere the bars go pickled, as before."""
    return hasattr(os, "memfd_create")


class SharedBars:
    """A read-only copy of ``bars`` in a memfd; pickling it (while a child is being started)
    passes the descriptor, and unpickling maps it: the child gets an equal, read-only array."""

    def __init__(self, bars: np.ndarray) -> None:
        self.dtype, self.count = bars.dtype, len(bars)
        self.fd = os.memfd_create("multibot-bars", os.MFD_CLOEXEC)
        data = np.ascontiguousarray(bars).view(np.uint8).reshape(-1).data
        # write(), not a mapping: the kernel fills the pages without a fault per page
        while data:
            data = data[os.write(self.fd, data):]

    def close(self) -> None:
        """The parent's descriptor; a started child keeps its own."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __reduce__(self) -> tuple[Any, ...]:
        return _attach, (reduction.DupFd(self.fd), self.dtype, self.count)


def _attach(handle: Any, dtype: np.dtype[Any], count: int) -> np.ndarray:
    fd = handle.detach()
    try:
        if not count:
            return np.empty(0, dtype=dtype)
        view = mmap.mmap(fd, count * dtype.itemsize, prot=mmap.PROT_READ)
    finally:
        os.close(fd)  # the mapping keeps the memory
    return np.frombuffer(view, dtype=dtype, count=count)
