"""Strategies that process tests steer, loaded by the workers from this file's path
(``-s /path/to/steered_strategies.py:Steered:path=...``)."""

from __future__ import annotations

import time
from pathlib import Path

from multibot.market.bar import Bar, Signal
from strategies.base import Params as BaseParams, Strategy


class Steered(Strategy):
    """The target a file says (``long`` or ``flat``), read on every bar: a test turns it."""

    name = "steered"

    class Params(BaseParams, frozen=True, kw_only=True, forbid_unknown_fields=True):
        path: str = ""

    params: Params

    @property
    def warmup(self) -> int:
        return 0

    def on_bar(self, bar: Bar) -> Signal | None:
        try:
            text = Path(self.params.path).read_text().strip()
        except OSError:
            return None
        return Signal(text) if text in ("long", "flat") else None


class LateExit(Strategy):
    """LONG on the bar that opens at ``long_at``, FLAT on the bar at ``flat_at``: the FLAT
    comes ``lag_s`` late (the worker busy), so the market has moved on before the SELL is
    placed."""

    name = "late_exit"

    class Params(BaseParams, frozen=True, kw_only=True, forbid_unknown_fields=True):
        long_at: int = 0
        flat_at: int = 0
        lag_s: float = 0.0

    params: Params

    @property
    def warmup(self) -> int:
        return 0

    def on_bar(self, bar: Bar) -> Signal | None:
        if bar.open_time == self.params.long_at:
            return Signal.LONG
        if bar.open_time == self.params.flat_at:
            time.sleep(self.params.lag_s)
            return Signal.FLAT
        return None
