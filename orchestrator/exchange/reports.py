"""What crosses the exchange adapter's boundary, typed: the one request multibot sends about an
order, and the reports Binance's JSON becomes (after nautilus_trader's ``OrderStatusReport``
and ``FillReport``).

The parsers here are the only code that reads python-binance's dicts; the client
(orchestrator.exchange.client) returns their reports, so nothing past it sees a dict. Decimals
arrive as the journal writes them ("0.001", not Binance's "0.00100000"); a document that is
not what Binance sends raises ValueError (KeyError when a field it must have is missing).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from multibot.market.orders import OrderStatus, OrderType, Side
from multibot.market.rules import fmt

__all__ = [
    "AccountReport",
    "FillReport",
    "OrderRequest",
    "OrderStatusReport",
    "account_report",
    "execution_report",
    "number",
    "order_report",
    "trade_report",
]

_STATUSES = {status.value: status for status in OrderStatus}


class OrderRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A new order, already checked and on the exchange's price and quantity grid."""

    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    quantity: str
    price: str | None = None  # LIMIT only (good till cancelled)


class FillReport(msgspec.Struct, frozen=True, kw_only=True):
    """One trade of an order: an entry of an order's ``fills`` (FULL responses) or of
    ``myTrades``."""

    trade_id: int  # Binance's tradeId, per symbol
    symbol: str
    side: Side  # of the order that traded
    price: str
    qty: str
    commission: str
    commission_asset: str
    time_ms: int | None = None  # myTrades only: a response's fills carry no time
    is_maker: bool | None = None  # myTrades only
    order_id: int | None = None  # myTrades only: Binance's orderId of the order that traded


class OrderStatusReport(msgspec.Struct, frozen=True, kw_only=True):
    """The exchange's state of one order: a create, query or cancel response, or an entry of
    ``openOrders``."""

    client_order_id: str  # the order's own, also in a cancel's answer (origClientOrderId)
    order_id: int | None  # Binance's orderId
    symbol: str
    side: Side
    type: str  # an OrderType, or another Binance type for an order multibot did not place
    status: OrderStatus | None  # None: the document gives none that we know
    orig_qty: str
    executed_qty: str | None  # None: the document does not say
    cumulative_quote: str
    price: str  # "0" for a MARKET order
    time_ms: int  # when it was placed (the exchange's clock); 0 if the document does not say
    fills: tuple[FillReport, ...] = ()


class AccountReport(msgspec.Struct, frozen=True, kw_only=True):
    can_trade: bool
    balances: dict[str, tuple[str, str]]  # asset -> (free, locked)

    def holds(self, asset: str) -> Decimal:
        """Free plus locked of ``asset``; 0 if the account has none."""
        free, locked = self.balances.get(asset, ("0", "0"))
        return Decimal(free) + Decimal(locked)


def number(value: Any) -> str:
    """Binance's "0.00100000" as the journal's "0.001". Its numbers are finite: NaN or
    Infinity is not a document Binance sends (and would poison every sum it entered)."""
    try:
        decimal = Decimal(str(value))
    except InvalidOperation:
        decimal = Decimal("NaN")
    if not decimal.is_finite():
        raise ValueError(f"not a decimal from the exchange: {value!r}")
    return fmt(decimal)


def _side(value: Any) -> Side:
    try:
        return Side(value)
    except ValueError:
        raise ValueError(f"not an order side from the exchange: {value!r}") from None


def order_report(data: Mapping[str, Any]) -> OrderStatusReport:
    """An order document: POST, GET or DELETE ``order``, or an entry of ``openOrders``."""
    symbol, side = str(data.get("symbol", "")), _side(data.get("side"))
    order_id = data.get("orderId")
    executed = data.get("executedQty")
    return OrderStatusReport(
        client_order_id=str(data.get("origClientOrderId") or data.get("clientOrderId") or ""),
        order_id=None if order_id is None else int(order_id),
        symbol=symbol,
        side=side,
        type=str(data.get("type", "")),
        status=_STATUSES.get(str(data.get("status", ""))),
        orig_qty=number(data.get("origQty", "0")),
        executed_qty=None if executed is None else number(executed),
        cumulative_quote=number(data.get("cummulativeQuoteQty", "0")),
        price=number(data.get("price", "0")),
        time_ms=int(data.get("time") or data.get("transactTime") or 0),
        fills=tuple(_response_fill(symbol, side, fill) for fill in data.get("fills") or ()),
    )


def _response_fill(symbol: str, side: Side, raw: Mapping[str, Any]) -> FillReport:
    return FillReport(trade_id=int(raw["tradeId"]), symbol=symbol, side=side,
                      price=number(raw["price"]), qty=number(raw["qty"]),
                      commission=number(raw.get("commission", "0")),
                      commission_asset=str(raw.get("commissionAsset", "")))


def trade_report(raw: Mapping[str, Any]) -> FillReport:
    """An entry of ``myTrades``."""
    maker = raw.get("isMaker")
    return FillReport(trade_id=int(raw["id"]), symbol=str(raw["symbol"]),
                      side=Side.BUY if raw.get("isBuyer") else Side.SELL,
                      price=number(raw["price"]), qty=number(raw["qty"]),
                      commission=number(raw.get("commission", "0")),
                      commission_asset=str(raw.get("commissionAsset", "")),
                      time_ms=int(raw.get("time", 0)),
                      is_maker=None if maker is None else bool(maker),
                      order_id=None if raw.get("orderId") is None else int(raw["orderId"]))


def execution_report(event: Mapping[str, Any]) -> OrderStatusReport:
    """A user data stream ``executionReport``: the order's state after the event, with the
    one trade it reports (execution type TRADE). A cancel's ``c`` is the cancel's own id, its
    ``C`` the order's."""
    symbol, side = str(event.get("s", "")), _side(event.get("S"))
    order_id = event.get("i")
    fills: tuple[FillReport, ...] = ()
    if event.get("x") == "TRADE":
        fills = (FillReport(trade_id=int(event["t"]), symbol=symbol, side=side,
                            price=number(event["L"]), qty=number(event["l"]),
                            commission=number(event.get("n") or "0"),
                            commission_asset=str(event.get("N") or ""),
                            time_ms=int(event.get("T") or 0),
                            is_maker=bool(event.get("m", False)),
                            order_id=None if order_id is None else int(order_id)),)
    return OrderStatusReport(
        client_order_id=str(event.get("C") or event.get("c") or ""),
        order_id=None if order_id is None else int(order_id),
        symbol=symbol,
        side=side,
        type=str(event.get("o", "")),
        status=_STATUSES.get(str(event.get("X", ""))),
        orig_qty=number(event.get("q", "0")),
        executed_qty=number(event["z"]),
        cumulative_quote=number(event.get("Z", "0")),
        price=number(event.get("p", "0")),
        time_ms=int(event.get("O") or 0),
        fills=fills,
    )


def account_report(data: Mapping[str, Any]) -> AccountReport:
    """GET ``account``: whether it may trade, and its balances."""
    balances: dict[str, tuple[str, str]] = {}
    for balance in data.get("balances", []):
        asset = str(balance.get("asset", ""))
        if asset not in balances:  # the first entry of an asset counts
            balances[asset] = (number(balance.get("free", "0")),
                               number(balance.get("locked", "0")))
    return AccountReport(can_trade=bool(data.get("canTrade", False)), balances=balances)
