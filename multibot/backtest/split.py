"""Where one symbol's run can be cut into parts that run at once, on several cores.

A part can start from nothing only where the whole run is known to be at rest: just after a
bar on which the strategies' combined target turned FLAT. With MARKET orders the position was
sold on that bar, so the next part starts flat, with no order in flight, its strategies'
stances taken from their signal codes. Each part checks at its end that it really was at rest
there (``SymbolRun.settled``); where one was not (a sell refused, a strategy failing), the
stitched run is thrown away and the symbol runs again in one piece (see ``stitch``).

Pure functions of the signal codes (strategies x bars, -1/0/1), so every part's process finds
the same cuts.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bounds", "stances_before"]


def _stances(codes: np.ndarray) -> np.ndarray:
    """Per strategy and bar, its stance after the bar: True = LONG (a strategy starts FLAT and
    keeps its stance until it signals again)."""
    bars = codes.shape[1]
    spoke = np.where(codes != 0, np.arange(bars), -1)
    last = np.maximum.accumulate(spoke, axis=1)
    stance = np.take_along_axis(codes, np.maximum(last, 0), axis=1)
    return (last >= 0) & (stance > 0)


def bounds(codes: np.ndarray, parts: int) -> list[int]:
    """Bar indices ``[0, k1, ..., n]`` cutting the run into at most ``parts`` parts with about
    as many target changes (orders, what costs) each; ``[0, n]`` when it cannot be cut."""
    count, bars = codes.shape
    if parts < 2 or bars < 2:
        return [0, bars]
    longs = _stances(codes).sum(axis=0)
    target = 2 * longs > count  # the Combiner's majority vote, bar by bar
    before = np.concatenate(([False], target[:-1]))
    changes = np.flatnonzero(target != before)
    to_flat = np.flatnonzero(before & ~target)  # the bars whose target turned FLAT
    cuts = [0]
    for p in range(1, parts):
        if not len(changes):
            break
        aim = changes[min(len(changes) - 1, len(changes) * p // parts)]
        at = int(np.searchsorted(to_flat, aim))
        if at == len(to_flat):
            break
        cut = int(to_flat[at]) + 1
        if cuts[-1] < cut < bars:
            cuts.append(cut)
    return [*cuts, bars]


def stances_before(codes: np.ndarray, start: int) -> list[int]:
    """Each strategy's last code before bar ``start`` (0: it has not spoken yet: FLAT)."""
    out = []
    for row in codes[:, :start]:
        spoke = np.flatnonzero(row)
        out.append(int(row[spoke[-1]]) if len(spoke) else 0)
    return out
