"""Connecting a fleet to Binance: the client, the exchange's rules, the live feed and (for
testnet and live) the exchange broker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from multibot.errors import ErrorCode, MultibotError
from multibot.market.rules import load_rules
from multibot.wire.protocol import OrderUpdate, SymbolRules
from multibot.wire.settings import FleetSettings, Mode
from orchestrator.broker.journal import Journal
from orchestrator.exchange.broker import ExchangeBroker
from orchestrator.exchange.client import ExchangeClient, ExchangeError
from orchestrator.exchange.credentials import load_credentials
from orchestrator.exchange.endpoints import resolve_endpoints
from orchestrator.feeds.binance import BinanceFeed

log = logging.getLogger(__name__)
_CONNECT_TIMEOUT_S = 20.0


class VenueError(MultibotError):
    """The exchange could not be reached or configured; the fleet does not start."""

    CODE = ErrorCode.NOT_AVAILABLE


@dataclass
class Venue:
    client: ExchangeClient
    rules: dict[str, SymbolRules]
    feed: BinanceFeed
    broker: ExchangeBroker | None  # None in paper mode: live prices, simulated fills


def trading_rules(exchange_info: dict[str, object]) -> dict[str, SymbolRules]:
    """Rules of the symbols that trade now (status TRADING, spot allowed)."""
    symbols = exchange_info.get("symbols")
    if not isinstance(symbols, list):
        raise VenueError("exchangeInfo without symbols")
    trading = [s for s in symbols if isinstance(s, dict) and s.get("status") == "TRADING"
               and s.get("isSpotTradingAllowed", True)]
    return load_rules({"symbols": trading})


async def open_venue(settings: FleetSettings, journal: Journal,
                     on_update: Callable[[OrderUpdate], None]) -> Venue:
    endpoints = resolve_endpoints(settings.network, settings.rest_url, settings.stream_url)
    credentials = (load_credentials(settings.network, settings.key_file)
                   if settings.mode != Mode.PAPER else None)
    try:
        client = await asyncio.wait_for(ExchangeClient.connect(endpoints, credentials),
                                        _CONNECT_TIMEOUT_S)
    except ExchangeError as exc:
        raise VenueError(f"cannot connect to {endpoints.host}: {exc.message}") from None
    except TimeoutError:
        raise VenueError(f"{endpoints.host} did not answer within {_CONNECT_TIMEOUT_S:g}s"
                         ) from None
    try:
        rules = trading_rules(client.exchange_info_at_connect)
        if credentials is not None:
            account = await client.account()  # proves the keys work before anything trades
            if not account.can_trade:
                raise VenueError(f"the {settings.network} account of these keys cannot trade")
    except ExchangeError as exc:
        await client.close()
        raise VenueError(f"{endpoints.host}: {exc.message}") from None
    except BaseException:
        await client.close()
        raise
    feed = BinanceFeed(interval=settings.interval, rules=rules, rest=client,
                       socket_manager=client.socket_manager)
    broker = (ExchangeBroker(journal, client, rules, on_update)
              if settings.mode != Mode.PAPER else None)
    log.info("connected to %s (%s%s): %d trading symbols", endpoints.host, settings.network,
             f", keys from {credentials.source}" if credentials else ", market data only",
             len(rules))
    return Venue(client=client, rules=rules, feed=feed, broker=broker)
