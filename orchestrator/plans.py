"""A symbol's plan checked before it trades: by the CLI up front, and by the orchestrator."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

from multibot.market.bundled import load_klines, symbols_for
from multibot.market.records import SymbolRules
from multibot.market.rules import bundled_rules, fmt, minimum_stake, price_decimal
from multibot.wire.protocol import SymbolPlan
from multibot.wire.settings import ORDER_TYPES, SettingsError, parse_decimal
from orchestrator.feeds.base import HISTORY_LIMIT


def check_plan(symbol: str, plan: SymbolPlan,
               market: tuple[SymbolRules, Decimal] | None = None) -> int:
    """Validate a symbol's plan by building each strategy once; returns the warm-up needed.
    ``market``: the symbol's rules and a recent price, when known, to check the stake."""
    from strategies.base import StrategyError
    from strategies.registry import create

    stake = parse_decimal(plan.stake, f"stake of {symbol}", positive=True)
    if market is not None:
        check_stake(symbol, stake, *market)
    if plan.order_type not in ORDER_TYPES:
        raise SettingsError(f"order type of {symbol} must be one of {', '.join(ORDER_TYPES)}, "
                            f"not {plan.order_type!r}")
    warmup = 0
    for spec in plan.strategies:
        try:
            needs = create(spec.name, spec.params).warmup
        except StrategyError as exc:
            raise SettingsError(f"{symbol}: {exc}") from None
        if needs > HISTORY_LIMIT:  # it would trade on indicators that never warmed up
            raise SettingsError(
                f"{symbol}: strategy {spec.name!r} needs {needs} bars of warm-up, but a worker "
                f"keeps the last {HISTORY_LIMIT}: use shorter periods")
        warmup = max(warmup, needs)
    return warmup


def check_stake(symbol: str, stake: Decimal, rules: SymbolRules, price: Decimal) -> None:
    """SettingsError if an entry of ``stake`` at ``price`` is below the exchange's minimum
    order (it would never be sent)."""
    least = minimum_stake(rules, price)
    if stake < least:
        shown = least.quantize(Decimal(1).scaleb(least.adjusted() - 2), ROUND_CEILING)
        raise SettingsError(
            f"stake of {symbol} ({fmt(stake)} {rules.quote_asset}) is below {symbol}'s minimum "
            f"order: min notional {fmt(Decimal(rules.min_notional))} {rules.quote_asset}, min "
            f"qty {fmt(Decimal(rules.min_qty))} {rules.base_asset} at price {fmt(price)}; use "
            f"--stake {fmt(shown)} or more")


def bundled_market(symbol: str, interval: str) -> tuple[SymbolRules, Decimal] | None:
    """The snapshot's rules and the last bundled close of ``symbol`` (None: not bundled), to
    check a replay's stake before it starts."""
    rules = bundled_rules().get(symbol)
    if rules is None or symbol not in symbols_for(interval):
        return None
    return rules, price_decimal(float(load_klines(symbol, interval)["close"][-1]))
