"""Shared by the exchange tests: a broker on a real journal, connected to the local
Binance-protocol server through the REAL python-binance AsyncClient."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import pytest

from multibot.market.bar import Bar
from multibot.market.orders import OrderType, Side
from multibot.market.records import SymbolRules
from multibot.wire.protocol import OrderUpdate, PlaceOrder
from orchestrator.broker.journal import Journal
from orchestrator.exchange.broker import ExchangeBroker
from orchestrator.exchange.client import ExchangeClient
from orchestrator.exchange.credentials import load_credentials
from orchestrator.exchange.endpoints import resolve_endpoints
from orchestrator.exchange.venue import trading_rules
from tests.fakes.binance import FakeBinance

KEY, SECRET = "broker-test-key", "broker-test-secret-77x"
ENV = {"MULTIBOT_BINANCE_TESTNET_API_KEY": KEY, "MULTIBOT_BINANCE_TESTNET_API_SECRET": SECRET}
ORDER_PATH = "/api/v3/order"
T = TypeVar("T")


@pytest.fixture
def fake_server() -> Iterator[FakeBinance]:
    with FakeBinance(api_key=KEY, api_secret=SECRET, symbols=["BTCUSDT", "ETHUSDT"],
                     balances={"USDT": "10000"}, tick_s=0.05,
                     start_prices={"BTCUSDT": 50000.0, "ETHUSDT": 2500.0}) as server:
        yield server


def run(coro: Awaitable[T], timeout: float = 60.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def connect(fake: FakeBinance) -> ExchangeClient:
    endpoints = resolve_endpoints("testnet", fake.rest_url, fake.stream_url, environ={})
    return await ExchangeClient.connect(endpoints, load_credentials("testnet", environ=ENV))


class Desk:
    """A broker on a real journal file, connected to the fake; updates pushed are kept."""

    def __init__(self, fake: FakeBinance, journal_path: Path, client: ExchangeClient,
                 rules: Mapping[str, SymbolRules]) -> None:
        self.fake, self.client = fake, client
        self.journal = Journal(journal_path)
        self.pushed: list[OrderUpdate] = []
        # with the rules from the start, as the venue does: positions rebuilt from journaled
        # fills know their assets (a buy's fee in base)
        self.broker = ExchangeBroker(self.journal, client, rules, self.pushed.append)

    @classmethod
    async def open(cls, fake: FakeBinance, path: Path) -> Desk:
        client = await connect(fake)
        try:
            rules = trading_rules(await client.exchange_info())
        except BaseException:
            await client.close()  # the callers' try begins only once we return
            raise
        desk = cls(fake, path, client, rules)
        for symbol in rules:
            desk.price_bar(symbol)  # a last price, as the feed's first bar gives
        return desk

    def order_status(self, client_order_id: str) -> str:
        """The status journaled for an order that must be in the journal."""
        order = self.journal.get_order(client_order_id)
        assert order is not None, f"{client_order_id} is not in the journal"
        return order.status

    def price_bar(self, symbol: str) -> None:
        price = float(self.fake.price(symbol))
        self.broker.on_bar(Bar(symbol=symbol, open_time=0, close_time=999, open=price,
                               high=price, low=price, close=price, volume=1.0))

    async def close(self) -> None:
        self.journal.close()
        await self.client.close()


def market(seq: int, side: str, qty: str, symbol: str = "BTCUSDT") -> PlaceOrder:
    return PlaceOrder(client_order_id=f"mb-{symbol}-{seq}", side=Side(side), type=OrderType.MARKET,
                      quantity=qty, bar_time=seq)  # a decision per seq: on a bar of its own


def limit(seq: int, side: str, qty: str, price: str, symbol: str = "BTCUSDT") -> PlaceOrder:
    return PlaceOrder(client_order_id=f"mb-{symbol}-{seq}", side=Side(side), type=OrderType.LIMIT,
                      quantity=qty, price=price, bar_time=seq)


def posts(fake: FakeBinance, coid: str) -> int:
    return sum(1 for r in fake.requests()
               if r.method == "POST" and r.path == ORDER_PATH
               and r.params.get("newClientOrderId") == coid)


def assert_journal_matches_exchange(desk: Desk, symbol: str, base: str) -> None:
    journaled = {f.exchange_trade_id: (f.qty, f.price, f.fee, f.fee_asset)
                 for f in desk.journal.fills(symbol)}
    exchange = {int(t["id"]): (str(Decimal(t["qty"]).normalize()),
                               str(Decimal(t["price"]).normalize()),
                               str(Decimal(t["commission"]).normalize()), t["commissionAsset"])
                for t in desk.fake.trades(symbol)}
    norm = {k: tuple(str(Decimal(x).normalize()) if i < 3 else x for i, x in enumerate(v))
            for k, v in journaled.items()}
    assert norm == exchange
    free, locked = desk.fake.balances().get(base, (Decimal(0), Decimal(0)))
    assert Decimal(desk.broker.position(symbol).qty) == free + locked


