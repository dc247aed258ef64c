"""EMA crossover: long when the fast EMA crosses above the slow EMA, flat when it crosses below."""

from __future__ import annotations

from strategies.bar import Bar, Signal
from strategies.base import Params, Strategy
from strategies.indicators import EMA, Crossover
from strategies.sma_cross import check_fast_slow


class EmaCrossParams(Params, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Periods, in bars, of the fast and slow exponential moving averages."""

    fast: int = 12
    slow: int = 26


class EmaCross(Strategy):
    """Long when EMA(fast) crosses above EMA(slow); flat when it crosses back below."""

    name = "ema_cross"
    description = "Long when the fast EMA crosses above the slow EMA, flat when it crosses below."
    Params = EmaCrossParams
    params: EmaCrossParams

    def __init__(self, params: EmaCrossParams | None = None) -> None:
        super().__init__(params)
        self.fast = EMA(self.params.fast)
        self.slow = EMA(self.params.slow)
        self.cross = Crossover()

    def validate(self) -> None:
        check_fast_slow(self.name, self.params.fast, self.params.slow)

    @property
    def warmup(self) -> int:
        return self.params.slow + 1

    def on_bar(self, bar: Bar) -> Signal | None:
        fast = self.fast.update(bar.close)
        slow = self.slow.update(bar.close)
        if fast is None or slow is None:
            return None
        event = self.cross.update(fast, slow)
        return Signal.LONG if event > 0 else Signal.FLAT if event < 0 else None
