"""Pure conversions between multibot's orders and fills and the exchange's reports."""

from __future__ import annotations

from multibot.errors import ErrorCode
from multibot.market.orders import OrderStatus, OrderType, Side
from multibot.market.records import FillView, OrderView, SymbolRules
from multibot.market.rules import (
    decimal_of,
    fmt,
    parse_decimal,
    round_step_down,
    round_step_up,
)
from multibot.wire.protocol import PlaceOrder
from orchestrator.exchange.client import Rejected
from orchestrator.exchange.reports import FillReport, OrderStatusReport

_REJECTION_CODES = {-2010: ErrorCode.INSUFFICIENT_BALANCE, -2011: ErrorCode.UNKNOWN_ORDER,
                    -2013: ErrorCode.UNKNOWN_ORDER, -1121: ErrorCode.UNKNOWN_SYMBOL}


def journal_status(report: OrderStatusReport) -> OrderStatus | None:
    """The status to journal (self-trade prevention's expiry is an expiry); None if the
    report gives none."""
    if report.status == OrderStatus.EXPIRED_IN_MATCH:
        return OrderStatus.EXPIRED
    return report.status


def rejection_reason(exc: Rejected) -> str:
    """"insufficient_balance: binance -2010: Account has insufficient balance ...". -2010 is
    any new order's rejection ("Market is closed.", "Duplicate order sent.", a filter of the
    account): insufficient balance only when it says so."""
    code = _REJECTION_CODES.get(exc.binance_code, ErrorCode.ORDER_REJECTED)
    if exc.binance_code == -2010 and "insufficient balance" not in exc.message.lower():
        code = ErrorCode.ORDER_REJECTED
    return f"{code.value}: {exc.message}"


def on_grid(order: PlaceOrder, rules: SymbolRules) -> tuple[str, str | None]:
    """The order's quantity and (LIMIT only) price rounded onto the exchange's grid (quantity
    down, a BUY limit down and a SELL limit up: never a worse trade)."""
    qty = round_step_down(parse_decimal(order.quantity, "quantity"), decimal_of(rules.step_size))
    if order.type != OrderType.LIMIT or order.price is None:
        return fmt(qty), None
    price = parse_decimal(order.price, "price")
    rounded = (round_step_down if order.side == Side.BUY else round_step_up)(
        price, decimal_of(rules.tick_size))
    return fmt(qty), fmt(rounded)


def fill_view(coid: str, fill: FillReport, trade_id: int, now_ns: int) -> FillView:
    """The journal's fill of one of the exchange's trades; ``now_ns`` dates a trade that
    carries no time (a response's fills)."""
    return FillView(trade_id=trade_id, client_order_id=coid, symbol=fill.symbol,
                    side=fill.side, price=fill.price, qty=fill.qty, fee=fill.commission,
                    fee_asset=fill.commission_asset,
                    time_ns=now_ns if fill.time_ms is None else fill.time_ms * 1_000_000,
                    exchange_trade_id=fill.trade_id)


def matches_intent(order: OrderView, report: OrderStatusReport, tolerance_ns: int,
                   server_offset_ns: int = 0) -> bool:
    """Is ``report`` (found by client order id) the order we journaled, and not an older one
    that reused the id (client ids are unique only among OPEN orders)? ``created_ns`` is on
    our clock, the exchange's time on its own: ``server_offset_ns`` = its minus ours."""
    created = report.time_ms * 1_000_000
    return (
        report.side == order.side and report.type == order.type
        and report.orig_qty == order.quantity
        and (not created or created >= order.created_ns + server_offset_ns - tolerance_ns)
    )


def describe(report: OrderStatusReport) -> str:
    """"web_1 (orderId 7: BUY LIMIT 0.001 @ 50000)" for messages about an order."""
    at = f" @ {report.price}" if report.price != "0" else ""
    return (f"{report.client_order_id} (orderId {report.order_id}: {report.side} "
            f"{report.type} {report.orig_qty}{at})")
