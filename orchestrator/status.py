"""One status row per symbol: process facts (supervisor, /proc) + trading facts (broker)."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from multibot.market.records import PositionView
from multibot.market.rules import price_decimal
from multibot.wire.protocol import ExchangeStatus, OrchestratorStatus, StatusReport, WorkerStatus
from multibot.wire.settings import FleetSettings
from orchestrator.events import JournalHealth
from orchestrator.ports import Trading
from orchestrator.procstat import CpuMeter, read_stat
from orchestrator.supervisor import State, Supervisor, WorkerHandle

if TYPE_CHECKING:
    from orchestrator.exchange.client import ExchangeClient
    from orchestrator.feeds.binance import BinanceFeed


@dataclass(frozen=True)
class StatusSources:
    """What a status report reads of the fleet, and nothing else."""

    home: str  # the fleet's home directory
    settings: FleetSettings
    started_ns: int  # wall clock
    started_mono: float  # monotonic clock, for the uptime
    supervisor: Supervisor
    trading: Trading
    journal: JournalHealth
    exchange: ExchangeClient | None  # with a binance feed or broker
    binance_feed: BinanceFeed | None  # the same feed as ``trading.feed``, for its stream stats


class StatusBuilder:
    def __init__(self, sources: StatusSources) -> None:
        self._sources = sources
        self._cpu = CpuMeter()

    def report(self) -> StatusReport:
        sources = self._sources
        settings, feed = sources.settings, sources.trading.feed
        orchestrator = OrchestratorStatus(
            pid=os.getpid(), home=sources.home, mode=settings.mode, feed=settings.feed,
            interval=settings.interval, speed=settings.speed,
            uptime_s=round(time.monotonic() - sources.started_mono, 3),
            started_ns=sources.started_ns, feed_time=feed.cursor,
            feed_ended=feed.ended, journal_error=sources.journal.error,
            exchange=self._exchange(),
        )
        handles = sorted(sources.supervisor.handles.values(), key=lambda h: h.symbol)
        live_pids = {h.pid for h in handles if h.pid is not None}
        self._cpu.keep_only(live_pids)
        return StatusReport(orchestrator=orchestrator,
                            workers=[self._worker(h) for h in handles])

    def _exchange(self) -> ExchangeStatus | None:
        sources = self._sources
        client = sources.exchange
        if client is None:
            return None
        limits = client.limiter.snapshot()
        stats = sources.binance_feed.stats if sources.binance_feed is not None else None
        return ExchangeStatus(
            endpoint=client.endpoints.host, network=client.endpoints.network,
            trading=sources.trading.broker.on_exchange, used_weight_1m=limits.used_weight,
            weight_limit=limits.weight_limit, rate_limited_s=limits.blocked_s,
            throttled=limits.throttled,
            stream_connections=stats.connections if stats else 0,
            streams=stats.streams if stats else 0,
            stream_reconnects=stats.reconnects if stats else 0,
            gap_filled_bars=stats.gap_filled_bars if stats else 0,
            last_error=client.last_error,
            user_stream=client.user_stream,
        )

    def _process_facts(self, pid: int | None) -> tuple[float | None, int | None]:
        """CPU % of one core since the last report (0.0 the first time), and RSS."""
        if pid is None:
            return None, None
        try:
            stat = read_stat(pid)
        except OSError:  # no /proc (not Linux)
            return _psutil_facts(pid)
        if stat is None:
            return None, None
        return self._cpu.percent(pid, stat), stat.rss_bytes

    def _worker(self, handle: WorkerHandle) -> WorkerStatus:
        broker = self._sources.trading.broker
        journal_error = self._sources.journal.error
        symbol = handle.symbol
        now = time.monotonic()
        position = broker.position(symbol)
        price, unrealized = _price_and_unrealized(handle, broker.last_price(symbol),
                                                  broker.unrealized_pnl(symbol), position)
        cpu, rss = self._process_facts(handle.pid)
        heartbeat_age = None
        if handle.last_heartbeat is not None and handle.process is not None:
            heartbeat_age = round(now - handle.last_heartbeat, 3)
        uptime = None
        if handle.state == State.RUNNING and handle.running_since is not None:
            uptime = round(now - handle.running_since, 3)
        stats = handle.stats
        return WorkerStatus(
            symbol=symbol, pid=handle.pid, state=handle.state.value, uptime_s=uptime,
            restarts=handle.restarts, heartbeat_age_s=heartbeat_age,
            last_bar_time=stats.last_bar_time,
            last_price=price,
            bars=stats.bars, foreign_bars=stats.foreign_bars,
            duplicate_bars=broker.decisions.duplicate_bars(symbol),
            position=float(position.qty),
            worker_position=float(stats.position) if handle.registered else None,
            avg_entry=float(position.avg_entry),
            realized_pnl=round(float(position.realized_pnl), 8),
            unrealized_pnl=unrealized,
            open_orders=len(broker.open_orders(symbol)), trades=position.trades,
            last_error=handle.last_error or stats.last_error,
            last_error_age_s=_age(now, handle.last_error_at if handle.last_error
                                  else handle.worker_error_at),
            halted=(f"journal unavailable: {journal_error}" if journal_error
                    else broker.halted(symbol)),
            cpu_percent=cpu, rss_bytes=rss,
            strategies=[spec.name for spec in handle.config.strategies],
            tick_size=rules.tick_size if (rules := self._sources.trading.rules.get(symbol)) else "",
        )


def _price_and_unrealized(handle: WorkerHandle, broker_price: Decimal | None,
                          broker_unrealized: Decimal, position: PositionView,
                          ) -> tuple[float | None, float]:
    """PRICE and UNREAL from one snapshot: the worker's last heartbeat (the bar BAR names),
    so that UNREAL = (PRICE - AVG ENTRY) * POSITION holds on every row; the broker's last
    price only while no heartbeat has named a bar yet."""
    close = handle.stats.last_close
    if close is None:
        price = float(broker_price) if broker_price is not None else None
        return price, round(float(broker_unrealized), 8)
    qty, avg_entry = Decimal(position.qty), Decimal(position.avg_entry)
    unrealized = (price_decimal(close) - avg_entry) * qty if qty else Decimal(0)
    return close, round(float(unrealized), 8)


def _age(now: float, since: float | None) -> float | None:
    return round(now - since, 3) if since is not None else None


def _psutil_facts(pid: int) -> tuple[float | None, int | None]:
    """Where there is no /proc: RSS from psutil, CPU % unknown."""
    import psutil

    with contextlib.suppress(psutil.Error):
        return None, int(psutil.Process(pid).memory_info().rss)
    return None, None
