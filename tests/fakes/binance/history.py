"""GET /api/v3/allOrders and /api/v3/myTrades, paged exactly as Binance pages them.

- ``limit``: default 500, at most 1000; outside 1..1000 the request fails (-1130), so a client
  that asks for more than a page learns it at once instead of silently getting 1000.
  ``FakeBinance.set_max_page(n)`` lowers the 1000 (and the default) so a paging test needs
  only a few trades.
- allOrders (weight 20): ``orderId`` → orders with an id >= it, oldest first, ``limit`` of
  them; ``startTime`` → orders created at or after it, oldest first; ``endTime`` bounds the
  creation time; otherwise the most recent ``limit``. Always in ascending id order.
- myTrades (weight 20; 5 with ``orderId``): ``fromId`` → trades with an id >= it, oldest
  first; ``startTime`` → from that time, oldest first; otherwise the most recent ``limit``.
  Only Binance's combinations are accepted (symbol alone, +orderId, +startTime, +endTime,
  +fromId, +startTime+endTime, +orderId+fromId); any other is -1128.
- startTime..endTime longer than 24 hours: -1127; startTime after endTime: -1023.
Trade ids are the symbol's market trade ids, so one account's ids have gaps, as on Binance."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tests.fakes.binance.book import Order, order_id_param
from tests.fakes.binance.errors import bad_request

DAY_MS = 86_400_000
DEFAULT_LIMIT, MAX_LIMIT = 500, 1000
_TRADE_COMBOS = {frozenset(), frozenset({"orderId"}), frozenset({"startTime"}),
                 frozenset({"endTime"}), frozenset({"fromId"}),
                 frozenset({"startTime", "endTime"}), frozenset({"orderId", "fromId"})}
T = TypeVar("T")


def page_limit(params: dict[str, str], most: int = MAX_LIMIT) -> int:
    value = order_id_param(params, "limit")
    if value is None:
        return min(DEFAULT_LIMIT, most)
    if not 1 <= value <= most:
        raise bad_request(-1130, "Data sent for parameter 'limit' is not valid.")
    return value


def _window(params: dict[str, str]) -> tuple[int | None, int | None]:
    start, end = order_id_param(params, "startTime"), order_id_param(params, "endTime")
    if start is not None and end is not None:
        if start > end:
            raise bad_request(-1023, "Start time is greater than end time.")
        if end - start > DAY_MS:
            raise bad_request(-1127, "More than 24 hours between startTime and endTime.")
    return start, end


def _page(items: Sequence[T], key: Callable[[T], int], time_of: Callable[[T], int],
          from_key: int | None, start: int | None, end: int | None, limit: int) -> list[T]:
    chosen = [i for i in items
              if (from_key is None or key(i) >= from_key)
              and (start is None or time_of(i) >= start) and (end is None or time_of(i) <= end)]
    chosen.sort(key=key)
    return chosen[:limit] if from_key is not None or start is not None else chosen[-limit:]


def all_orders(orders: Sequence[Order], params: dict[str, str],
               most: int = MAX_LIMIT) -> list[dict[str, Any]]:
    limit = page_limit(params, most)
    start, end = _window(params)
    page = _page(orders, lambda o: o.order_id, lambda o: o.time,
                 order_id_param(params, "orderId"), start, end, limit)
    return [o.view() for o in page]


def trades_weight(params: dict[str, str]) -> int:
    return 5 if params.get("orderId") else 20


def my_trades(trades: Sequence[dict[str, Any]], params: dict[str, str],
              most: int = MAX_LIMIT) -> list[dict[str, Any]]:
    given = frozenset(n for n in ("orderId", "startTime", "endTime", "fromId") if params.get(n))
    if given not in _TRADE_COMBOS:
        raise bad_request(-1128, "Combination of optional parameters invalid.")
    limit = page_limit(params, most)
    start, end = _window(params)
    order_id = order_id_param(params, "orderId")
    mine = [t for t in trades if order_id is None or t["orderId"] == order_id]
    page = _page(mine, lambda t: int(t["id"]), lambda t: int(t["time"]),
                 order_id_param(params, "fromId"), start, end, limit)
    return [dict(t) for t in page]
