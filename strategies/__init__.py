"""Strategies: per-symbol trading logic. Imports nothing from orchestrator/ or worker/."""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use (PEP 562): `from strategies.bar import Bar`, which the wire protocol
# does in every process (the CLI's too), then costs one module, not every built-in strategy.
_HOMES = {
    "Bar": "bar", "Signal": "bar",
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
    return getattr(importlib.import_module(f"strategies.{home}"), name)


__all__ = sorted(_HOMES)
