"""A symbol's plan checked before it trades: by the CLI up front, and by the orchestrator."""

from __future__ import annotations

from multibot.wire.protocol import SymbolPlan
from multibot.wire.settings import ORDER_TYPES, SettingsError, parse_decimal
from orchestrator.feeds.base import HISTORY_LIMIT


def check_plan(symbol: str, plan: SymbolPlan) -> int:
    """Validate a symbol's plan by building each strategy once; returns the warm-up needed."""
    from strategies.base import StrategyError
    from strategies.registry import create

    parse_decimal(plan.stake, f"stake of {symbol}", positive=True)
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
