"""Value records of the market model: exchange rules, orders, fills, positions (exact decimals
as strings). Carried inside wire messages; imports only the order vocabulary."""

from __future__ import annotations

import msgspec

from multibot.market.orders import OrderStatus, OrderType, Side


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
    # PERCENT_PRICE_BY_SIDE ("0": no bound): a LIMIT BUY's price within [bid_multiplier_down,
    # bid_multiplier_up] x the average price, a SELL's within the ask multipliers
    bid_multiplier_up: str = "0"
    bid_multiplier_down: str = "0"
    ask_multiplier_up: str = "0"
    ask_multiplier_down: str = "0"
    max_num_orders: int = 0  # MAX_NUM_ORDERS: open orders per symbol (0: no limit)


class OrderView(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    quantity: str
    price: str | None = None
    status: OrderStatus = OrderStatus.NEW
    executed_qty: str = "0"
    reason: str = ""
    created_ns: int = 0
    updated_ns: int = 0


class FillView(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    trade_id: int
    client_order_id: str
    symbol: str
    side: Side
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
