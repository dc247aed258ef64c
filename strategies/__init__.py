"""Strategies: per-symbol trading logic. Imports only ``Bar`` and ``Signal`` of the market model."""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use (PEP 562): `from strategies import SmaCross` costs that one module, not
# every built-in strategy.
_HOMES = {
    "Bar": "multibot.market.bar", "Signal": "multibot.market.bar",
    "INTERFACE_VERSION": "base", "Params": "base", "Strategy": "base",
    "StrategyError": "base", "safe_on_bar": "base",
    "Combiner": "combine",
    "EMA": "indicators", "MACD": "indicators", "RSI": "indicators", "SMA": "indicators",
    "Crossover": "indicators", "Indicator": "indicators", "MACDValue": "indicators",
    "builtins": "registry", "create": "registry", "describe": "registry",
    "describe_all": "registry", "load_strategy_class": "registry", "parse_spec": "registry",
    "ATR": "volatility", "Bands": "volatility", "BollingerBands": "volatility",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'strategies' has no attribute {name!r}")
    module = home if "." in home else f"strategies.{home}"
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_HOMES)
