"""Exchange filters: loading Binance exchangeInfo, synthetic rules, rounding, order checks."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, strategies as st

from multibot.market import rules as rules_mod
from multibot.market.rules import (
    bundled_rules,
    check_order,
    fmt,
    load_rules,
    parse_decimal,
    round_step_down,
    round_step_up,
    synthetic_rules,
)
from multibot.wire.protocol import ErrorCode, ProtocolError, SymbolRules

D = Decimal
SNAPSHOT = (Path(__file__).resolve().parents[1] / "multibot" / "market" / "data"
            / "exchange_info.json")
BTC = bundled_rules()["BTCUSDT"]
XRP = bundled_rules()["XRPUSDT"]


def rejection(
    rules: SymbolRules,
    side: str,
    type_: str,
    qty: str,
    price: str | None = None,
    last: str | None = None,
) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        check_order(
            rules, side, type_, D(qty), None if price is None else D(price),
            None if last is None else D(last),
        )  # fmt: skip
    return info.value


# --- loading -------------------------------------------------------------------------------


def test_bundled_rules_match_the_snapshot() -> None:
    assert BTC.base_asset == "BTC" and BTC.quote_asset == "USDT"
    assert (BTC.tick_size, BTC.min_price, BTC.max_price) == ("0.01", "0.01", "1000000")
    assert (BTC.step_size, BTC.min_qty, BTC.max_qty) == ("0.00001", "0.00001", "9000000")
    assert BTC.min_notional == "5"
    assert BTC.market_max_qty == "1000"
    assert (XRP.tick_size, XRP.step_size) == ("0.0001", "0.1")
    assert set(bundled_rules()) >= {"BTCUSDT", "ETHUSDT", "XRPUSDT", "SOLUSDT", "DOGEUSDT"}


def test_bundled_rules_are_parsed_once_and_callers_cannot_corrupt_the_cache() -> None:
    first = bundled_rules()
    first.pop("BTCUSDT")
    assert "BTCUSDT" in bundled_rules()
    assert rules_mod._bundled.cache_info().misses == 1


def test_load_rules_accepts_the_legacy_min_notional_filter() -> None:
    info = json.loads(SNAPSHOT.read_text())
    btc = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
    btc["filters"] = [f for f in btc["filters"] if f["filterType"] != "NOTIONAL"]
    btc["filters"].append({"filterType": "MIN_NOTIONAL", "minNotional": "10.00000000"})
    assert load_rules(info)["BTCUSDT"].min_notional == "10"


def test_load_rules_missing_filters_mean_no_bound() -> None:
    info = {"symbols": [{"symbol": "ABCUSDT", "baseAsset": "ABC", "quoteAsset": "USDT"}]}
    abc = load_rules(info)["ABCUSDT"]
    assert (abc.tick_size, abc.step_size, abc.min_notional, abc.market_max_qty) == ("0",) * 4
    check_order(abc, "BUY", "LIMIT", D("0.123456789"), D("1.23456789"), None)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda info: info.pop("symbols"),
        lambda info: info["symbols"][0].pop("baseAsset"),
        lambda info: info["symbols"][0]["filters"][0].update(tickSize="abc"),
        lambda info: info["symbols"][0]["filters"][1].update(stepSize="-1"),
    ],
)
def test_load_rules_rejects_malformed_exchange_info(mutate: Callable[[Any], object]) -> None:
    info = copy.deepcopy(json.loads(SNAPSHOT.read_text()))
    mutate(info)
    with pytest.raises(ValueError):
        load_rules(info)


# --- synthetic rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "price", "base", "quote", "tick", "step", "min_notional"),
    [
        ("BTCUSDT", 60000.0, "BTC", "USDT", "0.1", "0.000001", "5"),
        ("ETHUSDT", 3000.0, "ETH", "USDT", "0.01", "0.00001", "5"),
        ("XRPUSDC", 0.5, "XRP", "USDC", "0.000001", "0.1", "5"),
        ("PEPEFDUSD", 0.00001, "PEPE", "FDUSD", "0.00000001", "1", "5"),
        ("ETHBTC", 0.05, "ETH", "BTC", "0.0000001", "0.00001", "0.0001"),
        ("SOLBNB", 0.25, "SOL", "BNB", "0.000001", "0.0001", "0.01"),
        ("BTCEUR", 50000.0, "BTC", "EUR", "0.1", "0.000001", "5"),
    ],
)
def test_synthetic_rules_are_plausible(symbol, price, base, quote, tick, step, min_notional):
    rules = synthetic_rules(symbol, price)
    assert (rules.symbol, rules.base_asset, rules.quote_asset) == (symbol, base, quote)
    assert (rules.tick_size, rules.step_size, rules.min_notional) == (tick, step, min_notional)
    assert rules.min_price == rules.tick_size and rules.min_qty == rules.step_size


@given(st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False))
def test_synthetic_rules_let_a_normal_order_through(price: float) -> None:
    rules = synthetic_rules("ABCUSDT", price)
    tick, step = D(rules.tick_size), D(rules.step_size)
    last = D(repr(price))
    if last >= D("0.001"):  # below that the 8-decimal tick floor of Binance takes over
        ticks = round_step_down(last, tick) / tick
        assert 10**5 <= ticks < 10**6 + 1  # 5-6 significant digits
    assert step * last < 1  # one step is worth well under one quote unit
    qty = round_step_up(D(20) / last, step)  # a 20 USDT stake
    check_order(rules, "BUY", "MARKET", qty, None, last)
    check_order(rules, "SELL", "LIMIT", qty, round_step_up(last, tick), last)


def test_synthetic_rules_need_a_positive_price() -> None:
    with pytest.raises(ValueError):
        synthetic_rules("BTCUSDT", 0.0)


# --- rounding ------------------------------------------------------------------------------


def test_rounding_examples() -> None:
    assert round_step_down(D("0.000015"), D("0.00001")) == D("0.00001")
    assert round_step_up(D("0.000015"), D("0.00001")) == D("0.00002")
    assert round_step_up(D("0.00002"), D("0.00001")) == D("0.00002")
    assert round_step_down(D("-0.15"), D("0.1")) == D("-0.2")
    assert round_step_up(D("-0.15"), D("0.1")) == D("-0.1")
    assert round_step_down(D("1.234"), D("0")) == D("1.234")


@given(
    st.decimals(min_value=-(10**6), max_value=10**6, places=8),
    st.sampled_from([D("0.00001"), D("0.01"), D("0.1"), D("1"), D("0.25"), D("5")]),
)
def test_rounding_lands_on_the_grid_within_one_step(value: Decimal, step: Decimal) -> None:
    down, up = round_step_down(value, step), round_step_up(value, step)
    assert down % step == 0 and up % step == 0
    assert down <= value <= up
    assert up - down in (0, step)


def test_fmt_is_plain_and_exact() -> None:
    assert fmt(D("1E-7")) == "0.0000001"
    assert fmt(D("50010.00")) == "50010"
    assert fmt(D("-0")) == "0"
    assert fmt(D("1E+3")) == "1000"
    assert fmt(D("0.1234567890123456789012345678901")) == "0.1234567890123456789012345678901"
    assert fmt(D("0E-8")) == "0" and fmt(D("-1.50")) == "-1.5" and fmt(D("2.5E-3")) == "0.0025"
    assert [fmt(D(x)) for x in ("NaN", "Infinity", "-Infinity")] == ["NaN", "Infinity",
                                                                    "-Infinity"]


def test_parse_decimal_reads_plain_decimals_exactly() -> None:
    assert parse_decimal("0.00100", "quantity") == D("0.001")
    assert parse_decimal("-2", "quantity") == D(-2)  # sign is check_order's business


@pytest.mark.parametrize(
    "text", ["abc", "NaN", "Infinity", "1e5", "1e999", "", " 1", "1_000", "+1", ".5", "1" * 25]
)
def test_parse_decimal_rejects_garbage_as_bad_body(text: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_decimal(text, "quantity")
    assert info.value.code is ErrorCode.BAD_BODY
    assert "quantity" in info.value.reason


# --- check_order with the real bundled rules -----------------------------------------------


def test_valid_orders_pass() -> None:
    check_order(BTC, "BUY", "MARKET", D("0.001"), None, D("50000"))
    check_order(BTC, "SELL", "LIMIT", D("0.00010"), D("50000.01"), None)
    check_order(XRP, "BUY", "LIMIT", D("10.0"), D("0.5001"), D("0.6"))


def test_below_min_notional_is_rejected_with_the_numbers() -> None:
    error = rejection(BTC, "BUY", "MARKET", "0.0001", last="45000")
    assert error.code is ErrorCode.ORDER_REJECTED
    assert error.reason.startswith("NOTIONAL: ")
    assert "4.5" in error.reason and "5" in error.reason
    # a LIMIT order's notional uses its own price, not the market
    error = rejection(XRP, "BUY", "LIMIT", "9.9", price="0.5", last="100")
    assert error.reason.startswith("NOTIONAL: ") and "4.95" in error.reason


def test_off_step_quantity_is_a_lot_size_rejection() -> None:
    error = rejection(BTC, "BUY", "MARKET", "0.000015", last="50000")
    assert error.code is ErrorCode.ORDER_REJECTED
    assert error.reason.startswith("LOT_SIZE: ")
    assert "0.000015" in error.reason and "0.00001" in error.reason
    assert rejection(XRP, "SELL", "LIMIT", "10.05", price="1").reason.startswith("LOT_SIZE: ")


def test_quantity_bounds() -> None:
    assert "minimum" in rejection(BTC, "BUY", "LIMIT", "0.000001", price="60000").reason
    assert "maximum" in rejection(BTC, "BUY", "LIMIT", "9000000.1", price="1").reason
    error = rejection(XRP, "BUY", "MARKET", "1000.1", last="0.5")
    assert error.reason.startswith("MARKET_LOT_SIZE: ") and "1000" in error.reason
    check_order(XRP, "BUY", "LIMIT", D("1000.1"), D("0.5"), None)  # MARKET-only bound


def test_off_tick_price_is_a_price_filter_rejection() -> None:
    error = rejection(BTC, "BUY", "LIMIT", "0.001", price="50000.005")
    assert error.code is ErrorCode.ORDER_REJECTED
    assert error.reason.startswith("PRICE_FILTER: ")
    assert "50000.005" in error.reason and "0.01" in error.reason
    assert rejection(XRP, "BUY", "LIMIT", "100", price="0.50001").reason.startswith(
        "PRICE_FILTER: "
    )
    assert "maximum" in rejection(BTC, "SELL", "LIMIT", "0.001", price="1000000.01").reason


@pytest.mark.parametrize(
    ("side", "type_", "qty", "price", "fragment"),
    [
        ("HOLD", "MARKET", "1", None, "side"),
        ("BUY", "STOP_LOSS", "1", None, "type"),
        ("BUY", "LIMIT", "1", None, "needs a price"),
        ("BUY", "MARKET", "1", "1", "takes no price"),
        ("BUY", "MARKET", "0", None, "positive"),
        ("SELL", "LIMIT", "1", "-1", "positive"),
    ],
)
def test_malformed_orders_are_bad_body(
    side: str, type_: str, qty: str, price: str | None, fragment: str
) -> None:
    error = rejection(XRP, side, type_, qty, price=price, last="1")
    assert error.code is ErrorCode.BAD_BODY
    assert fragment in error.reason


def _with_filters(*extra: dict[str, Any]) -> SymbolRules:
    info = json.loads(SNAPSHOT.read_text())
    symbol = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
    symbol["filters"] = [*symbol["filters"], *extra]
    return load_rules({"symbols": [symbol]})["BTCUSDT"]


def test_percent_price_by_side_bands_limit_prices_around_the_last_price() -> None:
    rules = _with_filters({"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5",
                           "bidMultiplierDown": "0.2", "askMultiplierUp": "4",
                           "askMultiplierDown": "0.5", "avgPriceMins": 5})
    assert (rules.bid_multiplier_up, rules.ask_multiplier_down) == ("5", "0.5")
    high = rejection(rules, "BUY", "LIMIT", "0.001", "250000.01", last="50000")
    assert high.code == ErrorCode.ORDER_REJECTED
    assert str(high.reason).startswith("PERCENT_PRICE_BY_SIDE: BUY price 250000.01 is above 5")
    low = rejection(rules, "SELL", "LIMIT", "0.001", "24999.99", last="50000")
    assert "below 0.5 x the average price 50000" in str(low.reason)
    for side, price in (("BUY", "250000"), ("BUY", "10000"), ("SELL", "200000"),
                        ("SELL", "25000")):
        check_order(rules, side, "LIMIT", D("0.001"), D(price), D("50000"))
    check_order(rules, "BUY", "LIMIT", D("0.001"), D("900000"), None)  # no reference: no band
    assert BTC.bid_multiplier_up == "0"  # the snapshot has no such filter: no band
    check_order(BTC, "BUY", "LIMIT", D("0.001"), D("900000"), D("50000"))


def test_max_num_orders_counts_the_open_orders_passed() -> None:
    rules = _with_filters({"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200})
    assert rules.max_num_orders == 200
    check_order(rules, "BUY", "MARKET", D("0.001"), None, D("50000"), open_orders=199)
    with pytest.raises(ProtocolError) as info:
        check_order(rules, "BUY", "MARKET", D("0.001"), None, D("50000"), open_orders=200)
    assert str(info.value.reason).startswith("MAX_NUM_ORDERS: 200 orders are open")
    check_order(BTC, "BUY", "MARKET", D("0.001"), None, D("50000"), open_orders=10_000)
