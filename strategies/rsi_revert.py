"""RSI mean reversion: buy when RSI climbs back out of oversold, sell once it is overbought."""

from __future__ import annotations

from multibot.market.bar import Bar, Signal
from strategies.base import Params, Strategy, StrategyError
from strategies.checks import Stance, check_int, check_number
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
        self.stance = Stance()

    def validate(self) -> None:
        p = self.params
        check_int(self.name, "period", p.period, 2)
        check_number(self.name, "oversold", p.oversold, above=0, below=100)
        check_number(self.name, "overbought", p.overbought, above=0, below=100)
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
        return self.stance.update(enter=up and not over, leave=over)
