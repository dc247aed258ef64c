"""The feeds that need no exchange, made from the fleet's settings."""

from __future__ import annotations

from multibot.wire.settings import Feed, FleetSettings
from orchestrator.feeds.base import ClockedFeed
from orchestrator.feeds.replay import ReplayFeed
from orchestrator.feeds.synthetic import SyntheticFeed


def make_feed(settings: FleetSettings, cursor: int | None) -> ClockedFeed:
    """Replay or synthetic (the binance feed is made once the exchange client is up)."""
    if settings.feed == Feed.SYNTHETIC:
        return SyntheticFeed(settings.interval, settings.seed, cursor)
    return ReplayFeed(settings.interval, cursor)
