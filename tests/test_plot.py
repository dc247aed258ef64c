"""The equity chart: nothing of it is cut off at the figure's edges, whatever the magnitudes.

The chart has fixed margins (a constrained layout cost ~40% of its drawing), so these check
that its labels, ticks, title, legend and summary still fit, on a normal run and on one whose
equity and drawdown reach tick labels of five or six characters.
"""

from __future__ import annotations

import numpy as np
import pytest

from multibot.backtest.plot import figure
from multibot.backtest.session import Request, Result, run_backtest


def _result(capital: str | None, symbols: list[str]) -> Result:
    return run_backtest(Request(symbols=symbols, strategies=["sma_cross:fast=10,slow=30"],
                                interval="1m", capital=capital, isolate=False))


@pytest.mark.parametrize(("capital", "symbols"), [
    (None, ["BTCUSDT"]),
    ("1", ["BTCUSDT", "ETHUSDT"]),  # equity to about -190x, drawdown to about -19,000%
])
def test_nothing_is_cut_off(capital: str | None, symbols: list[str]) -> None:
    result = _result(capital, symbols)
    curves = {o.run.symbol: o.curve for o in result.outcomes}
    fig = figure(result.title, curves, result.combined_curve, result.combined)
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    page = fig.bbox
    low = min(float(c.equity.min() / c.capital) for c in curves.values())
    assert capital is None or low < -100  # the wide labels this case is about
    for axes in fig.axes:
        box = axes.get_tightbbox(renderer)
        assert box is not None
        assert box.x0 >= page.x0 and box.x1 <= page.x1, (axes.get_ylabel(), box, page)
        assert box.y0 >= page.y0 and box.y1 <= page.y1, (axes.get_ylabel(), box, page)


@pytest.mark.parametrize(("strategy", "symbols"), [  # runs an upper-left legend covered
    ("macd_cross", ["BTCUSDT"]),
    ("sma_cross:fast=10,slow=30", ["BTCUSDT", "ETHUSDT"]),
    ("rsi_revert", ["BTCUSDT", "ETHUSDT"]),
])
def test_the_legend_does_not_cover_the_start_of_the_curves(strategy: str,
                                                            symbols: list[str]) -> None:
    result = run_backtest(Request(symbols=symbols, strategies=[strategy], interval="1m",
                                  isolate=False))
    curves = {o.run.symbol: o.curve for o in result.outcomes}
    fig = figure(result.title, curves, result.combined_curve, result.combined)
    fig.draw_without_rendering()
    top = fig.axes[0]
    legend = top.get_legend()
    assert legend is not None
    box = legend.get_window_extent()
    for line in top.get_lines():
        if str(line.get_label()).startswith("_"):
            continue
        xy = np.asarray(line.get_xydata(), dtype=float)
        start = top.transData.transform(xy[: max(1, len(xy) // 10)])  # the first tenth
        covered = [p for p in start if box.contains(float(p[0]), float(p[1]))]
        assert not covered, (line.get_label(), len(covered))
