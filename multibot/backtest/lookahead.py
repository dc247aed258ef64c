"""Look-ahead check: a decision must not change when the future is cut off or changed.

The engine only ever hands a strategy the current closed bar, so look-ahead is impossible by
construction unless a strategy reaches the data some other way. This check catches that. For
each cut (by default after 50% and 75% of a symbol's bars) it backtests

- the prefix: the bars up to the cut and nothing after, and
- a mirrored future: the same prefix, then the rest of the bars reflected around the close at
  the cut (every later price p becomes close² / p), so every later move goes the other way;

and verifies that every decision made up to the cut (each order placed or cancelled, with the
open time of the bar it was made on) is exactly the full run's. A decision that depends on the
bars after it then differs in at least one of them: the prefix takes the future away, and the
mirror flips the direction of every move a peeking strategy could act on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from multibot.backtest.data import iso
from multibot.backtest.engine import Decision, SymbolJob, SymbolRun

__all__ = ["FRACTIONS", "Leak", "Probe", "compare", "mirrored", "probes"]

FRACTIONS = (0.5, 0.75)


@dataclass(frozen=True)
class Probe:
    """A run whose decisions up to ``cut_time`` must equal the full run's."""

    fraction: float
    kind: str  # "prefix" | "mirrored future"
    cut_time: int  # open time of the last bar before the cut
    job: SymbolJob


@dataclass(frozen=True)
class Leak:
    """The first decision where a probe and the full run disagree."""

    symbol: str
    probe: str  # e.g. "the first 50% of the bars"
    cut_time: int
    probe_decision: Decision | None
    full_decision: Decision | None

    def describe(self) -> str:
        return (f"{self.symbol}: a run on {self.probe} (cut after {iso(self.cut_time)}) "
                f"decided {_text(self.probe_decision)}, the full run decided "
                f"{_text(self.full_decision)}: the strategy used bars after the one it decided on")


def _text(decision: Decision | None) -> str:
    if decision is None:
        return "nothing more"
    what = f"{decision.action} {decision.client_order_id}"
    if decision.action == "PLACE":
        price = f" @ {decision.price}" if decision.price else ""
        what += f" ({decision.side} {decision.type} {decision.quantity}{price})"
    return f"{what} at {iso(decision.bar_time)}"


def mirrored(bars: np.ndarray, cut: int) -> np.ndarray:
    """``bars`` with every price after index ``cut - 1`` reflected around that bar's close."""
    out = bars.copy()
    square = float(bars["close"][cut - 1]) ** 2
    future = bars[cut:]
    out["open"][cut:] = square / future["open"]
    out["close"][cut:] = square / future["close"]
    out["high"][cut:] = square / future["low"]  # the lowest price becomes the highest
    out["low"][cut:] = square / future["high"]
    return out


def probes(job: SymbolJob, fractions: tuple[float, ...] = FRACTIONS) -> list[Probe]:
    n = len(job.bars)
    out = []
    for fraction in fractions:
        cut = max(1, min(n, int(n * fraction)))
        cut_time = int(job.bars["open_time"][cut - 1])
        out.append(Probe(fraction, "prefix", cut_time,
                         dataclasses.replace(job, bars=job.bars[:cut])))
        if cut < n:
            out.append(Probe(fraction, "mirrored future", cut_time,
                             dataclasses.replace(job, bars=mirrored(job.bars, cut))))
    return out


def compare(full: SymbolRun, probe: Probe, run: SymbolRun) -> Leak | None:
    """None if the probe's decisions up to its cut are exactly the full run's."""
    expected = [d for d in full.decisions if d.bar_time <= probe.cut_time]
    got = [d for d in run.decisions if d.bar_time <= probe.cut_time]
    for i in range(max(len(expected), len(got))):
        want = expected[i] if i < len(expected) else None
        have = got[i] if i < len(got) else None
        if want != have:
            where = f"the first {probe.fraction:.0%} of the bars"
            if probe.kind != "prefix":
                where += ", then the rest mirrored"
            return Leak(full.symbol, where, probe.cut_time, have, want)
    return None
