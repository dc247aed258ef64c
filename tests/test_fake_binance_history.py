"""allOrders and myTrades paged as Binance pages them, read by the REAL python-binance
AsyncClient: limit at most 1000, fromId / orderId / time windows, the accepted parameter
combinations and the weights."""

from __future__ import annotations

from tests.fake_binance_support import api_error, client_for, fake, run
from tests.fakes.binance import FakeBinance

__all__ = ["fake"]  # the fixture


def trade_many(fake: FakeBinance, count: int) -> None:
    for i in range(count):
        fake.place_external_order("BTCUSDT", "BUY" if i % 2 == 0 else "SELL", "MARKET",
                                  "0.0002", client_order_id=f"web-{i}")


def test_my_trades_pages_past_1000_with_from_id(fake: FakeBinance) -> None:
    trade_many(fake, 1105)
    every = [t["id"] for t in fake.trades("BTCUSDT")]

    async def scenario() -> None:
        async with client_for(fake) as client:
            latest = await client.get_my_trades(symbol="BTCUSDT")
            assert [t["id"] for t in latest] == every[-500:]  # default: the most recent 500
            got: list[int] = []
            from_id = 0
            while True:
                page = await client.get_my_trades(symbol="BTCUSDT", fromId=from_id, limit=1000)
                got += [t["id"] for t in page]
                if len(page) < 1000:
                    break
                from_id = page[-1]["id"] + 1
            assert got == every and len(got) == 1105
            error = await api_error(client.get_my_trades(symbol="BTCUSDT", limit=1001))
            assert (error.code, error.message) == (
                -1130, "Data sent for parameter 'limit' is not valid.")

            order_id = fake.orders("BTCUSDT")[3]["orderId"]
            before = int(client.response.headers["X-MBX-USED-WEIGHT-1M"])
            one = await client.get_my_trades(symbol="BTCUSDT", orderId=order_id)
            assert [t["orderId"] for t in one] == [order_id]
            assert int(client.response.headers["X-MBX-USED-WEIGHT-1M"]) - before == 5
            assert await client.get_my_trades(symbol="BTCUSDT", orderId=order_id,
                                              fromId=one[0]["id"] + 1) == []
            combo = await api_error(client.get_my_trades(symbol="BTCUSDT", fromId=1,
                                                         startTime=0))
            assert (combo.code, combo.message) == (
                -1128, "Combination of optional parameters invalid.")
            window = await api_error(client.get_my_trades(
                symbol="BTCUSDT", startTime=0, endTime=86_400_001))
            assert window.code == -1127
    run(scenario())


def test_all_orders_pages_by_order_id_and_time(fake: FakeBinance) -> None:
    trade_many(fake, 30)
    orders = fake.orders("BTCUSDT")

    async def scenario() -> None:
        async with client_for(fake) as client:
            recent = await client.get_all_orders(symbol="BTCUSDT", limit=10)
            assert [o["orderId"] for o in recent] == [o["orderId"] for o in orders[-10:]]
            page = await client.get_all_orders(symbol="BTCUSDT", orderId=5, limit=10)
            assert [o["orderId"] for o in page] == list(range(5, 15))
            since = orders[20]["time"]
            timed = await client.get_all_orders(symbol="BTCUSDT", startTime=since, limit=1000)
            assert timed[0]["time"] >= since and timed[-1]["orderId"] == orders[-1]["orderId"]
            assert [o["orderId"] for o in timed] == sorted(o["orderId"] for o in timed)
            error = await api_error(client.get_all_orders(symbol="BTCUSDT", limit=1001))
            assert error.code == -1130
    run(scenario())


def test_a_smaller_page_for_tests(fake: FakeBinance) -> None:
    trade_many(fake, 5)
    fake.set_max_page(2)

    async def scenario() -> None:
        async with client_for(fake) as client:
            assert len(await client.get_my_trades(symbol="BTCUSDT")) == 2  # the default too
            first = await client.get_my_trades(symbol="BTCUSDT", fromId=0, limit=2)
            rest = await client.get_my_trades(symbol="BTCUSDT", fromId=first[-1]["id"] + 1,
                                              limit=2)
            assert [t["id"] for t in first + rest] == [t["id"] for t in fake.trades()][:4]
            assert (await api_error(client.get_all_orders(symbol="BTCUSDT", limit=3))
                    ).code == -1130
    run(scenario())
