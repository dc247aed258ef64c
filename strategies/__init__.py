"""Strategies: per-symbol trading logic. Imports nothing from orchestrator/ or worker/."""

from strategies.bar import Bar, Signal
from strategies.base import INTERFACE_VERSION, Params, Strategy, StrategyError, safe_on_bar
from strategies.combine import Combiner
from strategies.registry import builtins, create, describe, load_strategy_class, parse_spec

__all__ = [
    "INTERFACE_VERSION",
    "Bar",
    "Combiner",
    "Params",
    "Signal",
    "Strategy",
    "StrategyError",
    "builtins",
    "create",
    "describe",
    "load_strategy_class",
    "parse_spec",
    "safe_on_bar",
]
