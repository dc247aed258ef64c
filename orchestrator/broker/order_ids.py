"""Client order ids: which ones Binance accepts, and the sequence number in multibot's own."""

from __future__ import annotations

import re

from multibot.errors import ErrorCode, ProtocolError

__all__ = ["MAX_SEQ", "check_client_order_id", "parse_seq"]

_COID_RE = re.compile(r"[A-Za-z0-9_-]{1,36}")
_SEQ_DIGITS = 18  # a seq fits SQLite's signed 64-bit INTEGER
MAX_SEQ = 10**15  # the most a worker may ask for: the ids after it stay numbered for ever


def parse_seq(symbol: str, coid: str) -> int:
    """``seq`` of an id made by ``client_order_id`` (multibot.wire.protocol) for ``symbol``;
    0 for any other id."""
    prefix = f"mb-{symbol}-"
    if not coid.startswith(prefix):
        return 0
    rest = coid[len(prefix) :]
    # 1 to 18 ASCII digits (isdigit alone would also take other scripts' digits)
    return int(rest) if len(rest) <= _SEQ_DIGITS and rest.isascii() and rest.isdigit() else 0


def check_client_order_id(coid: str) -> None:
    """BAD_BODY unless ``coid`` is an id Binance accepts."""
    if not _COID_RE.fullmatch(coid):
        raise ProtocolError(
            ErrorCode.BAD_BODY,
            f"client_order_id {coid!r} must be 1-36 characters from A-Z a-z 0-9 _ -",
        )
