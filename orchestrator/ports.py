"""What the fleet hands its parts instead of itself: the capabilities they share.

Each part declares the rest of what it uses next to itself (``ControlPorts``,
``WorkerLinkPorts``, ``StatusSources``); the fleet builds them once its venue is open.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from multibot.wire.protocol import SymbolRules
from orchestrator.broker.base import Broker
from orchestrator.feeds.base import Feed

# Runs a coroutine as a task of the fleet's loop (failures are logged, never lost).
Spawn = Callable[[Coroutine[Any, Any, None]], None]


@dataclass(frozen=True)
class Trading:
    """The path of orders and market data: the broker, the feed, each served symbol's rules."""

    broker: Broker
    feed: Feed
    rules: dict[str, SymbolRules]
