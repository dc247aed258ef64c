"""The rate-limited Binance REST client every part of the orchestrator shares.

A thin layer over python-binance's ``AsyncClient`` (pointed at the configured endpoints) that
makes every call wait for the account-wide ``RateLimiter``, honours Retry-After on 429/418,
resyncs the clock on -1021, retries idempotent reads, and turns failures into three kinds the
broker can act on: ``Rejected`` (the exchange refused; nothing happened), ``OutcomeUnknown``
(5xx, -1007 or a timeout after the request went out: look the order up, never resend blindly)
and ``Unavailable`` (the request never reached the exchange). Orders, trades and the account
come back as typed reports (orchestrator.exchange.reports).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from multibot.errors import ErrorCode, MultibotError
from orchestrator.exchange.credentials import Credentials
from orchestrator.exchange.endpoints import Endpoints
from orchestrator.exchange.ratelimit import RateLimiter, RateLimitWait
from orchestrator.exchange.reports import (
    AccountReport,
    FillReport,
    OrderRequest,
    OrderStatusReport,
    account_report,
    order_report,
    trade_report,
)

if TYPE_CHECKING:
    from binance import AsyncClient

log = logging.getLogger(__name__)

WEIGHTS = {"ping": 1, "get_server_time": 1, "get_exchange_info": 20, "get_klines": 2,
           "create_order": 1, "get_order": 4, "cancel_order": 1, "get_open_orders": 6,
           "get_my_trades": 20, "get_all_orders": 20, "get_account": 20}
PAGE = 1000  # myTrades and allOrders: the most Binance returns per request
_READ_RETRIES = (0.25, 1.0, 2.0)  # back-off between retries of an idempotent read
# Longer than this behind the limits (or a 429/418): give up on a read.
_MAX_READ_WAIT_S = 130.0
RECV_WINDOW_MS = 10_000  # every signed request's recvWindow: refused once older than this
UNKNOWN_CODES = {-1006, -1007}  # "unexpected response" / "timeout": execution status unknown


class ExchangeError(MultibotError):
    """An exchange request failed; ``binance_code`` is Binance's own (-2010, ...), 0 if none."""

    CODE = ErrorCode.NOT_AVAILABLE

    def __init__(self, message: str, binance_code: int = 0, status: int = 0) -> None:
        super().__init__(message)
        self.binance_code = binance_code
        self.status = status
        self.message = message


class Rejected(ExchangeError):
    """The exchange answered with an error: the request did nothing."""


class OutcomeUnknown(ExchangeError):
    """The request may or may not have been executed."""


class Unavailable(ExchangeError):
    """The request never reached the exchange (connection refused, DNS, ...)."""


def _retry_after(exc: Any) -> float:
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    try:
        return float(headers.get("Retry-After", 0)) or 1.0
    except (TypeError, ValueError):
        return 1.0


class ExchangeClient:
    """Create with ``await ExchangeClient.connect(...)``; close with ``await close()``."""

    # An order goes out (is signed) within this many seconds of being asked, or not at all
    # (Rejected: nothing was executed): worth less the later it goes, and the never-booked
    # evidence counts an order's recvWindow from its intent plus this (ledger).
    order_send_within_s = 15.0

    def __init__(self, sdk: AsyncClient, endpoints: Endpoints, limiter: RateLimiter,
                 credentials: Credentials | None) -> None:
        self.sdk = sdk
        self.endpoints = endpoints
        self.limiter = limiter
        self._credentials = credentials
        self.last_error = ""
        self.user_stream = ""  # for status: "subscribed", or why it is down (polling covers)
        self.exchange_info_at_connect: dict[str, Any] = {}

    @classmethod
    async def connect(cls, endpoints: Endpoints, credentials: Credentials | None = None,
                      limiter: RateLimiter | None = None,
                      request_timeout_s: float = 10.0) -> ExchangeClient:
        from binance import AsyncClient

        sdk_class = type("MultibotAsyncClient", (AsyncClient,), {
            "API_URL": endpoints.rest_url, "REQUEST_TIMEOUT": request_timeout_s,
            "WS_API_URL": endpoints.ws_api_url or AsyncClient.WS_API_URL,
            "REQUEST_RECVWINDOW": RECV_WINDOW_MS})
        # HMAC secret or Ed25519/RSA private key; create() would ping unlimited
        sdk = sdk_class(**(credentials.sdk_arguments() if credentials else {}))
        client = cls(sdk, endpoints, limiter or RateLimiter(), credentials)
        try:
            await client.sync_time()
            info = client.exchange_info_at_connect = await client.exchange_info()
            client.limiter.set_limits(info.get("rateLimits", []))
        except BaseException:
            await client.close()
            raise
        return client

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.sdk.close_connection(), 5)
        except Exception as exc:  # closing a dead session must not stop a shutdown
            log.debug("closing the exchange session: %s", exc)

    def socket_manager(self) -> Any:
        """A python-binance BinanceSocketManager on the configured stream endpoint."""
        from binance import BinanceSocketManager

        manager = BinanceSocketManager(self.sdk, max_queue_size=100_000)
        manager.STREAM_URL = self.endpoints.stream_url
        return manager

    def user_socket(self) -> Any:
        """python-binance's user data stream socket (``userDataStream.subscribe.signature``
        over the WebSocket API): an async context manager whose ``recv()`` gives each event.
        A dropped connection loses its subscription, which python-binance does not renew: it
        must end the socket (an ``{"e": "error"}`` event) so that the caller subscribes again,
        instead of reconnecting silently into a session without events."""
        from binance import BinanceSocketManager

        self.sdk.ws_api.MAX_RECONNECTS = 0
        return BinanceSocketManager(self.sdk).user_socket()

    # --- the one call path --------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return self.redact(text)

    def redact(self, text: str) -> str:
        """``text`` without the credentials (for logs and status)."""
        return self._credentials.redact(text) if self._credentials else text

    @property
    def server_offset_ms(self) -> int:
        """The exchange's clock minus ours."""
        return int(self.sdk.timestamp_offset)

    async def call(self, method: str, *, weight: int | None = None, orders: int = 0,
                   idempotent: bool = True, max_wait_s: float | None = None,
                   **params: Any) -> Any:
        from binance.exceptions import BinanceAPIException, BinanceRequestException

        cost = WEIGHTS.get(method, 1) if weight is None else weight
        if max_wait_s is None:
            max_wait_s = self.order_send_within_s if orders else _MAX_READ_WAIT_S
        deadline = time.monotonic() + max_wait_s
        retries = list(_READ_RETRIES) if idempotent else []
        resynced = False
        while True:
            try:
                await self.limiter.acquire(cost, orders, max(0.0, deadline - time.monotonic()))
            except RateLimitWait as exc:
                raise Rejected(f"rate limited: {exc}", -1003, 429) from None
            if orders and time.monotonic() > deadline:  # after a resync or a 429: too late
                raise Rejected(f"not sent: it could not go out within {max_wait_s:g}s")
            try:
                result = await getattr(self.sdk, method)(**params)
            except BinanceAPIException as exc:
                self._observe(exc.response)
                text = self._redact(f"binance {exc.code}: {exc.message}" if exc.code else
                                    f"HTTP {exc.status_code} without a Binance error body")
                if exc.status_code in (429, 418):
                    self.limiter.back_off(_retry_after(exc), banned=exc.status_code == 418)
                    continue  # rejected unexecuted: safe to send again after the wait
                if exc.code == -1021 and not resynced:
                    resynced = True
                    await self.sync_time()
                    continue  # refused for its timestamp: nothing happened, send again
                if exc.status_code >= 500 or exc.code in UNKNOWN_CODES:
                    if retries:
                        await asyncio.sleep(retries.pop(0))
                        continue
                    raise OutcomeUnknown(text, exc.code, exc.status_code) from None
                raise Rejected(text, exc.code, exc.status_code) from None
            except BinanceRequestException as exc:  # a 2xx whose body is not JSON
                if retries:
                    await asyncio.sleep(retries.pop(0))
                    continue
                raise OutcomeUnknown(self._redact(str(exc))) from None
            except Exception as exc:
                failure = self._transport_error(exc)
                if failure is None:
                    raise
                if retries:
                    await asyncio.sleep(retries.pop(0))
                    continue
                raise failure from None
            self._observe(getattr(self.sdk, "response", None))
            self.last_error = ""
            return result

    def _transport_error(self, exc: Exception) -> ExchangeError | None:
        import aiohttp

        text = self._redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        if isinstance(exc, aiohttp.ClientConnectorError):
            self.last_error = f"unreachable: {text}"
            return Unavailable(self.last_error)
        if isinstance(exc, asyncio.TimeoutError | aiohttp.ClientError | OSError):
            self.last_error = f"no answer: {text}"
            return OutcomeUnknown(self.last_error)
        return None

    def _observe(self, response: Any) -> None:
        headers = getattr(response, "headers", None)
        if headers:
            self.limiter.observe(headers)

    # --- endpoints ----------------------------------------------------------------------------

    async def sync_time(self) -> None:
        """Align signed timestamps with the server's clock (also after -1021)."""
        sent = time.time()
        server = await self.call("get_server_time")
        local_ms = int((sent + time.time()) / 2 * 1000)  # half the round trip
        self.sdk.timestamp_offset = int(server["serverTime"]) - local_ms
        self.limiter.offset_s = self.sdk.timestamp_offset / 1000  # windows on its clock

    async def exchange_info(self) -> dict[str, Any]:
        info: dict[str, Any] = await self.call("get_exchange_info")
        return info

    async def klines(self, symbol: str, interval: str, start_ms: int | None = None,
                     limit: int = 1000) -> list[list[Any]]:
        params: dict[str, Any] = {"symbol": symbol, "interval": interval, "limit": limit}
        if start_ms is not None:
            params["startTime"] = start_ms
        weight = 2 if limit <= 100 else 5 if limit <= 500 else 10
        rows: list[list[Any]] = await self.call("get_klines", weight=weight, **params)
        return rows

    async def create_order(self, request: OrderRequest) -> OrderStatusReport:
        """Send a new order (its FULL response: the fills come with it)."""
        params: dict[str, Any] = {
            "symbol": request.symbol, "side": request.side.value, "type": request.type.value,
            "quantity": request.quantity, "newClientOrderId": request.client_order_id,
            "newOrderRespType": "FULL",
        }
        if request.price is not None:
            params.update(price=request.price, timeInForce="GTC")
        return _read(order_report, await self.call("create_order", orders=1,
                                                   idempotent=False, **params))

    async def get_order(self, symbol: str, client_order_id: str | None = None,
                        max_wait_s: float | None = None,
                        order_id: int | None = None) -> OrderStatusReport | None:
        """The order by client order id (or by Binance's ``order_id``), or None when the
        exchange says it does not exist (-2013)."""
        key: dict[str, Any] = ({"origClientOrderId": client_order_id} if order_id is None
                               else {"orderId": order_id})
        try:
            order = await self.call("get_order", max_wait_s=max_wait_s, symbol=symbol, **key)
        except Rejected as exc:
            if exc.binance_code == -2013:
                return None
            raise
        return _read(order_report, order)

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderStatusReport:
        return _read(order_report, await self.call("cancel_order", idempotent=False,
                                                   symbol=symbol,
                                                   origClientOrderId=client_order_id))

    async def open_orders(self, symbol: str) -> list[OrderStatusReport]:
        return [_read(order_report, order)
                for order in await self.call("get_open_orders", symbol=symbol)]

    async def my_trades(self, symbol: str, order_id: int | None = None,
                        from_id: int = 0) -> list[FillReport]:
        """Every trade of ``symbol`` (of one order, with ``order_id``) whose id is at least
        ``from_id``, oldest first: paged with fromId, however many there are."""
        trades: list[FillReport] = []
        only: dict[str, Any] = {} if order_id is None else {"orderId": order_id}
        while True:
            page = [_read(trade_report, trade) for trade in await self.call(
                "get_my_trades", weight=5 if only else 20, symbol=symbol, fromId=from_id,
                limit=PAGE, **only)]
            trades.extend(page)
            if len(page) < PAGE:
                return trades
            from_id = _next_page(from_id, page[-1].trade_id, "myTrades")

    async def all_orders(self, symbol: str, start_ms: int) -> list[OrderStatusReport]:
        """Every order of ``symbol`` placed since ``start_ms`` (the exchange's clock), oldest
        first: paged by orderId, however many there are."""
        orders: list[OrderStatusReport] = []
        window: dict[str, Any] = {"startTime": start_ms}
        while True:
            page = [_read(order_report, order) for order in await self.call(
                "get_all_orders", symbol=symbol, limit=PAGE, **window)]
            orders.extend(page)
            last = page[-1].order_id if page else None
            if len(page) < PAGE or last is None:
                return orders
            window = {"orderId": _next_page(window.get("orderId", 0), last, "allOrders")}

    async def account(self) -> AccountReport:
        return _read(account_report, await self.call("get_account"))


_Report = TypeVar("_Report")


def _next_page(current: int, last_id: int, what: str) -> int:
    """The id the next page starts from; an exchange whose pages do not move forward would
    have us page forever: its answer is unreadable."""
    if last_id + 1 <= current:
        raise OutcomeUnknown(f"{what} did not page forward from id {current}")
    return last_id + 1


def _read(parse: Callable[[Any], _Report], document: Any) -> _Report:
    """``parse(document)``; an answer we cannot read leaves what happened unknown: it is
    looked up like a lost reply (OutcomeUnknown), never taken as a rejection."""
    try:
        return parse(document)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise OutcomeUnknown(f"an answer from the exchange we cannot read: "
                             f"{type(exc).__name__}: {exc}") from None
