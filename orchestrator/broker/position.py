"""A spot position derived from fills alone, so replaying the journal rebuilds it exactly.

Weighted-average cost; fees are charged in the quote asset and subtracted from realized PnL
when paid (buy and sell), so ``realized_pnl`` is net of every fee.
"""

from __future__ import annotations

from decimal import Decimal

from orchestrator.broker.rules import fmt
from orchestrator.protocol import FillView, PositionView

__all__ = ["Position"]

_ZERO = Decimal(0)


class Position:
    """Quantity, cost basis and realized PnL of one symbol (all ``Decimal``)."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.qty = _ZERO
        # Total cost of the held quantity. Kept instead of the average so a full close removes
        # it exactly and a flat position's realized PnL has no rounding residue.
        self.cost = _ZERO
        self.realized_pnl = _ZERO
        self.fees_paid = _ZERO
        self.trades = 0

    @property
    def avg_entry(self) -> Decimal:
        return self.cost / self.qty if self.qty else _ZERO

    def apply(self, fill: FillView) -> None:
        """Account one fill; ValueError for another symbol or a sell beyond the quantity held."""
        if fill.symbol != self.symbol:
            raise ValueError(f"fill {fill.trade_id} is for {fill.symbol}, not {self.symbol}")
        price, qty, fee = Decimal(fill.price), Decimal(fill.qty), Decimal(fill.fee)
        if fill.side == "BUY":
            self.qty += qty
            self.cost += qty * price
        elif fill.side == "SELL":
            if qty > self.qty:
                raise ValueError(
                    f"fill {fill.trade_id} sells {fmt(qty)} {self.symbol} but only "
                    f"{fmt(self.qty)} is held (spot cannot go short)"
                )
            removed = self.cost if qty == self.qty else self.cost * qty / self.qty
            self.realized_pnl += qty * price - removed
            self.cost -= removed
            self.qty -= qty
        else:
            raise ValueError(f"fill {fill.trade_id} has side {fill.side!r}")
        self.fees_paid += fee
        self.realized_pnl -= fee
        self.trades += 1

    def unrealized(self, last_price: Decimal) -> Decimal:
        """(last - avg_entry) * qty, computed from the cost basis: last * qty - cost."""
        return last_price * self.qty - self.cost

    def view(self) -> PositionView:
        return PositionView(
            symbol=self.symbol,
            qty=fmt(self.qty),
            avg_entry=fmt(self.avg_entry),
            realized_pnl=fmt(self.realized_pnl),
            fees_paid=fmt(self.fees_paid),
            trades=self.trades,
        )
