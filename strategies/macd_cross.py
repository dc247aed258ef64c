"""MACD crossover: long when the MACD line crosses above its signal line, flat when below."""

from __future__ import annotations

from multibot.market.bar import Bar, Signal
from strategies.base import Params, Strategy
from strategies.checks import check_fast_slow, check_int
from strategies.indicators import MACD, Crossover


class MacdCrossParams(Params, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Periods, in bars, of the fast and slow EMAs and of the signal-line EMA."""

    fast: int = 12
    slow: int = 26
    signal: int = 9


class MacdCross(Strategy):
    """LONG when MACD(fast, slow) crosses above its signal EMA; FLAT when it crosses below."""

    name = "macd_cross"
    description = (
        "Long when the MACD line crosses above its signal line, flat when it crosses below."
    )
    Params = MacdCrossParams
    params: MacdCrossParams

    def __init__(self, params: MacdCrossParams | None = None) -> None:
        super().__init__(params)
        self.macd = MACD(self.params.fast, self.params.slow, self.params.signal)
        self.cross = Crossover()

    def validate(self) -> None:
        check_fast_slow(self.name, self.params.fast, self.params.slow)
        check_int(self.name, "signal", self.params.signal, 1)

    @property
    def warmup(self) -> int:
        return self.macd.lookback + 2

    def on_bar(self, bar: Bar) -> Signal | None:
        value = self.macd.update(bar.close)
        if value is None:
            return None
        event = self.cross.update(value.macd, value.signal)
        return Signal.LONG if event > 0 else Signal.FLAT if event < 0 else None
