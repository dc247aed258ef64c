"""The exchange adapter's boundary: Binance's order, trade and account documents become typed
reports with the journal's decimals; anything that is not such a document raises."""

from __future__ import annotations

from decimal import Decimal

import pytest

from multibot.market.orders import OrderStatus, Side
from orchestrator.exchange.orders import describe, journal_status
from orchestrator.exchange.reports import account_report, order_report, trade_report

FULL = {"symbol": "BTCUSDT", "orderId": 7, "orderListId": -1, "clientOrderId": "mb-BTCUSDT-1",
        "transactTime": 1700000000000, "price": "0.00000000", "origQty": "0.00200000",
        "executedQty": "0.00200000", "cummulativeQuoteQty": "100.01000000",
        "status": "FILLED", "timeInForce": "GTC", "type": "MARKET", "side": "BUY",
        "fills": [{"price": "50005.00000000", "qty": "0.00200000", "commission": "0.00000200",
                   "commissionAsset": "BTC", "tradeId": 41}]}


def test_an_order_response_with_its_fills() -> None:
    report = order_report(FULL)
    assert (report.client_order_id, report.order_id, report.side, report.status) == (
        "mb-BTCUSDT-1", 7, Side.BUY, OrderStatus.FILLED)
    assert (report.orig_qty, report.executed_qty, report.price, report.time_ms) == (
        "0.002", "0.002", "0", 1700000000000)
    (fill,) = report.fills
    assert (fill.trade_id, fill.symbol, fill.side, fill.price, fill.qty) == (
        41, "BTCUSDT", Side.BUY, "50005", "0.002")
    assert (fill.commission, fill.commission_asset, fill.time_ms) == ("0.000002", "BTC", None)
    assert describe(report) == "mb-BTCUSDT-1 (orderId 7: BUY MARKET 0.002)"


def test_a_cancel_answer_names_the_order_by_its_own_client_id() -> None:
    cancel = {**FULL, "clientOrderId": "cancel-id-9", "origClientOrderId": "mb-BTCUSDT-1",
              "status": "CANCELED", "fills": None}
    report = order_report(cancel)
    assert report.client_order_id == "mb-BTCUSDT-1" and report.fills == ()


def test_statuses_in_the_journal_s_terms() -> None:
    assert journal_status(order_report({**FULL, "status": "EXPIRED_IN_MATCH"})) == "EXPIRED"
    assert order_report({**FULL, "status": "PENDING_CANCEL"}).status is None  # not ours to know
    unsaid = {k: v for k, v in FULL.items() if k not in ("status", "executedQty")}
    assert (order_report(unsaid).status, order_report(unsaid).executed_qty) == (None, None)


def test_trades_and_the_account() -> None:
    trade = trade_report({"symbol": "BTCUSDT", "id": 41, "orderId": 7, "price": "50005.0",
                          "qty": "0.002", "commission": "0.1", "commissionAsset": "USDT",
                          "time": 1700000000001, "isBuyer": False, "isMaker": True})
    assert (trade.side, trade.time_ms, trade.is_maker) == (Side.SELL, 1700000000001, True)
    account = account_report({"canTrade": True, "balances": [
        {"asset": "BTC", "free": "0.00100000", "locked": "0.00050000"}]})
    assert account.can_trade and account.holds("BTC") == Decimal("0.0015")
    assert account.holds("ETH") == 0


@pytest.mark.parametrize("document", [
    {**FULL, "side": "SIDEWAYS"},
    {**FULL, "origQty": "lots"},
    {**FULL, "fills": [{"price": "1", "qty": "1"}]},  # a fill without its trade id
])
def test_what_is_not_a_binance_document_raises(document: dict[str, object]) -> None:
    with pytest.raises((ValueError, KeyError)):
        order_report(document)


def test_an_answer_we_cannot_read_leaves_the_outcome_unknown(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A created order whose answer lacks its side is looked up like a lost reply (never taken
    as rejected, never resent)."""
    import asyncio
    from typing import Any, cast

    from multibot.market.orders import OrderType
    from orchestrator.exchange.client import ExchangeClient, OutcomeUnknown
    from orchestrator.exchange.reports import OrderRequest

    client = cast(Any, ExchangeClient).__new__(ExchangeClient)

    async def answer(method: str, **params: Any) -> dict[str, Any]:
        return {"symbol": "BTCUSDT", "clientOrderId": "mb-BTCUSDT-1", "status": "FILLED"}

    monkeypatch.setattr(client, "call", answer)
    request = OrderRequest(client_order_id="mb-BTCUSDT-1", symbol="BTCUSDT", side=Side.BUY,
                           type=OrderType.MARKET, quantity="0.001")
    with pytest.raises(OutcomeUnknown, match="cannot read"):
        asyncio.run(client.create_order(request))
    with pytest.raises(OutcomeUnknown, match="cannot read"):
        asyncio.run(client.get_order("BTCUSDT", "mb-BTCUSDT-1"))
