"""The fake's symbols: exchange rules from the bundled exchangeInfo, start prices from the
bundled klines. Everything a filter check needs is parsed to ``Decimal`` once, here.

Each symbol carries Binance's full filter set, in real BTCUSDT's order: the bundled snapshot's
filters, plus those it lacks with real BTCUSDT's values (ICEBERG_PARTS, TRAILING_DELTA,
PERCENT_PRICE_BY_SIDE, MAX_NUM_ORDERS, MAX_NUM_ALGO_ORDERS). ``FakeBinance.set_filter(symbol,
{...})`` replaces one (by filterType) for a test, e.g. ``{"filterType": "MAX_NUM_ORDERS",
"maxNumOrders": 2}``."""

from __future__ import annotations

import copy
import functools
import gzip
import json
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from importlib import resources
from typing import Any

QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "BTC", "ETH", "BNB")
DEFAULT_START_PRICE = 100.0
_ZERO = Decimal(0)
# real BTCUSDT's filters (spot, 2025), in Binance's order; the bundled snapshot's own win
REAL_FILTERS: list[dict[str, Any]] = [
    {"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000",
     "tickSize": "0.01000000"},
    {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000",
     "stepSize": "0.00001000"},
    {"filterType": "ICEBERG_PARTS", "limit": 10},
    {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": "83.98590590",
     "stepSize": "0.00000000"},
    {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10, "maxTrailingAboveDelta": 2000,
     "minTrailingBelowDelta": 10, "maxTrailingBelowDelta": 2000},
    {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5", "bidMultiplierDown": "0.2",
     "askMultiplierUp": "5", "askMultiplierDown": "0.2", "avgPriceMins": 5},
    {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
     "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
    {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
    {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
]
_ORDER = [f["filterType"] for f in REAL_FILTERS]


@functools.cache
def bundled_exchange_info() -> dict[str, Any]:
    raw = resources.files("multibot.market").joinpath("data", "exchange_info.json").read_text()
    info: dict[str, Any] = json.loads(raw)
    return info


@functools.cache
def bundled_last_close(symbol: str) -> float | None:
    """Last close of the bundled 1m (else 1h) klines; read straight from the file because
    loading the whole array (numpy) for one number would slow every fake's start-up."""
    folder = resources.files("multibot.market").joinpath("data", "klines")
    for interval in ("1m", "1h", "1d"):
        entry = folder.joinpath(f"{symbol}-{interval}.csv.gz")
        if not entry.is_file():
            continue
        lines = gzip.decompress(entry.read_bytes()).decode().strip().splitlines()
        if len(lines) > 1:
            return float(lines[-1].split(",")[4])  # open_time,open,high,low,close,...
    return None


@dataclass(frozen=True)
class SymbolRules:
    """One symbol's exchangeInfo entry plus its filters as Decimals (zero = no bound)."""

    symbol: str
    base: str
    quote: str
    info: dict[str, Any]
    tick: Decimal
    min_price: Decimal
    max_price: Decimal
    step: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_step: Decimal
    market_min_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal
    min_notional_market: bool
    max_notional: Decimal
    max_notional_market: bool
    stp_mode: str
    # PERCENT_PRICE_BY_SIDE (zero: no bound): a BUY's price within [bid_down, bid_up] x the
    # average price, a SELL's within [ask_down, ask_up]
    bid_up: Decimal
    bid_down: Decimal
    ask_up: Decimal
    ask_down: Decimal
    max_num_orders: int  # MAX_NUM_ORDERS: open orders per symbol (0: no limit)

    def snap_price(self, value: float) -> Decimal:
        """Nearest price on the tick grid, at least one tick."""
        ticks = (Decimal(repr(value)) / self.tick).to_integral_value(ROUND_HALF_EVEN)
        return max(ticks, Decimal(1)) * self.tick


def _filters(info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["filterType"]: f for f in info.get("filters", [])}


def _dec(table: dict[str, Any], key: str) -> Decimal:
    return Decimal(str(table.get(key, "0")))


def rules_from_info(info: dict[str, Any]) -> SymbolRules:
    filters = _filters(info)
    price = filters.get("PRICE_FILTER", {})
    lot = filters.get("LOT_SIZE", {})
    market_lot = filters.get("MARKET_LOT_SIZE", {})
    side = filters.get("PERCENT_PRICE_BY_SIDE", {})
    notional = filters.get("NOTIONAL")
    legacy = filters.get("MIN_NOTIONAL")
    if notional is not None:
        min_notional = _dec(notional, "minNotional")
        min_market = bool(notional.get("applyMinToMarket", True))
        max_notional = _dec(notional, "maxNotional")
        max_market = bool(notional.get("applyMaxToMarket", False))
    elif legacy is not None:
        min_notional, min_market = _dec(legacy, "minNotional"), bool(legacy.get("applyToMarket"))
        max_notional, max_market = _ZERO, False
    else:
        min_notional, min_market, max_notional, max_market = _ZERO, False, _ZERO, False
    return SymbolRules(
        symbol=info["symbol"], base=info["baseAsset"], quote=info["quoteAsset"], info=info,
        tick=_dec(price, "tickSize") or Decimal("0.01"), min_price=_dec(price, "minPrice"),
        max_price=_dec(price, "maxPrice"), step=_dec(lot, "stepSize") or Decimal("0.00000001"),
        min_qty=_dec(lot, "minQty"), max_qty=_dec(lot, "maxQty"),
        market_step=_dec(market_lot, "stepSize"), market_min_qty=_dec(market_lot, "minQty"),
        market_max_qty=_dec(market_lot, "maxQty"), min_notional=min_notional,
        min_notional_market=min_market, max_notional=max_notional,
        max_notional_market=max_market,
        stp_mode=str(info.get("defaultSelfTradePreventionMode", "NONE")),
        bid_up=_dec(side, "bidMultiplierUp"), bid_down=_dec(side, "bidMultiplierDown"),
        ask_up=_dec(side, "askMultiplierUp"), ask_down=_dec(side, "askMultiplierDown"),
        max_num_orders=int(filters.get("MAX_NUM_ORDERS", {}).get("maxNumOrders", 0)),
    )


def full_filters(filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``filters`` plus real BTCUSDT's for the types it lacks, in Binance's order; a legacy
    MIN_NOTIONAL stands in for NOTIONAL."""
    have = {f["filterType"]: f for f in filters}
    legacy = have.pop("MIN_NOTIONAL", None)
    if legacy is not None and "NOTIONAL" not in have:
        have["NOTIONAL"] = legacy  # keeps its own filterType and fields
    merged = [copy.deepcopy(have.get(f["filterType"], f)) for f in REAL_FILTERS]
    return merged + [copy.deepcopy(f) for t, f in have.items() if t not in _ORDER]


def with_filter(rules: SymbolRules, table: dict[str, Any]) -> SymbolRules:
    """``rules`` with one filter replaced (or added) by its filterType."""
    kind = table.get("filterType")
    if not isinstance(kind, str):
        raise ValueError("a filter needs a filterType")
    info = copy.deepcopy(rules.info)
    filters = info["filters"]
    index = next((i for i, f in enumerate(filters) if f["filterType"] == kind), None)
    if index is None:
        filters.append(dict(table))
    else:
        filters[index] = dict(table)
    return rules_from_info(info)


def synthetic_info(symbol: str) -> dict[str, Any]:
    """An exchangeInfo entry for a symbol the bundled document lacks (BTCUSDT's shape)."""
    quote = next((q for q in QUOTES if symbol.endswith(q) and len(symbol) > len(q)), symbol[-3:])
    template = next(s for s in bundled_exchange_info()["symbols"] if s["symbol"] == "BTCUSDT")
    info: dict[str, Any] = copy.deepcopy(template)
    info.update(symbol=symbol, baseAsset=symbol[: -len(quote)], quoteAsset=quote)
    for table in info["filters"]:
        if table["filterType"] == "LOT_SIZE":
            table.update(minQty="0.00100000", stepSize="0.00100000")
    return info


def load_rules(symbols: list[str] | None) -> dict[str, SymbolRules]:
    """Rules for the requested symbols (default: every bundled one), in the given order."""
    bundled = {s["symbol"]: s for s in bundled_exchange_info()["symbols"]}
    names = list(bundled) if symbols is None else [s.upper() for s in symbols]
    if not names:
        raise ValueError("FakeBinance needs at least one symbol")
    rules: dict[str, SymbolRules] = {}
    for name in names:
        info = copy.deepcopy(bundled.get(name) or synthetic_info(name))
        info["filters"] = full_filters(info.get("filters", []))
        rules[name] = rules_from_info(info)
    return rules


def start_price(rules: SymbolRules, override: dict[str, float] | None) -> Decimal:
    if override and rules.symbol in override:
        value = float(override[rules.symbol])
    else:
        value = bundled_last_close(rules.symbol) or DEFAULT_START_PRICE
    if value <= 0:
        raise ValueError(f"start price of {rules.symbol} must be > 0")
    return rules.snap_price(value)
