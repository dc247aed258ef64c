"""Paper broker: Binance spot semantics (filters, fees, slippage, balances) without an exchange.

Crash-only: everything lives in the journal. Orders are journaled (committed) before they can
fill, fills and the order's new state are journaled in one transaction, and a new broker on the
same journal rebuilds positions from fills and re-rests open LIMIT orders, so it behaves exactly
like the one that died. Placing is idempotent on ``client_order_id``: a resend returns the
journaled state and never trades twice. JournalError always propagates.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from decimal import Decimal

import msgspec

from multibot.market.bar import Bar
from multibot.market.position import Position
from multibot.market.rules import (
    check_order,
    decimal_of,
    fmt,
    parse_decimal,
    price_decimal,
    round_step_down,
    round_step_up,
)
from multibot.wire.protocol import (
    ErrorCode,
    FillView,
    OrderUpdate,
    OrderView,
    PlaceOrder,
    PositionView,
    ProtocolError,
    SymbolRules,
    client_order_id,
)
from orchestrator.broker.journal import OrderJournal

__all__ = ["PaperBroker", "check_client_order_id", "client_order_id", "parse_seq"]

_COID_RE = re.compile(r"[A-Za-z0-9_-]{1,36}")
_SEQ_DIGITS = 18  # a seq fits SQLite's signed 64-bit INTEGER
_ZERO = Decimal(0)


def parse_seq(symbol: str, coid: str) -> int:
    """``seq`` of an id made by :func:`client_order_id` for ``symbol``; 0 for any other id."""
    prefix = f"mb-{symbol}-"
    if not coid.startswith(prefix):
        return 0
    rest = coid[len(prefix) :]
    # 1 to 18 ASCII digits (isdigit alone would also take other scripts' digits)
    return int(rest) if len(rest) <= _SEQ_DIGITS and rest.isascii() and rest.isdigit() else 0


def check_client_order_id(coid: str) -> None:
    """BAD_BODY unless ``coid`` is an id Binance accepts."""
    if not _COID_RE.fullmatch(coid):
        raise ProtocolError(
            ErrorCode.BAD_BODY,
            f"client_order_id {coid!r} must be 1-36 characters from A-Z a-z 0-9 _ -",
        )


def _price(value: float) -> Decimal | None:
    price = price_decimal(value)  # Decimal(repr(value)): what the exchange sent
    return price if price.is_finite() and price > 0 else None


_INF = math.inf  # 0 < x < _INF holds exactly when _price(x) is not None


class PaperBroker:
    def __init__(
        self,
        journal: OrderJournal,
        rules: Mapping[str, SymbolRules],
        *,
        fee_rate: Decimal = Decimal("0.001"),
        slippage_bps: Decimal = Decimal("2"),
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._journal = journal
        self._rules = dict(rules)
        self._fee_rate = Decimal(fee_rate)
        self._slippage = Decimal(slippage_bps) / 10_000
        self._buy_slip, self._sell_slip = 1 + self._slippage, 1 - self._slippage
        self._clock = clock
        self._positions: dict[str, Position] = {}
        self._open: dict[str, dict[str, OrderView]] = {}  # symbol -> coid -> order, by age
        self._last: dict[str, Decimal] = {}
        # Bar closes not yet converted to Decimal (that is done when a price is needed): most
        # bars fill nothing, and repr() + Decimal() per bar dominated a backtest's time.
        self._last_close: dict[str, float] = {}
        for fill in journal.fills():
            self._position(fill.symbol).apply(fill)
        for order in journal.orders(open_only=True):
            if order.type == "LIMIT":
                self._open.setdefault(order.symbol, {})[order.client_order_id] = order
            else:
                # Journaled, then the process died before the fill: it never executed. Say so
                # instead of leaving it NEW forever (a resend then sees EXPIRED).
                journal.update_order(
                    order.client_order_id,
                    "EXPIRED",
                    order.executed_qty,
                    "expired: the broker restarted before this MARKET order filled",
                    clock(),
                )

    def add_rules(self, rules: SymbolRules) -> None:
        """Make (or update) a symbol tradable, e.g. one hot-added with synthetic rules."""
        self._rules[rules.symbol] = rules

    # --- queries -----------------------------------------------------------------------------

    def _position(self, symbol: str) -> Position:
        position = self._positions.get(symbol)
        if position is None:
            position = self._positions[symbol] = Position(symbol)
        return position

    def position(self, symbol: str) -> PositionView:
        position = self._positions.get(symbol)
        return position.view() if position else PositionView(symbol=symbol)

    def positions(self) -> dict[str, PositionView]:
        """Every symbol that ever traded."""
        return {symbol: pos.view() for symbol, pos in self._positions.items()}

    def unrealized_pnl(self, symbol: str) -> Decimal:
        last, position = self.last_price(symbol), self._positions.get(symbol)
        return position.unrealized(last) if last is not None and position else _ZERO

    def last_price(self, symbol: str) -> Decimal | None:
        close = self._last_close.pop(symbol, None)
        if close is not None:
            self._last[symbol] = price_decimal(close)
        return self._last.get(symbol)

    def open_orders(self, symbol: str) -> list[OrderView]:
        return list(self._open.get(symbol, {}).values())

    def has_open(self, symbol: str) -> bool:
        """Whether an order of ``symbol`` rests (so a bar could fill it)."""
        return bool(self._open.get(symbol))

    def flat(self, symbol: str) -> bool:
        """Nothing of ``symbol`` held (no quantity, no cost) and no order of it resting."""
        position = self._positions.get(symbol)
        return not self.has_open(symbol) and (position is None or not (position.qty or
                                                                       position.cost))

    def next_seq(self, symbol: str) -> int:
        return self._journal.max_seq(symbol) + 1

    # --- market data -------------------------------------------------------------------------

    def on_bar(self, bar: Bar) -> list[OrderUpdate]:
        """Take ``bar.close`` as the last price and fill the resting LIMIT orders it crosses."""
        low, high, close = bar.low, bar.high, bar.close
        # 0.0, not 0: float-to-float comparisons are the fast ones
        if not (0.0 < low < _INF and 0.0 < high < _INF and 0.0 < close < _INF):
            return []  # a corrupt bar must not move prices or fill anything
        symbol = bar.symbol
        if not self._open.get(symbol):  # nothing can fill: keep the close, convert it later
            self._last_close[symbol] = close
            return []
        dlow, dhigh, dclose = _price(low), _price(high), _price(close)
        assert dlow is not None and dhigh is not None and dclose is not None
        self._last_close.pop(symbol, None)
        self._last[symbol] = dclose
        if symbol not in self._rules:
            return []  # restored orders of a symbol not (yet) re-added wait for its rules
        updates = []
        for order in self.open_orders(symbol):
            if order.price is None:
                continue
            limit = Decimal(order.price)
            if (dlow <= limit) if order.side == "BUY" else (dhigh >= limit):
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

        Raises ProtocolError only for an unusable client_order_id (BAD_BODY) or one already
        used by another symbol (CONFLICT); every other rejection is journaled as REJECTED and
        returned.
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
            if existing.type == "MARKET" and existing.status == "NEW":
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
                status="REJECTED",
                reason=f"{exc.code.value}: {exc.reason}",
                created_ns=now,
                updated_ns=now,
            )
            self._journal.insert_order(rejected, seq)
            return OrderUpdate(order=rejected, position=self.position(symbol))
        accepted = OrderView(
            client_order_id=coid,
            symbol=symbol,
            side=order.side,
            type=order.type,
            quantity=fmt(qty),
            price=None if price is None else fmt(price),
            status="NEW",
            created_ns=now,
            updated_ns=now,
        )
        # Committed before any fill: a crash in between leaves a NEW order, never a lone fill.
        self._journal.insert_order(accepted, seq)
        if accepted.type == "LIMIT":
            self._open.setdefault(symbol, {})[coid] = accepted
        fill_price = self._taker_price(accepted, price, last)
        if fill_price is None:
            return OrderUpdate(order=accepted, position=self.position(symbol))
        return self._fill(accepted, fill_price, now, qty)

    def _validate(self, symbol: str, order: PlaceOrder,
                  last: Decimal | None) -> tuple[Decimal, Decimal | None]:
        """Binance's checks in Binance's order: body, filters (-1013), then balance (-2010);
        ``last`` is the symbol's last price."""
        rules = self._rules.get(symbol)
        if rules is None:
            raise ProtocolError(ErrorCode.UNKNOWN_SYMBOL, f"no exchange rules for {symbol}")
        qty = parse_decimal(order.quantity, "quantity")
        price = None if order.price is None else parse_decimal(order.price, "price")
        check_order(rules, order.side, order.type, qty, price, last)
        if order.type == "MARKET" and last is None:
            raise ProtocolError(ErrorCode.NOT_AVAILABLE, f"no market price yet for {symbol}")
        if order.side == "SELL":
            held = self._positions[symbol].qty if symbol in self._positions else _ZERO
            reserved = (
                sum(
                    (
                        Decimal(o.quantity) - Decimal(o.executed_qty)
                        for o in self.open_orders(symbol)
                        if o.side == "SELL"
                    ),
                    _ZERO,
                )
                if self._open.get(symbol)
                else _ZERO
            )
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
        tick = decimal_of(self._rules[order.symbol].tick_size)
        buy = order.side == "BUY"
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
        rules = self._rules[order.symbol]
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
        self._journal.record_fill(fill, "FILLED", executed)
        position = self._position(order.symbol)
        # the values the fill's text was made from (fmt is exact): no parsing back
        position.add(fill.trade_id, order.side, price, qty, fee, rules.quote_asset)
        self._open.get(order.symbol, {}).pop(order.client_order_id, None)
        done = msgspec.structs.replace(
            order, status="FILLED", executed_qty=executed, updated_ns=now
        )
        return OrderUpdate(order=done, fills=[fill], position=position.view())

    def cancel_now(self, symbol: str, client_order_id: str) -> OrderUpdate:
        """Cancel an open order of ``symbol``; UNKNOWN_ORDER (Binance -2013) otherwise."""
        order = self._open.get(symbol, {}).get(client_order_id)
        if order is None:
            raise ProtocolError(
                ErrorCode.UNKNOWN_ORDER, f"{symbol} has no open order {client_order_id!r}"
            )
        now = self._clock()
        self._journal.update_order(
            client_order_id, "CANCELED", order.executed_qty, order.reason, now
        )
        del self._open[symbol][client_order_id]
        canceled = msgspec.structs.replace(order, status="CANCELED", updated_ns=now)
        return OrderUpdate(order=canceled, position=self.position(symbol))

    def cancel_all_now(self, symbol: str) -> list[OrderUpdate]:
        return [self.cancel_now(symbol, o.client_order_id) for o in self.open_orders(symbol)]
