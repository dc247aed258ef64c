"""Strategies: per-symbol trading logic. Imports nothing from orchestrator/ or worker/."""

from strategies.bar import Bar, Signal
from strategies.base import INTERFACE_VERSION, Params, Strategy, StrategyError, safe_on_bar
from strategies.combine import Combiner
from strategies.indicators import EMA, MACD, RSI, SMA, Crossover, Indicator, MACDValue
from strategies.registry import (
    builtins,
    create,
    describe,
    describe_all,
    load_strategy_class,
    parse_spec,
)
from strategies.volatility import ATR, Bands, BollingerBands

__all__ = [
    "ATR",
    "EMA",
    "INTERFACE_VERSION",
    "MACD",
    "RSI",
    "SMA",
    "Bands",
    "Bar",
    "BollingerBands",
    "Combiner",
    "Crossover",
    "Indicator",
    "MACDValue",
    "Params",
    "Signal",
    "Strategy",
    "StrategyError",
    "builtins",
    "create",
    "describe",
    "describe_all",
    "load_strategy_class",
    "parse_spec",
    "safe_on_bar",
]
