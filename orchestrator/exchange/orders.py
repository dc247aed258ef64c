"""Pure conversions between Binance's order and trade documents and the journal's records."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from multibot.market.rules import (
    decimal_of,
    fmt,
    parse_decimal,
    round_step_down,
    round_step_up,
)
from multibot.wire.protocol import ErrorCode, FillView, OrderView, PlaceOrder, SymbolRules
from orchestrator.exchange.client import Rejected

_REJECTION_CODES = {-2010: ErrorCode.INSUFFICIENT_BALANCE, -2011: ErrorCode.UNKNOWN_ORDER,
                    -2013: ErrorCode.UNKNOWN_ORDER, -1121: ErrorCode.UNKNOWN_SYMBOL}


def order_time_ns(data: dict[str, Any]) -> int:
    """When the exchange says an order was placed (its clock), ns; 0 if it does not say."""
    return int(data.get("time") or data.get("transactTime") or 0) * 1_000_000


def number(value: Any) -> str:
    """Binance's "0.00100000" as the journal's "0.001"."""
    try:
        return fmt(Decimal(str(value)))
    except InvalidOperation:
        raise ValueError(f"not a decimal from the exchange: {value!r}") from None


def status_of(data: dict[str, Any]) -> str:
    status = str(data.get("status", ""))
    return "EXPIRED" if status == "EXPIRED_IN_MATCH" else status


def rejection_reason(exc: Rejected) -> str:
    """"insufficient_balance: binance -2010: Account has insufficient balance ..."."""
    code = _REJECTION_CODES.get(exc.binance_code, ErrorCode.ORDER_REJECTED)
    if exc.binance_code == -2010 and "Duplicate order" in exc.message:  # -2010 is not only balance
        code = ErrorCode.ORDER_REJECTED
    return f"{code.value}: {exc.message}"


def order_params(order: PlaceOrder, rules: SymbolRules) -> dict[str, Any]:
    """create_order parameters with quantity and price rounded onto the exchange's grid
    (quantity down, a BUY limit down and a SELL limit up: never a worse trade)."""
    qty = round_step_down(parse_decimal(order.quantity, "quantity"), decimal_of(rules.step_size))
    params: dict[str, Any] = {
        "symbol": rules.symbol, "side": order.side, "type": order.type, "quantity": fmt(qty),
        "newClientOrderId": order.client_order_id, "newOrderRespType": "FULL",
    }
    if order.type == "LIMIT" and order.price is not None:
        tick = decimal_of(rules.tick_size)
        price = parse_decimal(order.price, "price")
        rounded = (round_step_down if order.side == "BUY" else round_step_up)(price, tick)
        params.update(price=fmt(rounded), timeInForce="GTC")
    return params


def fill_from_response(symbol: str, coid: str, side: str, raw: dict[str, Any],
                       trade_id: int, time_ns: int) -> FillView:
    """One entry of a FULL response's ``fills``."""
    return FillView(trade_id=trade_id, client_order_id=coid, symbol=symbol, side=side,
                    price=number(raw["price"]), qty=number(raw["qty"]),
                    fee=number(raw.get("commission", "0")),
                    fee_asset=str(raw.get("commissionAsset", "")), time_ns=time_ns,
                    exchange_trade_id=int(raw["tradeId"]))


def fill_from_trade(coid: str, raw: dict[str, Any], trade_id: int) -> FillView:
    """One entry of ``myTrades``."""
    return FillView(trade_id=trade_id, client_order_id=coid, symbol=str(raw["symbol"]),
                    side="BUY" if raw.get("isBuyer") else "SELL", price=number(raw["price"]),
                    qty=number(raw["qty"]), fee=number(raw.get("commission", "0")),
                    fee_asset=str(raw.get("commissionAsset", "")),
                    time_ns=int(raw.get("time", 0)) * 1_000_000,
                    exchange_trade_id=int(raw["id"]))


def matches_intent(order: OrderView, data: dict[str, Any], tolerance_ns: int,
                   server_offset_ns: int = 0) -> bool:
    """Is ``data`` (found by client order id) the order we journaled, and not an older one
    that reused the id (client ids are unique only among OPEN orders)? ``created_ns`` is on
    our clock, the exchange's time on its own: ``server_offset_ns`` = its minus ours."""
    created = order_time_ns(data)
    return (
        data.get("side") == order.side and data.get("type") == order.type
        and number(data.get("origQty", "0")) == order.quantity
        and (not created or created >= order.created_ns + server_offset_ns - tolerance_ns)
    )


def describe(data: dict[str, Any]) -> str:
    """"web_1 (orderId 7: BUY LIMIT 0.001 @ 50000)" for messages about an order."""
    price = number(data.get("price", "0"))
    at = f" @ {price}" if price != "0" else ""
    return (f"{data.get('clientOrderId')} (orderId {data.get('orderId')}: {data.get('side')} "
            f"{data.get('type')} {number(data.get('origQty', '0'))}{at})")
