"""Value records carried inside protocol messages (orders, fills, positions, rules, config).

Re-exported by ``multibot.wire.protocol``; import them from there.
"""

from __future__ import annotations

import msgspec

from multibot.market.records import (  # re-exported: the wire carries them
    FillView as FillView,
    OrderView as OrderView,
    PositionView as PositionView,
    SymbolRules as SymbolRules,
)

PROTOCOL_VERSION = 1
HEARTBEAT_S = 4.0  # both ways; see WorkerConfig


class StrategySpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    params: dict[str, float | int | str | bool] = {}


class SymbolPlan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What one symbol trades with: strategies (combined by majority), stake, order type."""

    strategies: list[StrategySpec]
    stake: str = "100"
    order_type: str = "MARKET"


class WorkerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    symbol: str
    strategies: list[StrategySpec]
    stake: str  # quote amount per entry
    order_type: str = "MARKET"  # MARKET | LIMIT
    limit_ttl_bars: int = 5  # a LIMIT entry not filled after this many bars is cancelled
    # Heartbeats are most of an idle fleet's CPU, so both sides beat every 4 s: the
    # orchestrator's is one broadcast that each worker answers with its own. They detect
    # hangs; a death is seen at once (the worker's orchestrator pipe, the supervisor's
    # process sentinel). A worker that heard nothing for heartbeat_s * liveness seconds
    # exits on its own.
    heartbeat_s: float = HEARTBEAT_S
    liveness: int = 3


# --- what `status` reports (inside StatusReport) ---------------------------------------------


class ExchangeStatus(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The link to Binance (binance feed, testnet and live modes)."""

    endpoint: str  # e.g. "https://api.binance.com"
    network: str  # live | testnet
    trading: bool  # orders go to the exchange (testnet/live), else paper fills
    used_weight_1m: int  # request weight used in the current minute (the account's, shared)
    weight_limit: int
    rate_limited_s: float  # seconds until a 429/418 back-off ends (0 = none)
    throttled: int  # requests that waited for the rate limit
    stream_connections: int
    streams: int
    stream_reconnects: int
    gap_filled_bars: int
    last_error: str = ""
    # the user data stream (fills as they happen): "" none, "subscribed", or why it is down
    user_stream: str = ""


class OrchestratorStatus(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pid: int
    home: str
    mode: str
    feed: str
    interval: str
    speed: float
    uptime_s: float
    started_ns: int
    feed_time: int | None  # open time (ms) of the feed's latest bar
    feed_ended: bool
    journal_error: str = ""  # set while the journal cannot be written: trading is halted
    protocol: int = PROTOCOL_VERSION
    exchange: ExchangeStatus | None = None


class WorkerStatus(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    symbol: str
    pid: int | None
    state: str
    uptime_s: float | None
    restarts: int
    heartbeat_age_s: float | None
    last_bar_time: int | None
    last_price: float | None
    bars: int
    foreign_bars: int
    # live bars it saw twice over the fleet's life (journaled: worker reports and decisions
    # refused as stale): must stay 0
    duplicate_bars: int
    position: float
    worker_position: float | None
    avg_entry: float
    realized_pnl: float
    unrealized_pnl: float
    open_orders: int
    trades: int
    last_error: str
    halted: str  # why this symbol cannot trade right now ("" = it can)
    cpu_percent: float | None
    rss_bytes: int | None
    strategies: list[str]
    last_error_age_s: float | None = None  # how long ago last_error happened (None: unknown)
    tick_size: str = ""  # the symbol's price tick ("" unknown): the table rounds AVG ENTRY to it
