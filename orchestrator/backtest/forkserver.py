"""Imported once by the backtest's fork server (see pool._PRELOAD), never by the caller."""

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)
libc.mallopt(_M_TOP_PAD, 4 << 20)
