"""Parsing and validating a new order exactly as Binance does, before any balance moves:
mandatory and malformed parameters (-1102/-1100 and friends), then the exchange filters
(-1013). Pure functions over ``Decimal``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from tests.fakes.binance.errors import bad_request, filter_failure, illegal, mandatory
from tests.fakes.binance.symbols import SymbolRules

_NUMBER = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")
_NUMBER_LEGAL = r"^([0-9]{1,20})(\.[0-9]{1,20})?$"
_CLIENT_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
_CLIENT_ID_LEGAL = r"^[\.A-Z\:/a-z0-9_-]{1,36}$"
RESP_TYPES = ("ACK", "RESULT", "FULL")
_ZERO = Decimal(0)


@dataclass(frozen=True)
class NewOrder:
    symbol: str
    side: str
    type: str
    quantity: Decimal | None   # None: a MARKET order by quoteOrderQty
    quote_qty: Decimal
    price: Decimal             # 0 for MARKET
    time_in_force: str | None
    client_id: str | None
    resp_type: str


def decimal_param(params: dict[str, str], name: str) -> Decimal | None:
    text = params.get(name)
    if text is None or text == "":
        return None
    if not _NUMBER.match(text):
        raise illegal(name, _NUMBER_LEGAL)
    return Decimal(text)


def client_id_param(params: dict[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if not _CLIENT_ID.match(value):
        raise illegal(name, _CLIENT_ID_LEGAL)
    return value


def parse_new_order(params: dict[str, str], symbol: str) -> NewOrder:
    """The parameters of POST /api/v3/order (the symbol is already known to exist)."""
    for name in ("side", "type"):
        if not params.get(name):
            raise mandatory(name)
    side, kind = params["side"], params["type"]
    if side not in ("BUY", "SELL"):
        raise bad_request(-1117, "Invalid side.")
    if kind not in ("MARKET", "LIMIT"):
        raise bad_request(-1116, "Invalid orderType.")
    quantity = decimal_param(params, "quantity")
    quote_qty = decimal_param(params, "quoteOrderQty")
    price = decimal_param(params, "price")
    tif = params.get("timeInForce") or None
    if kind == "LIMIT":
        if quote_qty is not None:
            raise bad_request(-1106, "Parameter 'quoteOrderQty' sent when not required.")
        for name, value in (("timeInForce", tif), ("quantity", quantity), ("price", price)):
            if value is None:
                raise mandatory(name)
        if tif not in ("GTC", "IOC", "FOK"):
            raise bad_request(-1115, "Invalid timeInForce.")
    else:
        if quantity is None and quote_qty is None:
            raise bad_request(-1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but "
                                     "both were empty/null!")
        if quantity is not None and quote_qty is not None:
            raise bad_request(-1106, "Parameter 'quoteOrderQty' sent when not required.")
        if price is not None:
            raise bad_request(-1106, "Parameter 'price' sent when not required.")
        if tif is not None:
            raise bad_request(-1106, "Parameter 'timeInForce' sent when not required.")
    resp_type = params.get("newOrderRespType") or "FULL"
    if resp_type not in RESP_TYPES:
        raise illegal("newOrderRespType", "ACK, RESULT, FULL")
    return NewOrder(symbol=symbol, side=side, type=kind, quantity=quantity,
                    quote_qty=quote_qty or _ZERO, price=price or _ZERO, time_in_force=tif,
                    client_id=client_id_param(params, "newClientOrderId"), resp_type=resp_type)


def _off_step(value: Decimal, base: Decimal, step: Decimal) -> bool:
    return step > 0 and (value - base) % step != 0


def _lot_ok(qty: Decimal, low: Decimal, high: Decimal, step: Decimal) -> bool:
    return not (qty <= 0 or qty < low or (high and qty > high) or _off_step(qty, low, step))


def market_quantity(order: NewOrder, rules: SymbolRules, price: Decimal) -> Decimal:
    """The base quantity of a MARKET order; by quoteOrderQty it is the most the quote amount
    buys (or sells for) at the current price, rounded down to the lot step."""
    if order.quantity is not None:
        return order.quantity
    step = rules.market_step or rules.step
    return (order.quote_qty / price / step).to_integral_value(ROUND_DOWN) * step


def check_filters(order: NewOrder, rules: SymbolRules, qty: Decimal, price: Decimal,
                  average: Decimal) -> None:
    """-1013 "Filter failure: <FILTER>" as Binance checks them; ``price`` is the limit price
    or, for MARKET, the current price (used for the notional only); ``average`` stands for
    Binance's average price over avgPriceMins (the fake uses the current price)."""
    if order.type == "LIMIT" and not _lot_ok(price, rules.min_price, rules.max_price,
                                             rules.tick):
        raise filter_failure("PRICE_FILTER")  # the same bounds-and-grid rule as a lot
    if order.type == "LIMIT" and not _within_side_band(order.side, price, average, rules):
        raise filter_failure("PERCENT_PRICE_BY_SIDE")
    if not _lot_ok(qty, rules.min_qty, rules.max_qty, rules.step):
        raise filter_failure("LOT_SIZE")
    if order.type == "MARKET" and not _lot_ok(qty, rules.market_min_qty, rules.market_max_qty,
                                              rules.market_step):
        raise filter_failure("MARKET_LOT_SIZE")
    notional = qty * price
    name = "NOTIONAL" if "NOTIONAL" in _filter_names(rules) else "MIN_NOTIONAL"
    applies_min = order.type == "LIMIT" or rules.min_notional_market
    if applies_min and rules.min_notional and notional < rules.min_notional:
        raise filter_failure(name)
    applies_max = order.type == "LIMIT" or rules.max_notional_market
    if applies_max and rules.max_notional and notional > rules.max_notional:
        raise filter_failure(name)


def _within_side_band(side: str, price: Decimal, average: Decimal, rules: SymbolRules) -> bool:
    up, down = (rules.bid_up, rules.bid_down) if side == "BUY" else (rules.ask_up, rules.ask_down)
    return not ((up and price > average * up) or (down and price < average * down))


def _filter_names(rules: SymbolRules) -> set[str]:
    return {f["filterType"] for f in rules.info.get("filters", [])}

