"""Value records of the market model: exchange rules, orders, fills, positions (exact decimals
as strings). Carried inside wire messages; imports nothing of the product."""

from __future__ import annotations

import msgspec


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
