"""Parameter checks and the long/flat stance shared by the built-in strategies.

Each check raises ``StrategyError`` naming the strategy, the parameter and what it got.
"""

from __future__ import annotations

import math

from multibot.market.bar import HISTORY_LIMIT, Signal
from strategies.base import StrategyError


def check_int(strategy: str, key: str, value: object, minimum: int,
              maximum: int = HISTORY_LIMIT) -> None:
    """An int (not a bool) of at least ``minimum`` and at most ``maximum``: by default the
    bars of history a worker keeps, the most any period (a window, an average) may span."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise StrategyError(
            f"strategy {strategy!r}: {key} must be an int >= {minimum}, got {value!r}")
    if value > maximum:
        what = " (the bars of history a worker keeps)" if maximum == HISTORY_LIMIT else ""
        raise StrategyError(
            f"strategy {strategy!r}: {key} must be at most {maximum}{what}, got {value!r}")


def check_number(strategy: str, key: str, value: object, above: float,
                 below: float | None = None) -> None:
    """A finite number (not a bool) strictly above ``above`` (and below ``below``)."""
    ok = (not isinstance(value, bool) and isinstance(value, int | float)
          and math.isfinite(value) and value > above and (below is None or value < below))
    if not ok:
        bounds = (f"> {above:g}" if below is None
                  else f"between {above:g} and {below:g} (exclusive)")
        raise StrategyError(f"strategy {strategy!r}: {key} must be a number {bounds}, "
                            f"got {value!r}")


def check_fast_slow(strategy: str, fast: int, slow: int) -> None:
    """1 <= fast < slow (the crossover strategies' periods)."""
    check_int(strategy, "fast", fast, 1)
    check_int(strategy, "slow", slow, 1)
    if fast >= slow:
        raise StrategyError(f"strategy {strategy!r}: fast ({fast}) must be less than slow ({slow})")


class Stance:
    """Long or flat; a signal only when it changes. Leaving is checked first while long."""

    __slots__ = ("long",)

    def __init__(self) -> None:
        self.long = False

    def update(self, enter: bool, leave: bool) -> Signal | None:
        if self.long:
            if leave:
                self.long = False
                return Signal.FLAT
        elif enter:
            self.long = True
            return Signal.LONG
        return None
