"""The equity chart (PNG): every curve normalised to start at 1.0, and the drawdowns below.

matplotlib is imported here only, with the Agg canvas and no pyplot, so nothing opens a
window and no global figure state is touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from multibot.backtest.metrics import Curve, Metrics, drawdown

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["figure", "write_png"]

_MAX_POINTS = 6000  # per line; more is invisible at this size and only slows the drawing


def _thin(times: np.ndarray, *series: np.ndarray) -> tuple[np.ndarray, ...]:
    """Every k-th point plus each window's minimum, so drawdown troughs survive thinning."""
    n = len(times)
    if n <= _MAX_POINTS:
        return (times, *series)
    k = -(-n // (_MAX_POINTS // 2))
    keep = np.zeros(n, dtype=bool)
    keep[::k] = True
    keep[-1] = True
    starts = np.arange(0, n, k)
    for s in series:
        padded = np.full(len(starts) * k, np.inf)
        padded[:n] = s
        keep[starts + padded.reshape(-1, k).argmin(axis=1)] = True
    return tuple(a[keep] for a in (times, *series))


# Where the legend may go, as (name, x range, y range) in axes fractions: the corner boxes a
# legend of a few entries covers. Lower right holds the summary box, so it is not offered.
_CORNERS = (("upper left", (0.0, 0.35), (0.6, 1.0)), ("upper right", (0.65, 1.0), (0.6, 1.0)),
            ("lower left", (0.0, 0.35), (0.0, 0.4)))


def _emptiest_corner(axes: Axes) -> str:
    """The corner whose box the plotted curves cross least (curves start at the left edge,
    so the upper left corner often covers their start); ties keep the order above. matplotlib's
    own "best" measures every point against every candidate and is slow on long curves."""
    x0, x1 = axes.get_xlim()
    y0, y1 = axes.get_ylim()
    points = [line.get_xydata() for line in axes.get_lines()
              if not str(line.get_label()).startswith("_")]  # not the 1.0 reference line
    xy = np.concatenate([np.asarray(p, dtype=float) for p in points]) if points else (
        np.empty((0, 2)))
    fx, fy = (xy[:, 0] - x0) / ((x1 - x0) or 1.0), (xy[:, 1] - y0) / ((y1 - y0) or 1.0)

    def crossed(box: tuple[str, tuple[float, float], tuple[float, float]]) -> int:
        _, (left, right), (low, high) = box
        return int(np.count_nonzero((fx >= left) & (fx <= right) & (fy >= low) & (fy <= high)))

    return min(_CORNERS, key=crossed)[0]


def write_png(path: Path, title: str, curves: dict[str, Curve], combined: Curve,
              summary: Metrics) -> None:
    figure(title, curves, combined, summary).savefig(path, format="png")


def figure(title: str, curves: dict[str, Curve], combined: Curve, summary: Metrics) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Fixed margins: a constrained layout would measure every tick label in an extra drawing
    # pass. They fit tick labels of up to six characters (tests/test_plot.py).
    fig = Figure(figsize=(12, 7.5), dpi=110)
    fig.subplots_adjust(left=0.085, right=0.99, top=0.955, bottom=0.075, hspace=0.06)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    colors = [f"C{i}" for i in range(10)]
    for i, (symbol, c) in enumerate(curves.items()):
        color = colors[i % len(colors)]
        t, eq, hold = _thin(c.times, c.equity / c.capital, c.hold / c.capital)
        when = t.astype("datetime64[ms]")
        top.plot(when, eq, color=color, lw=1.0, label=symbol)
        top.plot(when, hold, color=color, lw=0.8, ls="--", alpha=0.6,
                 label=f"{symbol} buy & hold")
        if len(curves) > 1:
            t, dd = _thin(c.times, drawdown(c.equity))
            bottom.plot(t.astype("datetime64[ms]"), dd, color=color, lw=0.7, alpha=0.7)
    if len(curves) > 1:
        t, eq, hold = _thin(combined.times, combined.equity / combined.capital,
                            combined.hold / combined.capital)
        when = t.astype("datetime64[ms]")
        top.plot(when, eq, color="black", lw=2.0, label="combined")
        top.plot(when, hold, color="black", lw=1.2, ls="--", alpha=0.7,
                 label="combined buy & hold")
    t, dd = _thin(combined.times, drawdown(combined.equity))
    when = t.astype("datetime64[ms]")
    shade = "black" if len(curves) > 1 else "firebrick"
    bottom.fill_between(when, dd, 0, color=shade, alpha=0.2, lw=0)
    bottom.plot(when, dd, color=shade, lw=1.0)
    top.axhline(1.0, color="grey", lw=0.6)
    top.set_ylabel("equity (start = 1.0)")
    top.set_title(title, loc="left", fontsize=11)
    top.legend(loc=_emptiest_corner(top), fontsize=8, ncols=2 if len(curves) > 2 else 1)
    top.grid(alpha=0.3)
    stats = (f"return {summary.return_pct:+.2f}%   max DD {summary.max_drawdown_pct:.2f}%   "
             f"trades {summary.trades}   buy & hold {summary.buy_hold_return_pct:+.2f}%")
    top.text(0.99, 0.02, stats, transform=top.transAxes, ha="right", va="bottom", fontsize=9,
             bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8, "lw": 0.5})
    bottom.set_ylabel("drawdown %")
    bottom.set_xlabel("UTC")
    bottom.grid(alpha=0.3)
    fig.align_ylabels()
    return fig
