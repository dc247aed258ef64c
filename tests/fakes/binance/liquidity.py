"""How much a taker finds in the fake's book, and how resting orders fill over time.

By default the book is bottomless: a MARKET order (or a LIMIT marketable on arrival) fills
whole at the current price, in one trade. ``FakeBinance.set_liquidity(symbol, levels=[...],
level_ticks=1, fill_parts=1)`` makes it thin, as real books are:

- ``levels``: the quantities resting on the other side, one price level each, the first at
  the current price and each next one ``level_ticks`` ticks worse (higher for a BUY, lower for
  a SELL). A taker walks them in order, one trade per level. What the levels cannot fill
  EXPIRES for a MARKET order (status EXPIRED, executedQty what was filled, as Binance does
  with thin books) and for IOC; a FOK fills whole or not at all; a GTC LIMIT rests with the
  rest. The levels are there again for the next order (the book refills at once).
  ``levels=None`` makes the book bottomless again.
- ``fill_parts``: a resting LIMIT fills in this many trades (equal parts, each on its own
  crossing tick, each with its own trade id) instead of one. ``FakeBinance(partial_fills=True)``
  makes 2 the default for every symbol.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

_ZERO = Decimal(0)


@dataclass
class Liquidity:
    levels: list[Decimal] | None = None  # None: bottomless
    level_ticks: int = 1
    fill_parts: int = 1

    def taker_plan(self, side: str, qty: Decimal, current: Decimal, tick: Decimal,
                   limit: Decimal | None) -> list[tuple[Decimal, Decimal]]:
        """(quantity, price) of each trade a taker order of ``qty`` makes on arrival;
        ``limit`` is a LIMIT order's price (levels beyond it are not taken)."""
        def allowed(price: Decimal) -> bool:
            return limit is None or (price <= limit if side == "BUY" else price >= limit)

        if self.levels is None:
            return [(qty, current)] if allowed(current) else []
        plan: list[tuple[Decimal, Decimal]] = []
        left = qty
        for i, available in enumerate(self.levels):
            offset = i * self.level_ticks * tick
            price = current + offset if side == "BUY" else max(current - offset, tick)
            if left <= _ZERO or not allowed(price):
                break
            take = min(available, left)
            if take > _ZERO:
                plan.append((take, price))
                left -= take
        return plan

    def resting_part(self, orig_qty: Decimal, remaining: Decimal, fills_so_far: int,
                     step: Decimal) -> Decimal:
        """How much of a resting order one crossing tick fills."""
        if fills_so_far >= self.fill_parts - 1:
            return remaining
        part = (orig_qty / self.fill_parts / step).to_integral_value(ROUND_DOWN) * step
        return part if _ZERO < part < remaining else remaining


def liquidity_of(levels: list[str] | None, level_ticks: int, fill_parts: int) -> Liquidity:
    if level_ticks < 0 or fill_parts < 1:
        raise ValueError("level_ticks must be >= 0 and fill_parts >= 1")
    parsed = None if levels is None else [Decimal(str(q)) for q in levels]
    if parsed is not None and any(q < 0 for q in parsed):
        raise ValueError("level quantities must be >= 0")
    return Liquidity(parsed, level_ticks, fill_parts)
