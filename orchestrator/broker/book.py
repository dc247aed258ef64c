"""A broker's book: positions from the journaled fills, each symbol's open orders, the last
prices, the exchange rules, and how much of a symbol is free to sell.

The paper and the exchange broker each keep one (``BookQueries`` gives them the ``Broker``
queries from it). Memory only: the journal is the record. A new book on the same journal
rebuilds the positions from its fills; the broker puts back the open orders it tracks.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from multibot.market.orders import FINAL_STATUSES, Side
from multibot.market.position import Position
from multibot.market.records import OrderView, PositionView, SymbolRules
from multibot.market.rules import price_decimal
from orchestrator.broker.decisions import Decisions
from orchestrator.broker.order_journal import OrderJournal

__all__ = ["Book", "BookQueries"]

_ZERO = Decimal(0)
_SELL = Side.SELL  # looked up once: attribute access on an enum class is slow


class Book:
    """One broker's positions, open orders, last prices and rules, by symbol."""

    def __init__(self, journal: OrderJournal, rules: Mapping[str, SymbolRules], *,
                 fees_in_base: bool = False) -> None:
        """``fees_in_base``: fills may pay their fee in the symbol's base asset (Binance takes
        a buy's fee from what it bought), so each position is told its two assets."""
        self.journal = journal
        self.rules = dict(rules)
        self._fees_in_base = fees_in_base
        self.positions: dict[str, Position] = {}
        self.open: dict[str, dict[str, OrderView]] = {}  # symbol -> coid -> order, by age
        self._last: dict[str, Decimal] = {}
        # Bar closes not yet converted to Decimal (that is done when a price is needed): most
        # bars fill nothing, and repr() + Decimal() per bar would dominate a backtest's time.
        self.closes: dict[str, float] = {}
        self.decisions = Decisions(journal)  # every intent is journaled through it
        for fill in journal.fills():
            self.position_of(fill.symbol).apply(fill)

    def add_rules(self, rules: SymbolRules) -> None:
        self.rules[rules.symbol] = rules

    # --- positions ---------------------------------------------------------------------------

    def position_of(self, symbol: str) -> Position:
        """The symbol's position, made (flat) on first use."""
        position = self.positions.get(symbol)
        if position is None:
            rules = self.rules.get(symbol) if self._fees_in_base else None
            position = Position(symbol, rules.base_asset if rules else "",
                                rules.quote_asset if rules else "")
            self.positions[symbol] = position
        return position

    def position(self, symbol: str) -> PositionView:
        position = self.positions.get(symbol)
        return position.view() if position else PositionView(symbol=symbol)

    def position_views(self) -> dict[str, PositionView]:
        """Every symbol that ever traded."""
        return {symbol: position.view() for symbol, position in self.positions.items()}

    def held(self, base_asset: str) -> Decimal:
        """What the journal says is held of an asset, over all symbols (positions that know
        their assets: ``fees_in_base``)."""
        return sum((p.qty for p in self.positions.values() if p.base_asset == base_asset),
                   _ZERO)

    def sell_balance(self, symbol: str) -> tuple[Decimal, Decimal]:
        """(held, locked) of ``symbol``'s base asset: ``held - locked`` is free to sell, what
        open SELL orders have not yet sold being locked for them."""
        position = self.positions.get(symbol)
        held = position.qty if position is not None else _ZERO
        orders = self.open.get(symbol)
        if not orders:
            return held, _ZERO
        locked = sum((Decimal(o.quantity) - Decimal(o.executed_qty)
                      for o in orders.values() if o.side == _SELL), _ZERO)
        return held, locked

    # --- open orders -------------------------------------------------------------------------

    def open_orders(self, symbol: str) -> list[OrderView]:
        return list(self.open.get(symbol, {}).values())

    def open_order(self, symbol: str, client_order_id: str) -> OrderView | None:
        return self.open.get(symbol, {}).get(client_order_id)

    def has_open(self, symbol: str) -> bool:
        """Whether an order of ``symbol`` rests (so a bar could fill it)."""
        return bool(self.open.get(symbol))

    def resting(self) -> list[OrderView]:
        """Every symbol's open orders."""
        return [order for orders in self.open.values() for order in orders.values()]

    def track(self, order: OrderView) -> None:
        """Keep ``order``'s latest state while it is open; forget it once it is final."""
        if order.status in FINAL_STATUSES:
            orders = self.open.get(order.symbol)
            if orders:
                orders.pop(order.client_order_id, None)
        else:
            self.open.setdefault(order.symbol, {})[order.client_order_id] = order

    def next_seq(self, symbol: str) -> int:
        return self.journal.max_seq(symbol) + 1

    # --- prices ------------------------------------------------------------------------------

    def set_last(self, symbol: str, price: Decimal) -> None:
        self.closes.pop(symbol, None)
        self._last[symbol] = price

    def last_price(self, symbol: str) -> Decimal | None:
        close = self.closes.pop(symbol, None)
        if close is not None:
            self._last[symbol] = price_decimal(close)
        return self._last.get(symbol)

    def unrealized_pnl(self, symbol: str) -> Decimal:
        last, position = self.last_price(symbol), self.positions.get(symbol)
        return position.unrealized(last) if last is not None and position else _ZERO


class BookQueries:
    """The ``Broker`` protocol's queries, answered from the broker's ``book``."""

    book: Book

    def add_rules(self, rules: SymbolRules) -> None:
        """Make (or update) a symbol tradable, e.g. one hot-added with synthetic rules."""
        self.book.add_rules(rules)

    def position(self, symbol: str) -> PositionView:
        return self.book.position(symbol)

    def open_orders(self, symbol: str) -> list[OrderView]:
        return self.book.open_orders(symbol)

    def next_seq(self, symbol: str) -> int:
        return self.book.next_seq(symbol)

    @property
    def decisions(self) -> Decisions:
        return self.book.decisions

    def last_price(self, symbol: str) -> Decimal | None:
        return self.book.last_price(symbol)

    def unrealized_pnl(self, symbol: str) -> Decimal:
        return self.book.unrealized_pnl(symbol)
