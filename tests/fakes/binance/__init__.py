"""A local Binance spot server that the real python-binance client talks to (tests only).

``FakeBinance(...).start()`` serves the REST API, the market streams and the WebSocket API
(user data stream) on 127.0.0.1 from a background thread; see server.py for the inspection
API. Point python-binance at it with ``API_URL = fake.rest_url`` and ``WS_API_URL =
fake.ws_api_url`` (AsyncClient subclass attributes) and ``BinanceSocketManager.STREAM_URL =
fake.stream_url``.

Faults and stricter behaviours, and where each is described:

- ``fail(kind, times, method, path, **options)``: 429/418 bans, -1021, -2010, -1013, 5xx,
  ``5xx_after_accept``, ``late_booking`` (answered 5xx -1007, booked ``delay`` s later),
  ``never_booked`` (the same answer, never booked), ``slow`` (faults.py).
- ``set_liquidity(symbol, levels, level_ticks, fill_parts)``: thin books, partial fills and
  EXPIRED remainders, resting orders filled in several trades (liquidity.py);
  ``FakeBinance(partial_fills=True)``: every resting order in two trades.
- ``set_maintenance(symbol | None, on)``: status BREAK, -2010 "Market is closed." (server.py).
- ``set_filter(symbol, table)``, ``set_exchange_max_num_orders(n)``: the full filter set
  and its checks (symbols.py, orders.py, matching.py).
- ``server_shutdown(grace_s)``, ``set_connection_lifetime(s)``, ``drop_streams()``: how
  stream connections end (streams.py).
- ``drop_user_streams()``, ``delay_user_events(s)``: the user data stream (ws_api.py).
- ``set_price``, ``set_clock_offset``, ``place_external_order``, ``deposit``: the market,
  the clock and the account moved from outside (server.py).
- allOrders / myTrades paging rules: history.py; rate limits: limits.py.
"""

from tests.fakes.binance.errors import FakeBinanceError
from tests.fakes.binance.server import FakeBinance
from tests.fakes.binance.state import RequestRecord

__all__ = ["FakeBinance", "FakeBinanceError", "RequestRecord"]
