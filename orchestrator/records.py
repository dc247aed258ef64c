"""Value records carried inside protocol messages (orders, fills, positions, rules, config).

Re-exported by ``orchestrator.protocol``; import them from there.
"""

from __future__ import annotations

import msgspec

HEARTBEAT_S = 2.0  # both ways; see WorkerConfig


class StrategySpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    params: dict[str, float | int | str | bool] = {}


class SymbolPlan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What one symbol trades with: strategies (combined by majority), stake, order type."""

    strategies: list[StrategySpec]
    stake: str = "100"
    order_type: str = "MARKET"


class SymbolRules(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Exchange filters of one symbol, as decimal strings (exact)."""

    symbol: str
    base_asset: str
    quote_asset: str
    tick_size: str
    min_price: str
    max_price: str
    step_size: str
    min_qty: str
    max_qty: str
    min_notional: str
    market_max_qty: str = "0"


class OrderView(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    client_order_id: str
    symbol: str
    side: str  # BUY | SELL
    type: str  # MARKET | LIMIT
    quantity: str
    price: str | None = None
    # NEW, PARTIALLY_FILLED, FILLED, CANCELED, REJECTED, EXPIRED; PENDING_NEW = journaled,
    # not yet (or not knowably) acknowledged by the exchange
    status: str = "NEW"
    executed_qty: str = "0"
    reason: str = ""
    created_ns: int = 0
    updated_ns: int = 0


class FillView(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    trade_id: int
    client_order_id: str
    symbol: str
    side: str
    price: str
    qty: str
    fee: str
    fee_asset: str
    time_ns: int
    exchange_trade_id: int | None = None  # Binance's tradeId (per symbol); None in paper


class PositionView(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    symbol: str
    qty: str = "0"
    avg_entry: str = "0"
    realized_pnl: str = "0"  # quote, net of all fees paid
    fees_paid: str = "0"
    trades: int = 0


class WorkerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    symbol: str
    strategies: list[StrategySpec]
    stake: str  # quote amount per entry
    order_type: str = "MARKET"  # MARKET | LIMIT
    limit_ttl_bars: int = 5  # a LIMIT entry not filled after this many bars is cancelled
    # Heartbeats are most of an idle fleet's CPU, so both sides beat every 2 s: the
    # orchestrator's is one broadcast that each worker answers with its own. A worker that
    # heard nothing for heartbeat_s * liveness seconds exits on its own.
    heartbeat_s: float = HEARTBEAT_S
    liveness: int = 3
