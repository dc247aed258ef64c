"""The fake's account: balances, orders, matching against the fake's own price path, fees.

MARKET orders (and LIMIT orders marketable on arrival) fill at once at the current price, or
walk a thin book and EXPIRE what it cannot fill (liquidity.py); other LIMIT orders rest with
their funds locked and fill at their limit price on the ticks that cross it (in several trades
with ``fill_parts``). The fee is 0.1%: a BUY pays it in the base asset, a SELL in the quote
asset, rounded down to 8 decimals. Every change is queued for the user data stream (outbox).
"""

from __future__ import annotations

import random
import string
from decimal import Decimal
from typing import Any

from tests.fakes.binance import history
from tests.fakes.binance.book import Order, limit_param, order_id_param
from tests.fakes.binance.errors import (
    DUPLICATE,
    INSUFFICIENT,
    MARKET_CLOSED,
    MAX_NUM_ORDERS,
    TOO_MANY_ORDERS,
    bad_request,
    f8,
    floor8,
    rejected,
)
from tests.fakes.binance.liquidity import Liquidity
from tests.fakes.binance.market import Market
from tests.fakes.binance.orders import (
    NewOrder,
    check_filters,
    client_id_param,
    market_quantity,
    parse_new_order,
)
from tests.fakes.binance.symbols import SymbolRules
from tests.fakes.binance.user_events import account_position, balance_update, execution_report

# the order record and the lookups' parameter readers live in book.py; rest.py reads them here
__all__ = ["Account", "Order", "limit_param", "order_id_param"]
FEE_RATE = Decimal("0.001")
_ZERO = Decimal(0)


class Account:
    """One Binance account. Not thread-safe: the fake's lock is held around every call."""

    def __init__(self, rules: dict[str, SymbolRules], market: Market,
                 balances: dict[str, str], partial_fills: bool, seed: int) -> None:
        self.rules = rules
        self.market = market
        self.liquidity = {name: Liquidity(fill_parts=2 if partial_fills else 1)
                          for name in rules}
        self.balances: dict[str, list[Decimal]] = {
            asset.upper(): [Decimal(str(amount)), _ZERO] for asset, amount in balances.items()}
        for r in rules.values():
            self.balances.setdefault(r.base, [_ZERO, _ZERO])
            self.balances.setdefault(r.quote, [_ZERO, _ZERO])
        self.max_page = history.MAX_LIMIT  # allOrders / myTrades rows per page at most
        self.max_open_orders = 0  # EXCHANGE_MAX_NUM_ORDERS (0: none)
        self.status = dict.fromkeys(rules, "TRADING")  # BREAK: maintenance (no new orders)
        self.orders: list[Order] = []
        self.trades: list[dict[str, Any]] = []
        self._next_order_id = dict.fromkeys(rules, 1)
        self._ids = random.Random(f"{seed}:client-ids")
        self.update_time = 0
        self.outbox: list[dict[str, Any]] = []  # user data stream events not yet pushed

    def _client_id(self) -> str:
        return "".join(self._ids.choices(string.ascii_letters + string.digits, k=22))

    # -- new orders --------------------------------------------------------------------------
    def place(self, symbol: str, params: dict[str, str], now_ms: int) -> dict[str, Any]:
        """POST /api/v3/order: validate, take the funds, match; the response body."""
        new = parse_new_order(params, symbol)
        if self.status[symbol] != "TRADING":
            raise rejected(MARKET_CLOSED)
        rules = self.rules[symbol]
        current = self.market[symbol].price
        qty = market_quantity(new, rules, current) if new.type == "MARKET" else new.quantity
        assert qty is not None
        check_filters(new, rules, qty, new.price if new.type == "LIMIT" else current, current)
        if new.client_id is not None and any(
                o.is_open and o.symbol == symbol and o.client_id == new.client_id
                for o in self.orders):
            raise rejected(DUPLICATE)
        self._check_open_orders(symbol)
        plan = self.liquidity[symbol].taker_plan(new.side, qty, current, rules.tick,
                                                 new.price if new.type == "LIMIT" else None)
        if new.time_in_force == "FOK" and sum(q for q, _ in plan) < qty:
            plan = []  # fill or kill: whole or nothing
        self._check_funds(new, rules, qty, plan)
        order = Order(symbol=symbol, order_id=self._next_order_id[symbol],
                      client_id=new.client_id or self._client_id(), side=new.side,
                      type=new.type, price=new.price, orig_qty=qty,
                      orig_quote_qty=new.quote_qty, time=now_ms, stp=rules.stp_mode,
                      time_in_force=new.time_in_force or "GTC", update_time=now_ms)
        self._next_order_id[symbol] += 1
        self.orders.append(order)
        self.outbox.append(execution_report(order, "NEW", now_ms))
        for part, price in plan:
            self._fill(order, part, price, maker=False, now_ms=now_ms)
        if order.remaining > _ZERO:
            if order.type == "MARKET" or order.time_in_force in ("IOC", "FOK"):
                order.status = "EXPIRED"  # what the book could not fill never rests
                self.outbox.append(execution_report(order, "EXPIRED", now_ms))
            else:
                self._lock(order)
        self._position(symbol, now_ms)
        return self._response(order, new, now_ms)

    def _check_open_orders(self, symbol: str) -> None:
        """MAX_NUM_ORDERS per symbol, EXCHANGE_MAX_NUM_ORDERS per account (-2010)."""
        limit = self.rules[symbol].max_num_orders
        if limit and sum(1 for o in self.orders if o.is_open and o.symbol == symbol) >= limit:
            raise rejected(MAX_NUM_ORDERS)
        if self.max_open_orders and sum(1 for o in self.orders if o.is_open) >= \
                self.max_open_orders:
            raise rejected(TOO_MANY_ORDERS)

    def _position(self, symbol: str, now_ms: int) -> None:
        rules = self.rules[symbol]
        self.outbox.append(account_position(self.balances, [rules.base, rules.quote], now_ms))

    def deposit(self, asset: str, amount: Decimal, now_ms: int) -> None:
        """Credit (or debit, if negative) ``asset`` from outside trading (a deposit)."""
        balance = self.balances.setdefault(asset, [_ZERO, _ZERO])
        if balance[0] + amount < 0:
            raise ValueError(f"{asset} free balance would go negative")
        balance[0] += amount
        self.outbox.append(balance_update(asset, amount, now_ms))
        self.outbox.append(account_position(self.balances, [asset], now_ms))

    def _check_funds(self, new: NewOrder, rules: SymbolRules, qty: Decimal,
                     plan: list[tuple[Decimal, Decimal]]) -> None:
        if new.side == "BUY":
            need = (qty * new.price if new.type == "LIMIT"
                    else sum((q * p for q, p in plan), _ZERO))
            have = self.balances[rules.quote][0]
        else:
            need, have = qty, self.balances[rules.base][0]
        if have < need:
            raise rejected(INSUFFICIENT)

    def _lock(self, order: Order) -> None:
        rules = self.rules[order.symbol]
        asset, amount = ((rules.quote, order.remaining * order.price) if order.side == "BUY"
                         else (rules.base, order.remaining))
        self.balances[asset][0] -= amount
        self.balances[asset][1] += amount

    def _response(self, order: Order, new: NewOrder, now_ms: int) -> dict[str, Any]:
        body: dict[str, Any] = {"symbol": order.symbol, "orderId": order.order_id,
                                "orderListId": -1, "clientOrderId": order.client_id,
                                "transactTime": now_ms}
        if new.resp_type in ("RESULT", "FULL"):
            body.update(order.result_fields())
        if new.resp_type == "FULL":
            body["fills"] = [dict(f) for f in order.fills]
        return body

    # -- fills -------------------------------------------------------------------------------
    def _fill(self, order: Order, qty: Decimal, price: Decimal, maker: bool,
              now_ms: int) -> None:
        """One fill; ``maker`` fills come from a resting order and use its locked funds."""
        rules = self.rules[order.symbol]
        quote = qty * price
        trade_id = self.market[order.symbol].next_trade_id()
        base_bal, quote_bal = self.balances[rules.base], self.balances[rules.quote]
        if order.side == "BUY":
            commission, fee_asset = floor8(qty * FEE_RATE), rules.base
            quote_bal[1 if maker else 0] -= quote
            base_bal[0] += qty - commission
        else:
            commission, fee_asset = floor8(quote * FEE_RATE), rules.quote
            base_bal[1 if maker else 0] -= qty
            quote_bal[0] += quote - commission
        order.executed += qty
        order.cum_quote += quote
        order.status = "FILLED" if order.executed >= order.orig_qty else "PARTIALLY_FILLED"
        order.update_time = now_ms
        self.update_time = now_ms
        fill = {"price": f8(price), "qty": f8(qty), "commission": f8(commission),
                "commissionAsset": fee_asset, "tradeId": trade_id}
        order.fills.append(fill)
        self.outbox.append(execution_report(order, "TRADE", now_ms, fill, maker))
        self.trades.append({
            "symbol": order.symbol, "id": trade_id, "orderId": order.order_id,
            "orderListId": -1, "price": f8(price), "qty": f8(qty), "quoteQty": f8(quote),
            "commission": f8(commission), "commissionAsset": fee_asset, "time": now_ms,
            "isBuyer": order.side == "BUY", "isMaker": maker, "isBestMatch": True})

    def on_tick(self, now_ms: int) -> None:
        """Fill the resting orders whose limit the symbols' new prices cross."""
        for order in self.orders:
            if not order.is_open or self.status[order.symbol] != "TRADING":
                continue  # a market in maintenance matches nothing
            price = self.market[order.symbol].price
            crossed = price <= order.price if order.side == "BUY" else price >= order.price
            if not crossed:
                continue
            qty = self.liquidity[order.symbol].resting_part(
                order.orig_qty, order.remaining, order.fill_ticks, self.rules[order.symbol].step)
            order.fill_ticks += 1
            self._fill(order, qty, order.price, maker=True, now_ms=now_ms)
            self._position(order.symbol, now_ms)

    # -- lookups and cancels -----------------------------------------------------------------
    def find(self, symbol: str, params: dict[str, str], prefer_open: bool = False) -> Order | None:
        order_id = order_id_param(params, "orderId")
        client_id = client_id_param(params, "origClientOrderId")
        if order_id is None and client_id is None:
            raise bad_request(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but "
                                     "both were empty/null!")
        mine = [o for o in self.orders if o.symbol == symbol]
        if order_id is not None:
            return next((o for o in mine if o.order_id == order_id), None)
        named = [o for o in mine if o.client_id == client_id]
        if prefer_open and any(o.is_open for o in named):
            named = [o for o in named if o.is_open]
        return named[-1] if named else None

    def get(self, symbol: str, params: dict[str, str]) -> dict[str, Any]:
        order = self.find(symbol, params)
        if order is None:
            raise bad_request(-2013, "Order does not exist.")
        return order.view()

    def cancel(self, symbol: str, params: dict[str, str], now_ms: int) -> dict[str, Any]:
        order = self.find(symbol, params, prefer_open=True)
        if order is None or not order.is_open:
            raise bad_request(-2011, "Unknown order sent.")
        cancel_id = client_id_param(params, "newClientOrderId") or self._client_id()
        rules = self.rules[symbol]
        asset, amount = ((rules.quote, order.remaining * order.price) if order.side == "BUY"
                         else (rules.base, order.remaining))
        self.balances[asset][1] -= amount
        self.balances[asset][0] += amount
        order.status, order.update_time, self.update_time = "CANCELED", now_ms, now_ms
        self.outbox.append(execution_report(order, "CANCELED", now_ms, cancel_id=cancel_id))
        self._position(symbol, now_ms)
        fields = order.result_fields()
        for name in ("origQuoteOrderQty", "workingTime"):
            del fields[name]
        return {"symbol": symbol, "origClientOrderId": order.client_id,
                "orderId": order.order_id, "orderListId": -1, "clientOrderId": cancel_id,
                "transactTime": now_ms, **fields}

    def open_orders(self, symbol: str | None) -> list[dict[str, Any]]:
        return [o.view() for o in self.orders
                if o.is_open and (symbol is None or o.symbol == symbol)]

    def all_orders(self, symbol: str, params: dict[str, str]) -> list[dict[str, Any]]:
        return history.all_orders([o for o in self.orders if o.symbol == symbol], params,
                                  self.max_page)

    def my_trades(self, symbol: str, params: dict[str, str]) -> list[dict[str, Any]]:
        return history.my_trades([t for t in self.trades if t["symbol"] == symbol], params,
                                 self.max_page)

    def view(self, now_ms: int) -> dict[str, Any]:
        """GET /api/v3/account."""
        rate = f8(FEE_RATE)
        return {
            "makerCommission": 10, "takerCommission": 10, "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {"maker": rate, "taker": rate, "buyer": f8(_ZERO),
                                "seller": f8(_ZERO)},
            "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False,
            "updateTime": self.update_time or now_ms, "accountType": "SPOT",
            "balances": [{"asset": a, "free": f8(v[0]), "locked": f8(v[1])}
                         for a, v in self.balances.items()],
            "permissions": ["SPOT"], "uid": 1}

