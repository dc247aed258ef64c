"""Combine several strategies' signals for one symbol into one target position."""

from __future__ import annotations

from multibot.market.bar import Signal

__all__ = ["Combiner"]

# Enum members looked up once: Signal.LONG is an attribute lookup on the enum class (slow).
_LONG, _FLAT = Signal.LONG, Signal.FLAT


class Combiner:
    """Majority vote over the latest stance of each strategy.

    Every strategy starts FLAT. ``update(i, signal)`` records strategy ``i``'s new stance (None
    keeps the previous one). ``target`` is LONG iff strictly more than half of the stances are
    LONG, so a tie is FLAT and a single strategy is followed exactly.
    """

    __slots__ = ("_longs", "_stances")

    def __init__(self, count: int) -> None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"Combiner needs at least one strategy, got {count!r}")
        self._stances = [_FLAT] * count
        self._longs = 0

    def __len__(self) -> int:
        return len(self._stances)

    @property
    def stances(self) -> tuple[Signal, ...]:
        """Current stance of each strategy, in index order."""
        return tuple(self._stances)

    def update(self, index: int, signal: Signal | None) -> None:
        """Record strategy ``index``'s signal; None means no change of opinion."""
        if not 0 <= index < len(self._stances):
            raise IndexError(
                f"strategy index {index} out of range for {len(self._stances)} strategies"
            )
        if signal is None:
            return
        if not isinstance(signal, Signal):
            raise TypeError(f"expected Signal or None, got {signal!r}")
        old = self._stances[index]
        self._stances[index] = signal
        self._longs += (signal is _LONG) - (old is _LONG)

    @property
    def target(self) -> Signal:
        """LONG iff strictly more than half of the stances are LONG, else FLAT."""
        return _LONG if 2 * self._longs > len(self._stances) else _FLAT
