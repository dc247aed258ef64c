"""The user data stream's events, in Binance's exact shape: ``executionReport`` for every
order state change and fill, ``outboundAccountPosition`` after every balance change an order
causes, ``balanceUpdate`` for deposits. The account queues them (under the fake's lock) and
the WebSocket API pushes them to its subscriptions (ws_api.py)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tests.fakes.binance.book import Order
from tests.fakes.binance.errors import f8

_ZERO = Decimal(0)


def execution_report(order: Order, exec_type: str, now_ms: int,
                     fill: dict[str, Any] | None = None, maker: bool = False,
                     cancel_id: str | None = None, reject: str = "NONE") -> dict[str, Any]:
    """One executionReport; ``fill`` is the order's fill that caused it (x=TRADE)."""
    last_qty = Decimal(fill["qty"]) if fill else _ZERO
    last_price = Decimal(fill["price"]) if fill else _ZERO
    return {
        "e": "executionReport", "E": now_ms, "s": order.symbol,
        "c": cancel_id if cancel_id is not None else order.client_id,
        "S": order.side, "o": order.type, "f": order.time_in_force,
        "q": f8(order.orig_qty), "p": f8(order.price), "P": f8(_ZERO), "F": f8(_ZERO),
        "g": -1, "C": order.client_id if cancel_id is not None else "",
        "x": exec_type, "X": order.status, "r": reject, "i": order.order_id,
        "l": f8(last_qty), "z": f8(order.executed), "L": f8(last_price),
        "n": fill["commission"] if fill else "0", "N": fill["commissionAsset"] if fill else None,
        "T": now_ms, "t": fill["tradeId"] if fill else -1, "I": order.order_id * 2 + 1,
        "w": order.is_open, "m": maker, "M": False, "O": order.time,
        "Z": f8(order.cum_quote), "Y": f8(last_qty * last_price),
        "Q": f8(order.orig_quote_qty), "W": order.time, "V": order.stp,
    }


def account_position(balances: dict[str, list[Decimal]], assets: list[str],
                     now_ms: int) -> dict[str, Any]:
    """outboundAccountPosition: the changed assets' free and locked balances."""
    return {"e": "outboundAccountPosition", "E": now_ms, "u": now_ms,
            "B": [{"a": a, "f": f8(balances[a][0]), "l": f8(balances[a][1])}
                  for a in dict.fromkeys(assets)]}


def balance_update(asset: str, delta: Decimal, now_ms: int) -> dict[str, Any]:
    """balanceUpdate: a deposit, withdrawal or transfer of ``delta``."""
    return {"e": "balanceUpdate", "E": now_ms, "a": asset, "d": f8(delta) if delta >= 0
            else "-" + f8(-delta), "T": now_ms}
