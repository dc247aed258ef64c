"""RSI mean reversion: buy when RSI climbs back out of oversold, sell once it is overbought."""

from __future__ import annotations

import math

from multibot.market.bar import Bar, Signal
from strategies.base import Params, Strategy, StrategyError
from strategies.indicators import RSI, Crossover


class RsiRevertParams(Params, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """RSI period in bars, and the RSI levels (0-100) that trigger entry and exit."""

    period: int = 14
    oversold: float = 30.0
    overbought: float = 70.0


class RsiRevert(Strategy):
    """LONG when RSI crosses up through ``oversold``; FLAT when it crosses above ``overbought``.

    It tracks its own stance, so signals alternate (the first is LONG). A bar that crosses
    both levels at once while flat gives no entry: the reversion already happened.
    """

    name = "rsi_revert"
    description = (
        "RSI mean reversion: long when RSI crosses up through oversold, flat when it crosses "
        "above overbought."
    )
    Params = RsiRevertParams
    params: RsiRevertParams

    def __init__(self, params: RsiRevertParams | None = None) -> None:
        super().__init__(params)
        self.rsi = RSI(self.params.period)
        self.entry = Crossover()
        self.exit = Crossover()
        self.long = False

    def validate(self) -> None:
        p = self.params
        if isinstance(p.period, bool) or not isinstance(p.period, int) or p.period < 2:
            raise StrategyError(
                f"strategy {self.name!r}: period must be an int >= 2, got {p.period!r}"
            )
        for key, val in (("oversold", p.oversold), ("overbought", p.overbought)):
            if isinstance(val, bool) or not (
                isinstance(val, int | float) and math.isfinite(val) and 0 < val < 100
            ):
                raise StrategyError(
                    f"strategy {self.name!r}: {key} must be a number between 0 and 100 "
                    f"(exclusive), got {val!r}"
                )
        if p.oversold >= p.overbought:
            raise StrategyError(
                f"strategy {self.name!r}: oversold ({p.oversold}) must be less than "
                f"overbought ({p.overbought})"
            )

    @property
    def warmup(self) -> int:
        return self.rsi.lookback + 2

    def on_bar(self, bar: Bar) -> Signal | None:
        rsi = self.rsi.update(bar.close)
        if rsi is None:
            return None
        up = self.entry.update(rsi, self.params.oversold) > 0
        over = self.exit.update(rsi, self.params.overbought) > 0
        if self.long and over:
            self.long = False
            return Signal.FLAT
        if not self.long and up and not over:
            self.long = True
            return Signal.LONG
        return None
