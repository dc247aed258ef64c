"""SMA crossover: long when the fast SMA crosses above the slow SMA, flat when it crosses below."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from multibot.market.bar import Bar, Signal
from strategies.base import Params, Strategy
from strategies.checks import check_fast_slow
from strategies.indicators import EMA, SMA, Crossover

if TYPE_CHECKING:
    from strategies.vector import BarColumns, Events

_LONG, _FLAT = Signal.LONG, Signal.FLAT  # looked up once: enum attribute access is slow


class SmaCrossParams(Params, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Periods, in bars, of the fast and slow simple moving averages."""

    fast: int = 10
    slow: int = 30


class SmaCross(Strategy):
    """Long when SMA(fast) crosses above SMA(slow); flat when it crosses back below."""

    name = "sma_cross"
    description = "Long when the fast SMA crosses above the slow SMA, flat when it crosses below."
    Params = SmaCrossParams
    params: SmaCrossParams
    average: ClassVar[type[SMA] | type[EMA]] = SMA  # EmaCross swaps in EMA; the rest is shared

    def __init__(self, params: SmaCrossParams | None = None) -> None:
        super().__init__(params)
        self.fast = self.average(self.params.fast)
        self.slow = self.average(self.params.slow)
        self.cross = Crossover()

    def validate(self) -> None:
        check_fast_slow(self.name, self.params.fast, self.params.slow)

    @property
    def warmup(self) -> int:
        return self.params.slow + 1

    def on_bar(self, bar: Bar) -> Signal | None:
        close = bar.close
        fast = self.fast.update(close)
        slow = self.slow.update(close)
        if fast is None or slow is None:
            return None
        event = self.cross.update(fast, slow)
        if not event:
            return None
        return _LONG if event > 0 else _FLAT

    def signals(self, bars: BarColumns) -> Events:
        from strategies.vector import crossover_events

        fast, slow = self.average.series_many(bars.close, (self.params.fast, self.params.slow))
        return crossover_events(fast, slow)
