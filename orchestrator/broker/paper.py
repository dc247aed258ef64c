"""Paper broker: Binance spot semantics (filters, fees, slippage, balances) without an exchange.

Crash-only: everything lives in the journal. Orders are journaled (committed) before they can
fill, fills and the order's new state are journaled in one transaction, and a new broker on the
same journal rebuilds positions from fills and re-rests open LIMIT orders, so it behaves exactly
like the one that died. Placing is idempotent on ``client_order_id``: a resend returns the
journaled state and never trades twice. JournalError always propagates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from decimal import Decimal

import msgspec

from multibot.errors import ErrorCode, ProtocolError
from multibot.market.bar import Bar
from multibot.market.orders import OrderStatus, OrderType, Side
from multibot.market.records import FillView, OrderView, PositionView, SymbolRules
from multibot.market.rules import (
    check_order,
    decimal_of,
    fmt,
    parse_decimal,
    price_decimal,
    round_step_down,
    round_step_up,
)
from multibot.wire.protocol import OrderUpdate, PlaceOrder, client_order_id
from multibot.wire.settings import DEFAULTS
from orchestrator.broker.book import Book, BookQueries
from orchestrator.broker.order_ids import check_client_order_id, parse_seq
from orchestrator.broker.order_journal import OrderJournal

__all__ = ["PaperBroker", "check_client_order_id", "client_order_id", "parse_seq"]

# Looked up once: attribute access on an enum class is slow, and these are per bar and order.
_BUY, _SELL = Side.BUY, Side.SELL
_LIMIT, _MARKET = OrderType.LIMIT, OrderType.MARKET
_NEW, _FILLED = OrderStatus.NEW, OrderStatus.FILLED


def _price(value: float) -> Decimal | None:
    price = price_decimal(value)  # Decimal(repr(value)): what the exchange sent
    return price if price.is_finite() and price > 0 else None


_INF = math.inf  # 0 < x < _INF holds exactly when _price(x) is not None


class PaperBroker(BookQueries):
    def __init__(
        self,
        journal: OrderJournal,
        rules: Mapping[str, SymbolRules],
        *,
        fee_rate: Decimal = Decimal(DEFAULTS.fee_rate),
        slippage_bps: Decimal = Decimal(DEFAULTS.slippage_bps),
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._journal = journal
        self.book = Book(journal, rules)  # paper fees are all in the quote asset
        self._fee_rate = Decimal(fee_rate)
        self._slippage = Decimal(slippage_bps) / 10_000
        self._buy_slip, self._sell_slip = 1 + self._slippage, 1 - self._slippage
        self._clock = clock
        for order in journal.orders(open_only=True):
            if order.type == _LIMIT:
                self.book.track(order)
            else:
                # Journaled, then the process died before the fill: it never executed. Say so
                # instead of leaving it NEW forever (a resend then sees EXPIRED).
                journal.update_order(
                    order.client_order_id,
                    OrderStatus.EXPIRED,
                    order.executed_qty,
                    "expired: the broker restarted before this MARKET order filled",
                    clock(),
                )

    # --- queries beyond the Broker protocol's ------------------------------------------------

    def positions(self) -> dict[str, PositionView]:
        """Every symbol that ever traded."""
        return self.book.position_views()

    def has_open(self, symbol: str) -> bool:
        """Whether an order of ``symbol`` rests (so a bar could fill it)."""
        return self.book.has_open(symbol)

    # --- market data -------------------------------------------------------------------------

    def on_bar(self, bar: Bar) -> list[OrderUpdate]:
        """Take ``bar.close`` as the last price and fill the resting LIMIT orders it crosses."""
        low, high, close = bar.low, bar.high, bar.close
        # 0.0, not 0: float-to-float comparisons are the fast ones
        if not (0.0 < low < _INF and 0.0 < high < _INF and 0.0 < close < _INF):
            return []  # a corrupt bar must not move prices or fill anything
        symbol, book = bar.symbol, self.book
        if not book.open.get(symbol):  # nothing can fill: keep the close, convert it later
            book.closes[symbol] = close
            return []
        dlow, dhigh, dclose = _price(low), _price(high), _price(close)
        assert dlow is not None and dhigh is not None and dclose is not None
        book.set_last(symbol, dclose)
        if symbol not in book.rules:
            return []  # restored orders of a symbol not (yet) re-added wait for its rules
        updates = []
        for order in book.open_orders(symbol):
            if order.price is None:
                continue
            limit = Decimal(order.price)
            if (dlow <= limit) if order.side == _BUY else (dhigh >= limit):
                updates.append(self._fill(order, limit))
        return updates

    # --- orders ------------------------------------------------------------------------------

    @property
    def on_exchange(self) -> bool:
        return False

    async def place(self, symbol: str, order: PlaceOrder) -> OrderUpdate:
        return self.place_now(symbol, order)

    async def cancel(self, symbol: str, client_order_id: str) -> OrderUpdate:
        return self.cancel_now(symbol, client_order_id)

    async def cancel_all(self, symbol: str) -> list[OrderUpdate]:
        return self.cancel_all_now(symbol)

    async def reconcile(self, symbol: str) -> None:
        """The journal is the paper venue: nothing to agree with."""

    def place_now(self, symbol: str, order: PlaceOrder) -> OrderUpdate:
        """Place (or, for a known client_order_id, look up) an order.

        Raises ProtocolError only for an unusable client_order_id (BAD_BODY), one already
        used by another symbol (CONFLICT), or a decision the symbol already took on that bar
        or a later one (STALE_DECISION; see orchestrator.broker.decisions); every other
        rejection is journaled as REJECTED and returned.
        """
        coid = order.client_order_id
        check_client_order_id(coid)
        existing = self._journal.get_order(coid)
        if existing is not None:
            if existing.symbol != symbol:
                raise ProtocolError(
                    ErrorCode.CONFLICT,
                    f"client_order_id {coid} is already used by a {existing.symbol} order",
                )
            if existing.type == _MARKET and existing.status == _NEW:
                # Journaled, then the fill's write failed: finish the intent, exactly once.
                price = self._taker_price(existing, None, self.last_price(symbol))
                if price is not None:
                    return self._fill(existing, price)
            fills = self._journal.order_fills(coid)
            return OrderUpdate(order=existing, fills=fills, position=self.position(symbol))
        now, seq = self._clock(), parse_seq(symbol, coid)
        last = self.last_price(symbol)
        try:
            qty, price = self._validate(symbol, order, last)
        except ProtocolError as exc:
            rejected = OrderView(
                client_order_id=coid,
                symbol=symbol,
                side=order.side,
                type=order.type,
                quantity=order.quantity,
                price=order.price,
                status=OrderStatus.REJECTED,
                reason=f"{exc.code.value}: {exc.reason}",
                created_ns=now,
                updated_ns=now,
            )
            self.book.decisions.journal_intent(rejected, seq, order)
            return OrderUpdate(order=rejected, position=self.position(symbol))
        accepted = OrderView(
            client_order_id=coid,
            symbol=symbol,
            side=order.side,
            type=order.type,
            quantity=fmt(qty),
            price=None if price is None else fmt(price),
            status=_NEW,
            created_ns=now,
            updated_ns=now,
        )
        # Committed before any fill: a crash in between leaves a NEW order, never a lone fill.
        self.book.decisions.journal_intent(accepted, seq, order)
        if accepted.type == _LIMIT:
            self.book.track(accepted)
        fill_price = self._taker_price(accepted, price, last)
        if fill_price is None:
            return OrderUpdate(order=accepted, position=self.position(symbol))
        return self._fill(accepted, fill_price, now, qty)

    def _validate(self, symbol: str, order: PlaceOrder,
                  last: Decimal | None) -> tuple[Decimal, Decimal | None]:
        """Binance's checks in Binance's order: body, filters (-1013), then balance (-2010);
        ``last`` is the symbol's last price."""
        rules = self.book.rules.get(symbol)
        if rules is None:
            raise ProtocolError(ErrorCode.UNKNOWN_SYMBOL, f"no exchange rules for {symbol}")
        qty = parse_decimal(order.quantity, "quantity")
        price = None if order.price is None else parse_decimal(order.price, "price")
        check_order(rules, order.side, order.type, qty, price, last)
        if order.type == _MARKET and last is None:
            raise ProtocolError(ErrorCode.NOT_AVAILABLE, f"no market price yet for {symbol}")
        if order.side == _SELL:
            held, reserved = self.book.sell_balance(symbol)
            if qty > held - reserved:
                raise ProtocolError(
                    ErrorCode.INSUFFICIENT_BALANCE,
                    f"selling {fmt(qty)} {rules.base_asset} but only {fmt(held - reserved)} is "
                    f"free ({fmt(held)} held, {fmt(reserved)} locked in open SELL orders)",
                )
        return qty, price

    def _taker_price(self, order: OrderView, limit: Decimal | None,
                     last: Decimal | None) -> Decimal | None:
        """Price an order takes liquidity at ``last``, the symbol's last price, or None if it
        rests (or has no market)."""
        if last is None:
            return None
        tick = decimal_of(self.book.rules[order.symbol].tick_size)
        buy = order.side == _BUY
        if limit is None:  # MARKET: slippage against the taker, then onto the tick grid
            if buy:
                return round_step_up(last * self._buy_slip, tick)
            return max(round_step_down(last * self._sell_slip, tick), tick)
        # A marketable LIMIT trades at the market, never beyond its own limit.
        if buy and limit >= last:
            return min(round_step_up(last, tick), limit)
        if not buy and limit <= last:
            return max(round_step_down(last, tick), limit)
        return None

    def _fill(self, order: OrderView, price: Decimal, now: int | None = None,
              quantity: Decimal | None = None) -> OrderUpdate:
        """Fill the rest of ``order`` at ``price``: journal first, then memory. ``now`` and
        ``quantity`` (the order's, nothing executed yet) when the caller has them at hand."""
        book = self.book
        rules = book.rules[order.symbol]
        if now is None:
            now = self._clock()
        if quantity is None or order.executed_qty != "0":
            quantity = Decimal(order.quantity)
            executed_before = decimal_of(order.executed_qty)
            qty = quantity - executed_before
            executed = fmt(quantity)
            qty_text = fmt(qty) if executed_before else executed  # the same value: the same text
        else:
            qty, executed = quantity, order.quantity
            qty_text = executed
        fee = self._fee_rate * qty * price
        fill = FillView(
            trade_id=self._journal.next_trade_id(),
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            price=fmt(price),
            qty=qty_text,
            fee=fmt(fee),
            fee_asset=rules.quote_asset,
            time_ns=now,
        )
        self._journal.record_fill(fill, _FILLED, executed)
        position = book.position_of(order.symbol)
        # the values the fill's text was made from (fmt is exact): no parsing back
        position.add(fill.trade_id, order.side, price, qty, fee, rules.quote_asset)
        done = msgspec.structs.replace(
            order, status=_FILLED, executed_qty=executed, updated_ns=now
        )
        book.track(done)
        return OrderUpdate(order=done, fills=[fill], position=position.view())

    def cancel_now(self, symbol: str, client_order_id: str) -> OrderUpdate:
        """Cancel an open order of ``symbol``; UNKNOWN_ORDER (Binance -2013) otherwise."""
        order = self.book.open_order(symbol, client_order_id)
        if order is None:
            raise ProtocolError(
                ErrorCode.UNKNOWN_ORDER, f"{symbol} has no open order {client_order_id!r}"
            )
        now = self._clock()
        self._journal.update_order(
            client_order_id, OrderStatus.CANCELED, order.executed_qty, order.reason, now
        )
        canceled = msgspec.structs.replace(order, status=OrderStatus.CANCELED, updated_ns=now)
        self.book.track(canceled)
        return OrderUpdate(order=canceled, position=self.position(symbol))

    def cancel_all_now(self, symbol: str) -> list[OrderUpdate]:
        return [self.cancel_now(symbol, o.client_order_id) for o in self.open_orders(symbol)]
