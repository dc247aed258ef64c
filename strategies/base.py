"""Strategy interface: typed parameters in, ``on_bar(bar)`` -> :class:`Signal` out.

A strategy instance owns all of its indicator state. Build a fresh instance per symbol
(``strategies.registry.create``); never keep per-symbol state in class attributes.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, ClassVar

import msgspec

from multibot.errors import ErrorCode, MultibotError
from multibot.market.bar import Bar, Signal
from multibot.market.times import iso

if TYPE_CHECKING:  # numpy stays out of workers: strategies.vector is for backtests only
    from strategies.vector import BarColumns, Events

__all__ = ["INTERFACE_VERSION", "Params", "Strategy", "StrategyError", "safe_on_bar"]

#: Bumped when the Strategy interface changes incompatibly (cf. freqtrade's INTERFACE_VERSION).
INTERFACE_VERSION = 1


class StrategyError(MultibotError):
    """A strategy could not be found, configured or run; the message is meant for a CLI user."""

    CODE = ErrorCode.BAD_CONFIG


class Params(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base for a strategy's typed parameters: subclass it and give every field a default."""


_BaseParams = Params


class Strategy(abc.ABC):
    """Base class of all strategies.

    Subclasses set ``name``, ``description`` and ``Params``, build their indicators in
    ``__init__`` after ``super().__init__(params)``, check parameters in ``validate()``, and
    implement ``warmup`` and ``on_bar``.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Params: ClassVar[type[_BaseParams]] = _BaseParams

    def __init__(self, params: _BaseParams | None = None) -> None:
        cls = type(self)
        if params is None:
            params = cls.Params()
        elif not isinstance(params, cls.Params):
            raise StrategyError(
                f"strategy {_label(cls)!r} expects parameters of type {cls.Params.__name__}, "
                f"got {type(params).__name__}"
            )
        self.params = params
        self.validate()

    def validate(self) -> None:  # noqa: B027 - optional hook, empty on purpose
        """Check ``self.params``; raise :class:`StrategyError` with a clear message if invalid."""

    @property
    @abc.abstractmethod
    def warmup(self) -> int:
        """Number of bars needed before signals are meaningful."""

    @abc.abstractmethod
    def on_bar(self, bar: Bar) -> Signal | None:
        """Consume one closed bar; return the wanted position, or None for no change."""

    def signals(self, bars: BarColumns) -> Events | None:
        """Optional, for backtests: ``on_bar``'s answers for a whole series at once.

        One code per bar: 1 for Signal.LONG, -1 for Signal.FLAT, 0 for None, exactly what
        ``on_bar`` would return bar by bar from a fresh instance (strategies.vector has
        bit-exact series forms of the indicators). Only for signals that depend on the bars
        alone, not on fills. The backtest then asks the runner only on the bars where a
        signal comes or an order is open; None (the default) means one ``on_bar`` per bar.
        """
        return None

    def on_start(self) -> None:  # noqa: B027 - optional hook
        """Called once before the first bar."""

    def on_stop(self) -> None:  # noqa: B027 - optional hook
        """Called once when the strategy is stopped."""

    def on_fill(self, side: str, qty: float, price: float) -> None:  # noqa: B027
        """Called when one of the symbol's orders fills (side is "BUY" or "SELL")."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {_label(type(self))!r} {self.params!r}>"


def safe_on_bar(strategy: Strategy, bar: Bar) -> Signal | None:
    """Call ``strategy.on_bar(bar)``, turning any exception or bad return into StrategyError."""
    label = _label(type(strategy))
    try:
        result = strategy.on_bar(bar)
    except StrategyError:
        raise
    except Exception as exc:
        raise StrategyError(
            f"strategy {label!r} raised in on_bar for {bar.symbol} on the bar of "
            f"{iso(bar.open_time)}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if result is not None and not isinstance(result, Signal):
        raise StrategyError(
            f"strategy {label!r} on_bar returned {result!r}; expected Signal.LONG, "
            "Signal.FLAT or None"
        )
    return result


def _label(cls: type[Strategy]) -> str:
    return getattr(cls, "name", None) or cls.__name__
