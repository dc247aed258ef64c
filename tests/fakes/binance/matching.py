"""The fake's account: balances, orders, matching against the fake's own price path, fees.

MARKET orders (and LIMIT orders marketable on arrival) fill at once at the current price;
other LIMIT orders rest with their funds locked and fill at their limit price on the first tick
that crosses it (in two halves on two crossing ticks with ``partial_fills``). The fee is 0.1%:
a BUY pays it in the base asset, a SELL in the quote asset, rounded down to 8 decimals.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

from tests.fakes.binance.errors import INSUFFICIENT, bad_request, f8, floor8, illegal
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

FEE_RATE = Decimal("0.001")
_ZERO = Decimal(0)
_ID = "^[0-9]{1,20}$"


@dataclass
class Order:
    symbol: str
    order_id: int
    client_id: str
    side: str
    type: str
    price: Decimal
    orig_qty: Decimal
    orig_quote_qty: Decimal
    time: int
    stp: str
    time_in_force: str = "GTC"  # Binance reports GTC for MARKET orders too
    executed: Decimal = _ZERO
    cum_quote: Decimal = _ZERO
    status: str = "NEW"
    update_time: int = 0
    fill_ticks: int = 0  # crossing ticks that filled part of it (partial_fills)
    fills: list[dict[str, Any]] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed

    def result_fields(self) -> dict[str, Any]:
        return {"price": f8(self.price), "origQty": f8(self.orig_qty),
                "executedQty": f8(self.executed), "origQuoteOrderQty": f8(self.orig_quote_qty),
                "cummulativeQuoteQty": f8(self.cum_quote), "status": self.status,
                "timeInForce": self.time_in_force, "type": self.type,
                "side": self.side, "workingTime": self.time, "selfTradePreventionMode": self.stp}

    def view(self) -> dict[str, Any]:
        """GET /api/v3/order."""
        fields = self.result_fields()
        return {"symbol": self.symbol, "orderId": self.order_id, "orderListId": -1,
                "clientOrderId": self.client_id, "price": fields["price"],
                "origQty": fields["origQty"], "executedQty": fields["executedQty"],
                "cummulativeQuoteQty": fields["cummulativeQuoteQty"], "status": self.status,
                "timeInForce": self.time_in_force, "type": self.type, "side": self.side,
                "stopPrice": f8(_ZERO), "icebergQty": f8(_ZERO), "time": self.time,
                "updateTime": self.update_time, "isWorking": True, "workingTime": self.time,
                "origQuoteOrderQty": fields["origQuoteOrderQty"],
                "selfTradePreventionMode": self.stp}


def order_id_param(params: dict[str, str], name: str) -> int | None:
    text = params.get(name)
    if text is None or text == "":
        return None
    if not text.isdigit() or len(text) > 20:
        raise illegal(name, _ID)
    return int(text)


def limit_param(params: dict[str, str], default: int = 500, most: int = 1000) -> int:
    value = order_id_param(params, "limit")
    return default if value is None else max(1, min(value, most))


class Account:
    """One Binance account. Not thread-safe: the fake's lock is held around every call."""

    def __init__(self, rules: dict[str, SymbolRules], market: Market,
                 balances: dict[str, str], partial_fills: bool, seed: int) -> None:
        self.rules = rules
        self.market = market
        self.partial_fills = partial_fills
        self.balances: dict[str, list[Decimal]] = {
            asset.upper(): [Decimal(str(amount)), _ZERO] for asset, amount in balances.items()}
        for r in rules.values():
            self.balances.setdefault(r.base, [_ZERO, _ZERO])
            self.balances.setdefault(r.quote, [_ZERO, _ZERO])
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
        rules = self.rules[symbol]
        current = self.market[symbol].price
        qty = market_quantity(new, rules, current) if new.type == "MARKET" else new.quantity
        assert qty is not None
        check_filters(new, rules, qty, new.price if new.type == "LIMIT" else current)
        if new.client_id is not None and any(
                o.is_open and o.symbol == symbol and o.client_id == new.client_id
                for o in self.orders):
            raise bad_request(-2010, "Duplicate order sent.")
        self._check_funds(new, rules, qty, current)
        order = Order(symbol=symbol, order_id=self._next_order_id[symbol],
                      client_id=new.client_id or self._client_id(), side=new.side,
                      type=new.type, price=new.price, orig_qty=qty,
                      orig_quote_qty=new.quote_qty, time=now_ms, stp=rules.stp_mode,
                      time_in_force=new.time_in_force or "GTC", update_time=now_ms)
        self._next_order_id[symbol] += 1
        self.orders.append(order)
        self.outbox.append(execution_report(order, "NEW", now_ms))
        crosses = new.type == "MARKET" or (
            current <= new.price if new.side == "BUY" else current >= new.price)
        if crosses:
            self._fill(order, qty, current, maker=False, now_ms=now_ms)
        elif order.time_in_force in ("IOC", "FOK"):
            order.status = "EXPIRED"  # nothing to match at once: it never rests
            self.outbox.append(execution_report(order, "EXPIRED", now_ms))
        else:
            self._lock(order)
        self._position(symbol, now_ms)
        return self._response(order, new, now_ms)

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
                     current: Decimal) -> None:
        if new.side == "BUY":
            need = qty * (new.price if new.type == "LIMIT" else current)
            have = self.balances[rules.quote][0]
        else:
            need, have = qty, self.balances[rules.base][0]
        if have < need:
            raise bad_request(-2010, INSUFFICIENT)

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
            if not order.is_open:
                continue
            price = self.market[order.symbol].price
            crossed = price <= order.price if order.side == "BUY" else price >= order.price
            if not crossed:
                continue
            qty = order.remaining
            if self.partial_fills and order.fill_ticks == 0:
                step = self.rules[order.symbol].step
                half = (order.orig_qty / 2 / step).to_integral_value(ROUND_DOWN) * step
                if _ZERO < half < qty:
                    qty = half
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
        limit, from_id = limit_param(params), order_id_param(params, "orderId")
        mine = [o for o in self.orders if o.symbol == symbol]
        if from_id is not None:
            return [o.view() for o in mine if o.order_id >= from_id][:limit]
        return [o.view() for o in mine][-limit:]

    def my_trades(self, symbol: str, params: dict[str, str]) -> list[dict[str, Any]]:
        limit = limit_param(params)
        from_id, order_id = order_id_param(params, "fromId"), order_id_param(params, "orderId")
        mine = [t for t in self.trades if t["symbol"] == symbol
                and (order_id is None or t["orderId"] == order_id)]
        if from_id is not None:
            return [dict(t) for t in mine if t["id"] >= from_id][:limit]
        return [dict(t) for t in mine][-limit:]

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

