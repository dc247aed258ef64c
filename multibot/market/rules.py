"""Binance spot exchange filters: load them, invent plausible ones, check orders against them.

Everything is ``Decimal`` and exact: a paper order is rejected exactly when Binance would answer
-1013 (PRICE_FILTER, PERCENT_PRICE_BY_SIDE, LOT_SIZE, MARKET_LOT_SIZE, NOTIONAL) or -2010
"Filter failure: MAX_NUM_ORDERS". A zero bound means "no bound", as on Binance. Pure module:
stdlib, msgspec and the wire protocol only.
"""

from __future__ import annotations

import functools
import json
import re
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any

import msgspec

from multibot.errors import ErrorCode, ProtocolError
from multibot.market.records import SymbolRules

__all__ = [
    "QUOTE_ASSETS",
    "bundled_rules",
    "check_order",
    "decimal_of",
    "fmt",
    "load_rules",
    "minimum_stake",
    "parse_decimal",
    "price_decimal",
    "round_step_down",
    "round_step_up",
    "synthetic_rules",
]

#: Quote assets :func:`synthetic_rules` recognises (other symbols split off a 3-letter quote).
QUOTE_ASSETS = ("FDUSD", "USDT", "USDC", "BUSD", "BTC", "ETH", "BNB")
SIDES = ("BUY", "SELL")
TYPES = ("MARKET", "LIMIT")
_MAX_EXPONENT = 20
_ZERO = Decimal(0)  # comparing two Decimals is faster than a Decimal and an int
_PLAIN_DECIMAL = re.compile(r"-?[0-9]{1,40}(\.[0-9]{1,40})?")
# Binance's minimum notional for crypto quotes; stablecoin (and unknown) quotes use 5.
_MIN_NOTIONAL = {"BTC": Decimal("0.0001"), "ETH": Decimal("0.001"), "BNB": Decimal("0.01")}


def fmt(value: Decimal) -> str:
    """Plain decimal string without exponent or trailing zeros ("0.00001", "50010", "-0.5")."""
    if type(value) is Decimal:  # the common case, faster
        if not value:
            return "0"  # also folds "-0" and "0E-8"
        # str() is plain (what format(value, "f") gives) unless it has an exponent, and
        # never ends with "."; NaN and Infinity come out as format() gives them
        text = str(value)
        if "E" in text or "e" in text:
            text = format(value, "f")
        elif text[-1] != "0":
            return text  # no trailing zero to strip
    else:
        if value == 0:
            return "0"
        text = format(value, "f")  # not normalize(): that rounds to the context precision
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


#: ``Decimal(text)`` of an exchange-filter string, cached: the same few strings are converted
#: on every order. Construction from a string is exact, so the cache cannot change a value.
decimal_of = functools.lru_cache(maxsize=4096)(Decimal)


def price_decimal(value: float) -> Decimal:
    """``Decimal(repr(value))``: the shortest decimal that round-trips, i.e. what the exchange
    sent. Positive floats are cached (a worker and the broker convert the same closes, and
    repr() is slow); anything else is converted each time (0.0 and -0.0, or 5 and 5.0, would
    be one key to a cache)."""
    if type(value) is float and value > 0.0:
        return _positive_price(value)
    return Decimal(repr(value))


@functools.lru_cache(maxsize=4096)
def _positive_price(value: float) -> Decimal:
    return Decimal(repr(value))


def parse_decimal(text: str, field: str) -> Decimal:
    """A plain decimal ("0.001", "-2") from wire text, else ProtocolError(BAD_BODY).

    Stricter than ``Decimal()``, like Binance: no exponent, NaN, Infinity, "_" or spaces.
    """
    if not isinstance(text, str) or not _PLAIN_DECIMAL.fullmatch(text):
        raise ProtocolError(ErrorCode.BAD_BODY, f"{field} {text!r} is not a plain decimal")
    value = Decimal(text)
    if value and not -_MAX_EXPONENT <= value.adjusted() <= _MAX_EXPONENT:
        # keeps every later product and remainder exact and free of Overflow
        raise ProtocolError(ErrorCode.BAD_BODY, f"{field} {text!r} is out of range")
    return value


# --- loading ---------------------------------------------------------------------------------


class _Symbol(msgspec.Struct, kw_only=True):
    symbol: str
    base_asset: str = msgspec.field(name="baseAsset")
    quote_asset: str = msgspec.field(name="quoteAsset")
    filters: list[dict[str, Any]] = []


class _ExchangeInfo(msgspec.Struct, kw_only=True):
    symbols: list[_Symbol]


def _filter_value(symbol: str, filt: dict[str, Any], key: str) -> str:
    raw = filt.get(key, "0")
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite() or value < 0:
        kind = filt.get("filterType")
        raise ValueError(f"exchangeInfo {symbol} {kind}.{key}={raw!r} is not a decimal >= 0")
    return fmt(value)


def load_rules(exchange_info: dict[str, Any]) -> dict[str, SymbolRules]:
    """Rules of every symbol in a Binance ``exchangeInfo`` response; ValueError if malformed."""
    try:
        info = msgspec.convert(exchange_info, _ExchangeInfo)
    except msgspec.ValidationError as exc:
        raise ValueError(f"not a Binance exchangeInfo document: {exc}") from None
    rules: dict[str, SymbolRules] = {}
    for sym in info.symbols:
        by_type = {str(f.get("filterType")): f for f in sym.filters}
        price = by_type.get("PRICE_FILTER", {})
        lot = by_type.get("LOT_SIZE", {})
        # NOTIONAL replaced MIN_NOTIONAL on Binance; older snapshots still carry the latter.
        notional = by_type.get("NOTIONAL", by_type.get("MIN_NOTIONAL", {}))
        market_lot = by_type.get("MARKET_LOT_SIZE", {})
        side = by_type.get("PERCENT_PRICE_BY_SIDE", {})
        name = sym.symbol
        rules[name] = SymbolRules(
            symbol=name,
            base_asset=sym.base_asset,
            quote_asset=sym.quote_asset,
            tick_size=_filter_value(name, price, "tickSize"),
            min_price=_filter_value(name, price, "minPrice"),
            max_price=_filter_value(name, price, "maxPrice"),
            step_size=_filter_value(name, lot, "stepSize"),
            min_qty=_filter_value(name, lot, "minQty"),
            max_qty=_filter_value(name, lot, "maxQty"),
            min_notional=_filter_value(name, notional, "minNotional"),
            market_max_qty=_filter_value(name, market_lot, "maxQty"),
            bid_multiplier_up=_filter_value(name, side, "bidMultiplierUp"),
            bid_multiplier_down=_filter_value(name, side, "bidMultiplierDown"),
            ask_multiplier_up=_filter_value(name, side, "askMultiplierUp"),
            ask_multiplier_down=_filter_value(name, side, "askMultiplierDown"),
            max_num_orders=int(_filter_value(
                name, by_type.get("MAX_NUM_ORDERS", {}), "maxNumOrders").partition(".")[0]),
        )
    return rules


@functools.cache
def _bundled() -> dict[str, SymbolRules]:
    text = resources.files("multibot.market").joinpath("data/exchange_info.json").read_text("utf-8")
    return load_rules(json.loads(text))


def bundled_rules() -> dict[str, SymbolRules]:
    """Rules from the exchangeInfo snapshot shipped with multibot (parsed once, copied out)."""
    return dict(_bundled())


def synthetic_rules(symbol: str, price: float) -> SymbolRules:
    """Plausible Binance-like filters for a symbol the snapshot does not know.

    Tick: 5-6 significant digits of ``price``. Min notional: 5 (USDT-like quotes) or Binance's
    usual minimum for BTC/ETH/BNB quotes. Step: one step is worth 1/500-1/50 of that minimum
    (0.01-0.1 USDT), at most 1.
    """
    dprice = Decimal(repr(price))
    if not dprice.is_finite() or dprice <= 0:
        raise ValueError(f"synthetic rules need a positive price, got {price!r}")
    base, quote = _split_symbol(symbol)
    magnitude = dprice.adjusted()  # floor(log10(price))
    tick = Decimal(1).scaleb(min(max(magnitude - 5, -8), 0))
    min_notional = _MIN_NOTIONAL.get(quote, Decimal(5))
    step = Decimal(1).scaleb(min(max((min_notional / 50 / dprice).adjusted(), -8), 0))
    max_price = max(Decimal(1).scaleb(magnitude + 4), Decimal(1_000_000))
    # Binance's usual 9,000,000 cap, raised for sub-cent coins so 100,000 quote is orderable.
    max_qty = max(Decimal(1).scaleb((Decimal(10**5) / dprice).adjusted()), Decimal(9_000_000))
    return SymbolRules(
        symbol=symbol,
        base_asset=base,
        quote_asset=quote,
        tick_size=fmt(tick),
        min_price=fmt(tick),
        max_price=fmt(max_price),
        step_size=fmt(step),
        min_qty=fmt(step),
        max_qty=fmt(max_qty),
        min_notional=fmt(min_notional),
    )


def _split_symbol(symbol: str) -> tuple[str, str]:
    for quote in QUOTE_ASSETS:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    if len(symbol) > 3:  # unknown quote: most fiat quotes (EUR, TRY, BRL) have three letters
        return symbol[:-3], symbol[-3:]
    return symbol, "USDT"


# --- rounding --------------------------------------------------------------------------------


def round_step_down(value: Decimal, step: Decimal) -> Decimal:
    """Largest multiple of ``step`` <= ``value`` (``value`` itself when step is 0)."""
    if step <= _ZERO:
        return value
    remainder = value % step  # exact; takes the sign of value
    if not remainder:
        return value
    down = value - remainder
    return down - step if remainder < _ZERO else down


def round_step_up(value: Decimal, step: Decimal) -> Decimal:
    """Smallest multiple of ``step`` >= ``value`` (``value`` itself when step is 0)."""
    down = round_step_down(value, step)
    return down if down == value else down + step


def minimum_stake(rules: SymbolRules, price: Decimal) -> Decimal:
    """The least quote amount an entry at ``price`` can spend: its quantity (the stake over
    the price, rounded down to the step) must reach LOT_SIZE's minimum and NOTIONAL's."""
    qty = max(decimal_of(rules.min_qty), decimal_of(rules.min_notional) / price)
    return round_step_up(qty, decimal_of(rules.step_size)) * price


# --- checking --------------------------------------------------------------------------------


def _reject(filter_name: str, reason: str) -> ProtocolError:
    return ProtocolError(ErrorCode.ORDER_REJECTED, f"{filter_name}: {reason}")


def _off_grid(value: Decimal, start: Decimal, step: Decimal) -> bool:
    # Binance's rule: (value - min) % step == 0. InvalidOperation = absurd magnitude: off-grid.
    if step <= _ZERO:
        return False
    try:
        return bool((value - start) % step)
    except InvalidOperation:
        return True


def check_order(
    rules: SymbolRules,
    side: str,
    type: str,
    qty: Decimal,
    price: Decimal | None,
    last_price: Decimal | None,
    open_orders: int | None = None,
) -> None:
    """Raise ProtocolError as Binance would reject this order; return None if it passes.

    Malformed orders (side, type, missing or stray price, non-positive numbers) are BAD_BODY;
    filter failures are ORDER_REJECTED with "<FILTER>: reason" (Binance -1013). A MARKET order's
    notional uses ``last_price`` and is not checked without one; a LIMIT price's
    PERCENT_PRICE_BY_SIDE band is around ``last_price`` (standing in for Binance's average
    price) and not checked without one. MAX_NUM_ORDERS is checked when the caller passes the
    symbol's ``open_orders``.
    """
    if side not in SIDES:
        raise ProtocolError(ErrorCode.BAD_BODY, f"side must be BUY or SELL, got {side!r}")
    if type not in TYPES:
        raise ProtocolError(ErrorCode.BAD_BODY, f"type must be MARKET or LIMIT, got {type!r}")
    if not qty.is_finite() or qty <= _ZERO:
        raise ProtocolError(ErrorCode.BAD_BODY, f"quantity must be positive, got {qty}")
    if type == "LIMIT":
        if price is None:
            raise ProtocolError(ErrorCode.BAD_BODY, "a LIMIT order needs a price")
        if not price.is_finite() or price <= _ZERO:
            raise ProtocolError(ErrorCode.BAD_BODY, f"price must be positive, got {price}")
        _check_price(rules, price)
        if last_price is not None:
            _check_side_band(rules, side, price, last_price)
    elif price is not None:
        raise ProtocolError(ErrorCode.BAD_BODY, "a MARKET order takes no price")
    _check_lot(rules, qty)
    if open_orders is not None and 0 < rules.max_num_orders <= open_orders:
        raise _reject("MAX_NUM_ORDERS", f"{open_orders} orders are open, the most allowed is "
                                        f"{rules.max_num_orders}")
    if type == "MARKET":
        market_max = decimal_of(rules.market_max_qty)
        if market_max > _ZERO and qty > market_max:
            raise _reject(
                "MARKET_LOT_SIZE",
                f"quantity {fmt(qty)} is above the maximum {fmt(market_max)} for a MARKET order",
            )
    reference = price if type == "LIMIT" else last_price
    if reference is not None:
        notional = qty * reference
        min_notional = decimal_of(rules.min_notional)
        if notional < min_notional:
            raise _reject(
                "NOTIONAL",
                f"notional {fmt(notional)} {rules.quote_asset} (quantity {fmt(qty)} x price "
                f"{fmt(reference)}) is below the minimum {fmt(min_notional)}",
            )


def _check_price(rules: SymbolRules, price: Decimal) -> None:
    min_price, max_price = decimal_of(rules.min_price), decimal_of(rules.max_price)
    tick = decimal_of(rules.tick_size)
    if min_price > _ZERO and price < min_price:
        raise _reject("PRICE_FILTER", f"price {fmt(price)} is below the minimum {fmt(min_price)}")
    if max_price > _ZERO and price > max_price:
        raise _reject("PRICE_FILTER", f"price {fmt(price)} is above the maximum {fmt(max_price)}")
    if _off_grid(price, min_price, tick):
        raise _reject(
            "PRICE_FILTER", f"price {fmt(price)} is not a multiple of the tick size {fmt(tick)}"
        )


def _check_side_band(rules: SymbolRules, side: str, price: Decimal, average: Decimal) -> None:
    up, down = ((rules.bid_multiplier_up, rules.bid_multiplier_down) if side == "BUY"
                else (rules.ask_multiplier_up, rules.ask_multiplier_down))
    high, low = average * decimal_of(up), average * decimal_of(down)
    if high > _ZERO and price > high:
        raise _reject("PERCENT_PRICE_BY_SIDE", f"{side} price {fmt(price)} is above {up} x the "
                                               f"average price {fmt(average)}")
    if price < low:
        raise _reject("PERCENT_PRICE_BY_SIDE", f"{side} price {fmt(price)} is below {down} x "
                                               f"the average price {fmt(average)}")


def _check_lot(rules: SymbolRules, qty: Decimal) -> None:
    min_qty, max_qty = decimal_of(rules.min_qty), decimal_of(rules.max_qty)
    step = decimal_of(rules.step_size)
    if qty < min_qty:
        raise _reject("LOT_SIZE", f"quantity {fmt(qty)} is below the minimum {fmt(min_qty)}")
    if max_qty > _ZERO and qty > max_qty:
        raise _reject("LOT_SIZE", f"quantity {fmt(qty)} is above the maximum {fmt(max_qty)}")
    if _off_grid(qty, min_qty, step):
        raise _reject(
            "LOT_SIZE", f"quantity {fmt(qty)} is not a multiple of the step size {fmt(step)}"
        )
