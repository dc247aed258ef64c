"""EMA crossover: long when the fast EMA crosses above the slow EMA, flat when it crosses below."""

from __future__ import annotations

from strategies.base import Params
from strategies.indicators import EMA
from strategies.sma_cross import SmaCross


class EmaCrossParams(Params, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Periods, in bars, of the fast and slow exponential moving averages (the same fields as
    SmaCrossParams: SmaCross's code reads them)."""

    fast: int = 12
    slow: int = 26


class EmaCross(SmaCross):
    """Long when EMA(fast) crosses above EMA(slow); flat when it crosses back below."""

    name = "ema_cross"
    description = "Long when the fast EMA crosses above the slow EMA, flat when it crosses below."
    Params = EmaCrossParams  # type: ignore[assignment]  # same fields, other defaults
    average = EMA
