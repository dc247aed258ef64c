"""Equity curves, round trips and the report's metrics (definitions: README, "Backtest").

Equity after bar i = capital + realized PnL + unrealized PnL, both from the broker's position
after bar i, valued at bar i's close. Realized PnL is net of every fee, so equity is too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal, localcontext

import msgspec
import numpy as np

from multibot.backtest.engine import FillRecord, SymbolRun
from multibot.market.orders import Side
from multibot.market.position import EXACT

__all__ = ["Curve", "Metrics", "RoundTrip", "combine", "curve_of", "drawdown", "metrics_of",
           "round_trips", "total_fees"]

YEAR_MS = 365 * 86_400_000  # crypto trades every day of the year
_ZERO = Decimal(0)


@dataclass(frozen=True)
class Curve:
    """A per-bar equity curve (quote) with its buy-and-hold twin and position flags."""

    times: np.ndarray  # open_time, ms
    equity: np.ndarray
    hold: np.ndarray  # capital invested at the first close and held
    exposed: np.ndarray  # bool: a position is held after the bar
    capital: float


class RoundTrip(msgspec.Struct, frozen=True):
    """From a fill on a flat position to the fill that makes it flat again."""

    entry_bar: int
    exit_bar: int
    qty: Decimal
    entry_price: Decimal  # quantity-weighted average of the buys
    exit_price: Decimal  # ... and of the sells
    fees: Decimal
    pnl: Decimal  # realized PnL change over the trip: net of both sides' fees

    @property
    def return_pct(self) -> float:
        cost = self.qty * self.entry_price
        return float(self.pnl / cost * 100) if cost else 0.0


@dataclass(frozen=True)
class Metrics:
    bars: int
    capital: float
    final_equity: float
    return_pct: float
    max_drawdown_pct: float
    trades: int
    wins: int
    win_rate_pct: float | None
    sharpe: float | None
    exposure_pct: float
    buy_hold_return_pct: float
    fees: float


def curve_of(run: SymbolRun, bars: np.ndarray, capital: float) -> Curve:
    """Expand the run's position snapshots (taken only where they changed) to every bar."""
    n = len(bars)
    close = bars["close"]
    if run.change_bar:
        # each snapshot holds from its bar to the next one's; nothing is held before the first
        starts = np.asarray(run.change_bar)
        spans = np.diff(starts, append=n)
        before = int(starts[0])

        def expand(values: list[float]) -> np.ndarray:
            out = np.zeros(n)
            out[before:] = np.repeat(np.asarray(values), spans)
            return out

        qty, avg, realized = expand(run.qty), expand(run.avg_entry), expand(run.realized)
    else:
        qty = avg = realized = np.zeros(n)
    equity = capital + realized + qty * (close - avg)
    hold = capital * close / close[0]
    return Curve(bars["open_time"], equity, hold, qty > 0, capital)


def total_fees(fills: list[FillRecord]) -> Decimal:
    """Every fee of ``fills``, summed exactly."""
    with localcontext(EXACT):
        return sum((Decimal(f.fee) for f in fills), _ZERO)


def round_trips(fills: list[FillRecord]) -> list[RoundTrip]:
    """The closed round trips of ``fills``: from a fill on a flat position to the next flat."""
    trips: list[RoundTrip] = []
    realized_before = _ZERO
    # sums in fill order, each from Decimal(0): buys, sells, all fees of the open trip
    entry_bar = -1
    bought = sold = cost = proceeds = fees = _ZERO
    for fill in fills:
        if entry_bar < 0:
            entry_bar = fill.bar
        qty = Decimal(fill.qty)
        if fill.side == Side.BUY:
            bought += qty
            cost += qty * Decimal(fill.price)
        elif fill.side == Side.SELL:
            sold += qty
            proceeds += qty * Decimal(fill.price)
        fees += Decimal(fill.fee)
        if fill.position != "0" and Decimal(fill.position) != 0:
            continue
        realized = Decimal(fill.realized_pnl)
        if bought and sold:
            with localcontext(EXACT):  # the same PnL whatever was realized before
                pnl = realized - realized_before
            trips.append(RoundTrip(
                entry_bar=entry_bar, exit_bar=fill.bar, qty=sold,
                entry_price=cost / bought, exit_price=proceeds / sold, fees=fees, pnl=pnl,
            ))
        realized_before = realized
        entry_bar = -1
        bought = sold = cost = proceeds = fees = _ZERO
    return trips


def _sharpe(equity: np.ndarray, step_ms: int) -> float | None:
    if len(equity) < 3:
        return None
    before = equity[:-1]
    if (before <= 0).any():
        return None  # returns are undefined once the equity is gone
    returns = np.diff(equity) / before
    std = float(np.std(returns, ddof=1))
    if std == 0 or not math.isfinite(std):
        return None
    return float(np.mean(returns)) / std * math.sqrt(YEAR_MS / step_ms)


def _max_drawdown_pct(equity: np.ndarray) -> float:
    peak = np.maximum.accumulate(equity)
    with np.errstate(divide="ignore", invalid="ignore"):
        drawdown = np.where(peak > 0, 1 - equity / peak, 0.0)
    return float(drawdown.max(initial=0.0)) * 100


def drawdown(equity: np.ndarray) -> np.ndarray:
    """Per bar, % below the running peak (<= 0), for the chart."""
    peak = np.maximum.accumulate(equity)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(peak > 0, equity / peak - 1, 0.0) * 100


def metrics_of(curve: Curve, trips: list[RoundTrip], step_ms: int, fees: float) -> Metrics:
    equity, capital = curve.equity, curve.capital
    wins = sum(1 for t in trips if t.pnl > 0)
    return Metrics(
        bars=len(equity),
        capital=capital,
        final_equity=float(equity[-1]),
        return_pct=(float(equity[-1]) / capital - 1) * 100,
        max_drawdown_pct=_max_drawdown_pct(equity),
        trades=len(trips),
        wins=wins,
        win_rate_pct=wins / len(trips) * 100 if trips else None,
        sharpe=_sharpe(equity, step_ms),
        exposure_pct=float(np.count_nonzero(curve.exposed)) / len(equity) * 100,
        buy_hold_return_pct=(float(curve.hold[-1]) / capital - 1) * 100,
        fees=fees,
    )


def combine(curves: list[Curve]) -> Curve:
    """The sum of the curves on the union of their bar times; a symbol holds its capital in
    cash before its first bar and keeps its last equity after its last one."""
    if len(curves) == 1:
        return curves[0]  # its own bar times: every bar is its own
    times = _union([c.times for c in curves])
    equity = np.zeros(len(times))
    hold = np.zeros(len(times))
    exposed = np.zeros(len(times), dtype=bool)
    for c in curves:
        at = np.searchsorted(c.times, times, side="right") - 1
        before = at < 0
        pick = np.maximum(at, 0)
        equity += np.where(before, c.capital, c.equity[pick])
        hold += np.where(before, c.capital, c.hold[pick])
        exposed |= ~before & c.exposed[pick] & (times <= c.times[-1])
    return Curve(times, equity, hold, exposed, sum(c.capital for c in curves))


def _union(arrays: list[np.ndarray]) -> np.ndarray:
    """Sorted distinct values of all ``arrays``: np.unique(np.concatenate(arrays)), but by a
    sort (fast on the nearly sorted bar times) instead of numpy 2's hash table."""
    values = np.sort(np.concatenate(arrays), kind="stable")
    if len(values) < 2:
        return values
    keep = np.empty(len(values), dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]
