"""The one exception root and the stable error codes every process and the CLI share.

Every error the product raises on purpose is a ``MultibotError``: it carries a stable
``ErrorCode`` (what scripts and peers match on) and the CLI exit code it maps to. Imports
nothing of the product.
"""

from __future__ import annotations

import enum
from typing import ClassVar

EXIT_FAILED = 1  # the request was fine, the outcome was not (no fleet, a worker failed)
EXIT_USAGE = 2  # bad input: nothing was done


class ErrorCode(enum.StrEnum):
    """Stable error codes. Never renumber or rename: scripts match on them."""

    MALFORMED = "malformed"  # not a msgpack envelope
    BAD_VERSION = "bad_version"
    UNKNOWN_TYPE = "unknown_type"
    BAD_BODY = "bad_body"  # known type, wrong or missing fields
    TOO_LARGE = "too_large"
    NOT_ALLOWED = "not_allowed"  # valid message, wrong socket or wrong moment
    UNKNOWN_SYMBOL = "unknown_symbol"
    NOT_RUNNING = "not_running"
    BAD_CONFIG = "bad_config"
    CONFLICT = "conflict"  # e.g. fleet runs another feed
    NOT_AVAILABLE = "not_available"
    ORDER_REJECTED = "order_rejected"  # exchange filters (Binance -1013)
    INSUFFICIENT_BALANCE = "insufficient_balance"  # Binance -2010
    UNKNOWN_ORDER = "unknown_order"  # Binance -2013
    JOURNAL_UNAVAILABLE = "journal_unavailable"  # trading halts until the journal is writable
    BUSY = "busy"  # too many requests in flight from one peer (or in all)
    SHUTTING_DOWN = "shutting_down"
    TIMEOUT = "timeout"
    INTERNAL = "internal"
    # a decision on a bar at or before the symbol's last journaled decision: a bar is acted
    # on once (the order is not journaled and never reaches the exchange)
    STALE_DECISION = "stale_decision"


# What the user asked for is wrong: the CLI exits 2 (nothing was done); anything else exits 1.
_BAD_INPUT = frozenset({ErrorCode.UNKNOWN_SYMBOL, ErrorCode.BAD_CONFIG, ErrorCode.CONFLICT})
# A fleet's error reply that refuses what was asked (a symbol, a setting, a state) is bad input
# too; any other reply, or none in time, is a failure.
_REFUSED = _BAD_INPUT | {ErrorCode.NOT_RUNNING, ErrorCode.NOT_AVAILABLE}


class MultibotError(Exception):
    """Root of every deliberate error. ``code`` is stable; ``str()`` is for people.

    A subclass sets ``CODE`` (and so its exit code) once; an instance may carry another.
    """

    CODE: ClassVar[ErrorCode] = ErrorCode.INTERNAL

    def __init__(self, reason: str = "", code: ErrorCode | None = None) -> None:
        super().__init__(reason)
        self.code = code if code is not None else self.CODE
        self.reason = reason

    @property
    def exit_code(self) -> int:
        """What the CLI exits with: 2 for bad input, 1 for anything else."""
        return EXIT_USAGE if self.code in _BAD_INPUT else EXIT_FAILED


class ProtocolError(MultibotError):
    """An error with a code, as a peer or the wire reports it (``str()`` shows the code)."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason, code)

    @property
    def exit_code(self) -> int:
        return EXIT_USAGE if self.code in _REFUSED else EXIT_FAILED

    def __str__(self) -> str:
        return f"{self.code.value}: {self.reason}"
