"""Bollinger mean reversion: buy the close back inside the lower band, sell at the mean."""

from __future__ import annotations

from typing import Literal

from multibot.market.bar import Bar, Signal
from strategies.base import Params, Strategy, StrategyError
from strategies.checks import Stance, check_int, check_number
from strategies.indicators import Crossover
from strategies.volatility import BollingerBands


class BollingerParams(Params, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Band period in bars, width in standard deviations, and which band takes profit."""

    period: int = 20
    k: float = 2.0
    exit: Literal["middle", "upper"] = "middle"


class Bollinger(Strategy):
    """LONG when the close crosses back above the lower band after closing below it; FLAT when
    the close reaches the ``exit`` band (middle or upper). Signals alternate, LONG first; a
    bar that jumps from below the lower band to the exit band gives no entry."""

    name = "bollinger"
    description = (
        "Bollinger mean reversion: long when the close crosses back above the lower band, "
        "flat when it reaches the middle (or upper) band."
    )
    Params = BollingerParams
    params: BollingerParams

    def __init__(self, params: BollingerParams | None = None) -> None:
        super().__init__(params)
        self.bands = BollingerBands(self.params.period, self.params.k)
        self.cross = Crossover()
        self.stance = Stance()

    def validate(self) -> None:
        p = self.params
        check_int(self.name, "period", p.period, 2)
        check_number(self.name, "k", p.k, above=0)
        if p.exit not in ("middle", "upper"):
            raise StrategyError(
                f"strategy {self.name!r}: exit must be 'middle' or 'upper', got {p.exit!r}"
            )

    @property
    def warmup(self) -> int:
        return self.bands.lookback + 2

    def on_bar(self, bar: Bar) -> Signal | None:
        bands = self.bands.update(bar.close)
        if bands is None:
            return None
        back_inside = self.cross.update(bar.close, bands.lower) > 0
        target = bands.middle if self.params.exit == "middle" else bands.upper
        return self.stance.update(enter=back_inside and bar.close < target,
                                  leave=bar.close >= target)
