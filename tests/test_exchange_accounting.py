"""Accounting for exchange fills: fees in the base asset (Binance on buys), dust, old journals."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

from multibot.market.bar import Bar, Signal
from multibot.market.orders import OrderStatus, OrderType, Side
from multibot.market.position import Position
from multibot.market.rules import bundled_rules
from multibot.wire.protocol import FillView, OrderUpdate, OrderView, PositionView, WorkerConfig
from orchestrator.broker.journal import SCHEMA_VERSION, Journal
from strategies.base import Strategy
from worker.runner import Runner

D = Decimal


def fill(trade_id: int, side: str, qty: str, price: str, fee: str, fee_asset: str) -> FillView:
    return FillView(trade_id=trade_id, client_order_id=f"mb-BTCUSDT-{trade_id}",
                    symbol="BTCUSDT", side=Side(side), price=price, qty=qty, fee=fee,
                    fee_asset=fee_asset, time_ns=trade_id, exchange_trade_id=100 + trade_id)


def test_a_base_asset_fee_is_taken_from_the_quantity_and_shows_in_the_pnl() -> None:
    position = Position("BTCUSDT", "BTC", "USDT")
    position.apply(fill(1, "BUY", "0.001", "50000", "0.000001", "BTC"))
    assert position.qty == D("0.000999")  # what the account received
    assert position.cost == D("50")  # what was paid
    assert position.fees_paid == D("0.05")
    position.apply(fill(2, "SELL", "0.000999", "51000", "0.050949", "USDT"))
    assert position.qty == 0
    # 0.000999 * 51000 - 50 - 0.050949: both fees are in the realized PnL
    assert position.realized_pnl == D("0.000999") * 51000 - 50 - D("0.050949")
    third = Position("BTCUSDT", "BTC", "USDT")
    third.apply(fill(3, "BUY", "0.001", "50000", "0.0001", "BNB"))
    assert third.qty == D("0.001") and third.realized_pnl == 0  # not convertible here


def test_paper_positions_keep_quote_fees() -> None:
    position = Position("BTCUSDT")
    position.apply(fill(1, "BUY", "0.001", "50000", "0.05", "USDT"))
    assert (position.qty, position.realized_pnl) == (D("0.001"), D("-0.05"))


class _Always(Strategy):
    warmup = 0

    def __init__(self, signal: Signal) -> None:
        self.signal = signal

    def on_bar(self, bar: Bar) -> Signal | None:
        return self.signal


def _bar(t: int, close: float) -> Bar:
    return Bar(symbol="BTCUSDT", open_time=t, close_time=t + 999, open=close, high=close,
               low=close, close=close, volume=1.0)


def test_fee_dust_does_not_count_as_long() -> None:
    """Dust left by base-asset fees must neither block the next entry nor be 'sold'."""
    config = WorkerConfig(symbol="BTCUSDT", strategies=[], stake="100")
    strategy = _Always(Signal.FLAT)
    dust = PositionView(symbol="BTCUSDT", qty="0.00002")  # 2 steps, worth ~1 USDT
    runner = Runner(config, bundled_rules()["BTCUSDT"], [strategy], dust, [], 1)
    runner.warmup([_bar(0, 50000.0)])
    strategy.signal = Signal.LONG
    actions = runner.on_bar(_bar(1000, 50000.0))
    assert [(a.side, a.quantity) for a in actions] == [("BUY", "0.002")]  # type: ignore[attr-defined]
    update = OrderUpdate(order=OrderView(client_order_id="mb-BTCUSDT-1", symbol="BTCUSDT",
                                         side=Side.BUY, type=OrderType.MARKET, quantity="0.002",
                                         status=OrderStatus.FILLED, executed_qty="0.002"),
                         position=PositionView(symbol="BTCUSDT", qty="0.002018"))
    runner.on_update(update)
    strategy.signal = Signal.FLAT
    sells = runner.on_bar(_bar(2000, 50000.0))
    assert [(a.side, a.quantity) for a in sells] == [("SELL", "0.00201")]  # type: ignore[attr-defined]


def test_a_version_1_journal_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with Journal(path) as journal:
        journal.insert_order(OrderView(client_order_id="mb-BTCUSDT-1", symbol="BTCUSDT",
                                       side=Side.BUY, type=OrderType.MARKET, quantity="1"), 1)
    with sqlite3.connect(path) as conn:  # make it look like a journal from before v2
        for statement in ("DROP INDEX orders_symbol_bar", "DROP TABLE duplicate_bars",
                          "ALTER TABLE orders DROP COLUMN bar_time",
                          "ALTER TABLE orders DROP COLUMN exit_retry"):  # v3
            conn.execute(statement)
        conn.execute("DROP INDEX fills_exchange_trade")
        conn.execute("ALTER TABLE fills DROP COLUMN exchange_trade_id")
        conn.execute("PRAGMA user_version=1")
    with Journal(path) as journal:
        assert journal.get_order("mb-BTCUSDT-1") is not None
        journal.record_fill(fill(1, "BUY", "1", "10", "0.001", "BTC"), "FILLED", "1")
        assert journal.exchange_trade_ids("mb-BTCUSDT-1") == {101}
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_fee_larger_than_the_holding_never_breaks_a_replay() -> None:
    """BNB fees paid in BNB on a BNB sell: the fill is journaled, so it must always apply."""
    position = Position("BNBUSDT", "BNB", "USDT")
    position.apply(FillView(trade_id=1, client_order_id="mb-BNBUSDT-1", symbol="BNBUSDT",
                            side=Side.BUY, price="600", qty="1", fee="0", fee_asset="BNB",
                            time_ns=1))
    position.apply(FillView(trade_id=2, client_order_id="mb-BNBUSDT-2", symbol="BNBUSDT",
                            side=Side.SELL, price="610", qty="1", fee="0.001", fee_asset="BNB",
                            time_ns=2))
    assert position.qty == 0
    assert position.realized_pnl == D("10") - D("0.001") * 610
