"""A spot position derived from fills alone, so replaying the journal rebuilds it exactly.

Weighted-average cost. A fee in the quote asset (paper, and Binance on sells) is subtracted
from realized PnL when paid, so ``realized_pnl`` is net of every fee. A fee in the base asset
(Binance on buys) is taken from the quantity received: the cost stays, so it shows up in the
average entry and hence in the PnL. A fee in a third asset (BNB) has no price here: it is
not in ``realized_pnl`` or ``fees_paid``.
"""

from __future__ import annotations

from decimal import Context, Decimal, getcontext, setcontext

from multibot.market.orders import Side
from multibot.market.records import FillView, PositionView
from multibot.market.rules import fmt

_BUY, _SELL = Side.BUY, Side.SELL  # looked up once: this is on every fill's path

__all__ = ["EXACT", "Position"]

_ZERO = Decimal(0)
# Enough digits that sums and products of exchange numbers (8-decimal prices and quantities)
# never round; only the proportional cost of a partial sell is rounded, to _COST_QUANTUM.
EXACT = Context(prec=60)
_COST_QUANTUM = Decimal("1e-20")


class Position:
    """Quantity, cost basis and realized PnL of one symbol (all ``Decimal``)."""

    def __init__(self, symbol: str, base_asset: str = "", quote_asset: str = "") -> None:
        self.symbol = symbol
        self.base_asset = base_asset  # "" = every fee is in the quote asset (paper)
        self.quote_asset = quote_asset
        self.qty = _ZERO
        # Cost of what is held, not the average: a full close then removes it exactly and a
        # flat position's realized PnL carries no rounding residue.
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
        self.add(fill.trade_id, fill.side, Decimal(fill.price), Decimal(fill.qty),
                 Decimal(fill.fee), fill.fee_asset)

    def add(self, trade_id: int, side: str, price: Decimal, qty: Decimal, fee: Decimal,
            fee_asset: str) -> None:
        """``apply`` of a fill of this symbol whose numbers are at hand (the broker that made
        it): the values of its text, without parsing it back."""
        # localcontext(EXACT) at a quarter of its cost: EXACT itself (not a copy) is made
        # current. The flags it collects then persist, which changes nothing: results depend on
        # the precision and rounding, exceptions on the traps, and those are the same.
        saved = getcontext()
        setcontext(EXACT)
        try:
            if side == _BUY:
                self.qty += qty
                self.cost += qty * price
            elif side == _SELL:
                if qty > self.qty:
                    raise ValueError(
                        f"fill {trade_id} sells {fmt(qty)} {self.symbol} but only "
                        f"{fmt(self.qty)} is held (spot cannot go short)"
                    )
                if qty == self.qty:
                    removed = self.cost  # a full close takes the exact cost: no residue when flat
                else:
                    removed = (self.cost * qty / self.qty).quantize(_COST_QUANTUM)
                self.realized_pnl += qty * price - removed
                self.cost -= removed
                self.qty -= qty
            else:
                raise ValueError(f"fill {trade_id} has side {side!r}")
            if self.base_asset and fee_asset == self.base_asset:
                self._pay_base_fee(fee, price)
            elif not self.quote_asset or fee_asset == self.quote_asset:
                self.fees_paid += fee
                self.realized_pnl -= fee
            self.trades += 1
        finally:
            setcontext(saved)

    def _pay_base_fee(self, fee: Decimal, price: Decimal) -> None:
        """The exchange kept ``fee`` of the base asset: less is held for the same cost. Never
        raises (the fill is already journaled and must replay): a fee beyond what is held,
        e.g. BNB fees on a BNB sell, was paid from elsewhere and counts at the fill's price."""
        self.fees_paid += fee * price  # in quote, at the fill's price
        taken = min(fee, self.qty)
        if taken == self.qty:
            self.realized_pnl -= self.cost
            self.cost = _ZERO
        self.qty -= taken
        self.realized_pnl -= (fee - taken) * price

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
