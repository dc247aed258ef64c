"""The fake's order records and the parameters that find them: an order's state, its
Binance views, and the id/limit parameters of the lookups."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tests.fakes.binance.errors import f8, illegal

_ZERO = Decimal(0)
_ID = "^[0-9]{1,20}$"


@dataclass
class Order:
    symbol: str
    order_id: int
    client_id: str
    side: str
    type: str
    price: Decimal
    orig_qty: Decimal
    orig_quote_qty: Decimal
    time: int
    stp: str
    time_in_force: str = "GTC"  # Binance reports GTC for MARKET orders too
    executed: Decimal = _ZERO
    cum_quote: Decimal = _ZERO
    status: str = "NEW"
    update_time: int = 0
    fill_ticks: int = 0  # crossing ticks that filled part of it (partial_fills)
    fills: list[dict[str, Any]] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed

    def result_fields(self) -> dict[str, Any]:
        return {"price": f8(self.price), "origQty": f8(self.orig_qty),
                "executedQty": f8(self.executed), "origQuoteOrderQty": f8(self.orig_quote_qty),
                "cummulativeQuoteQty": f8(self.cum_quote), "status": self.status,
                "timeInForce": self.time_in_force, "type": self.type,
                "side": self.side, "workingTime": self.time, "selfTradePreventionMode": self.stp}

    def view(self) -> dict[str, Any]:
        """GET /api/v3/order."""
        fields = self.result_fields()
        return {"symbol": self.symbol, "orderId": self.order_id, "orderListId": -1,
                "clientOrderId": self.client_id, "price": fields["price"],
                "origQty": fields["origQty"], "executedQty": fields["executedQty"],
                "cummulativeQuoteQty": fields["cummulativeQuoteQty"], "status": self.status,
                "timeInForce": self.time_in_force, "type": self.type, "side": self.side,
                "stopPrice": f8(_ZERO), "icebergQty": f8(_ZERO), "time": self.time,
                "updateTime": self.update_time, "isWorking": True, "workingTime": self.time,
                "origQuoteOrderQty": fields["origQuoteOrderQty"],
                "selfTradePreventionMode": self.stp}


def order_id_param(params: dict[str, str], name: str) -> int | None:
    text = params.get(name)
    if text is None or text == "":
        return None
    if not text.isdigit() or len(text) > 20:
        raise illegal(name, _ID)
    return int(text)


def limit_param(params: dict[str, str], default: int = 500, most: int = 1000) -> int:
    value = order_id_param(params, "limit")
    return default if value is None else max(1, min(value, most))
