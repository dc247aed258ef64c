"""The order vocabulary of Binance spot, typed: sides, order types and statuses.

``StrEnum`` members equal their strings, so records and the wire keep plain text.
"""

from __future__ import annotations

import enum


class Side(enum.StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(enum.StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"


class OrderStatus(enum.StrEnum):
    # journaled, not yet (or not knowably) acknowledged by the exchange
    PENDING_NEW = "PENDING_NEW"
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    EXPIRED_IN_MATCH = "EXPIRED_IN_MATCH"  # Binance: self-trade prevention


# An order in one of these may still trade; in any other status it never will.
OPEN_STATUSES: frozenset[OrderStatus] = frozenset(
    {OrderStatus.PENDING_NEW, OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED})
FINAL_STATUSES: frozenset[OrderStatus] = frozenset(set(OrderStatus) - OPEN_STATUSES)
