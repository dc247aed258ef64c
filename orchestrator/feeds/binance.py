"""Live closed klines from Binance: REST warm-up, combined kline streams, gap fill from REST.

Every closed bar of a served symbol is delivered once, in open time order: a streamed bar not
newer than the last one delivered is dropped, and a streamed bar that leaves a hole (the
subscription started late, or the connection dropped) first has the hole filled from REST.
After every reconnect each symbol on that connection is gap-filled at once, before its next
streamed bar. The socket side lives in ``binance_streams``.
"""

from __future__ import annotations

import asyncio
import collections
import difflib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from binance import BinanceSocketManager

from multibot.market.bar import Bar
from multibot.market.intervals import BINANCE_INTERVAL_MS
from multibot.wire.protocol import SymbolRules
from orchestrator.feeds.base import HISTORY_LIMIT, FeedError, StreamingFeed, UnknownSymbol
from orchestrator.feeds.binance_streams import Connection

log = logging.getLogger(__name__)

REST_LIMIT = 1000  # Binance's maximum klines per request
REST_TIMEOUT_S = 30.0
FILL_PAGES = 10  # a longer outage is filled by the next streamed bar's gap check
FILL_CONCURRENCY = 4


class KlineSource(Protocol):
    """Binance's 12-column kline rows (the product passes its rate-limited exchange client)."""

    async def klines(self, symbol: str, interval: str, start_ms: int | None = None,
                     limit: int = 1000) -> list[list[Any]]: ...


@dataclass(frozen=True, slots=True)
class FeedStats:
    connections: int
    streams: int
    reconnects: int  # python-binance's own reconnects plus ours
    gap_filled_bars: int
    duplicates_dropped: int
    deferred_bars: int  # held back until REST could fill the gap before them
    subscribe_messages: int  # SUBSCRIBE and UNSUBSCRIBE messages sent


def bar_from_row(symbol: str, row: list[Any]) -> Bar:
    return Bar(symbol=symbol, open_time=int(row[0]), close_time=int(row[6]),
               open=float(row[1]), high=float(row[2]), low=float(row[3]),
               close=float(row[4]), volume=float(row[5]))


def bar_from_kline(symbol: str, k: Mapping[str, Any]) -> Bar:
    return Bar(symbol=symbol, open_time=int(k["t"]), close_time=int(k["T"]),
               open=float(k["o"]), high=float(k["h"]), low=float(k["l"]),
               close=float(k["c"]), volume=float(k["v"]))


class _Served:
    """One served symbol: its connection, recent bars, and the last open time delivered."""

    def __init__(self, conn: Connection, bars: list[Bar]) -> None:
        self.conn = conn
        self.bars: collections.deque[Bar] = collections.deque(bars, maxlen=HISTORY_LIMIT)
        self.last: int | None = bars[-1].open_time if bars else None


class BinanceFeed(StreamingFeed):
    name = "binance"

    def __init__(self, *, interval: str, rules: Mapping[str, SymbolRules], rest: KlineSource,
                 socket_manager: Callable[[], BinanceSocketManager],
                 max_streams_per_connection: int = 1024, max_messages_per_s: float = 5.0,
                 reconnect_backoff_s: tuple[float, ...] = (0.5, 1, 2, 4, 8, 16, 30)) -> None:
        if interval not in BINANCE_INTERVAL_MS:
            raise ValueError(f"unsupported interval {interval!r}; "
                             f"supported: {', '.join(BINANCE_INTERVAL_MS)}")
        if max_streams_per_connection < 1 or max_messages_per_s <= 0:
            raise ValueError("max_streams_per_connection and max_messages_per_s must be > 0")
        self.interval = interval
        self._step = BINANCE_INTERVAL_MS[interval]
        self._rules = dict(rules)
        self._rest = rest
        self._socket_manager = socket_manager
        self._max_streams = max_streams_per_connection
        self._max_messages = max_messages_per_s
        self._backoff = tuple(reconnect_backoff_s) or (1.0,)
        self._served: dict[str, _Served] = {}
        self._conns: list[Connection] = []
        self._retired: set[Connection] = set()  # emptied connections whose task is closing
        self._epoch: collections.Counter[str] = collections.Counter()  # bumped by remove()
        self._locks: dict[str, asyncio.Lock] = {}
        self._on_bars: Callable[[list[Bar]], None] | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._cursor: int | None = None
        self._gap_filled = 0
        self._duplicates = 0
        self._deferred = 0  # streamed bars held back because their gap could not be filled
        self._old_reconnects = 0
        self._old_messages = 0

    # --- Feed API -----------------------------------------------------------------------------

    def validate(self, symbol: str) -> None:
        if symbol in self._rules:
            return
        wanted = symbol.upper()
        near = [wanted] if wanted in self._rules else []
        near += difflib.get_close_matches(symbol.upper(), list(self._rules), n=5, cutoff=0.6)
        near += sorted(s for s in self._rules if s.startswith(symbol.upper()[:3]))
        hint = list(dict.fromkeys(near))[:5]
        raise UnknownSymbol(f"unknown symbol {symbol}: not a trading symbol on the exchange"
                            + (f"; did you mean {', '.join(hint)}?" if hint else ""))

    async def add(self, symbol: str) -> SymbolRules:
        self.validate(symbol)
        async with self._locks.setdefault(symbol, asyncio.Lock()):
            if symbol not in self._served:
                epoch = self._epoch[symbol]
                bars = await self._warmup(symbol)
                if self._epoch[symbol] != epoch:
                    raise FeedError(f"{symbol} was removed while it was being added")
                self._served[symbol] = _Served(self._assign(self._stream(symbol)), bars)
        return self._rules[symbol]

    def remove(self, symbol: str) -> None:
        self._epoch[symbol] += 1
        served = self._served.pop(symbol, None)  # from now on its bars are dropped
        if served is None:
            return
        conn = served.conn
        conn.wanted.discard(self._stream(symbol))
        if conn.wanted:
            conn.poke()
            return
        self._conns.remove(conn)  # its last stream: close it instead of unsubscribing
        self._old_reconnects += conn.reconnects
        self._old_messages += conn.messages_sent
        if conn.task is not None and not conn.task.done():
            self._retired.add(conn)
            conn.task.add_done_callback(lambda _: self._retired.discard(conn))
            conn.task.cancel()

    def history(self, symbol: str, limit: int) -> list[Bar]:
        served = self._served.get(symbol)
        if served is None or limit <= 0:
            return []
        bars = list(served.bars)
        return bars[-min(limit, HISTORY_LIMIT):]

    @property
    def cursor(self) -> int | None:
        return self._cursor

    @property
    def stats(self) -> FeedStats:
        return FeedStats(
            connections=len(self._conns),
            streams=sum(len(c.wanted) for c in self._conns),
            reconnects=self._old_reconnects + sum(c.reconnects for c in self._conns),
            gap_filled_bars=self._gap_filled,
            duplicates_dropped=self._duplicates,
            deferred_bars=self._deferred,
            subscribe_messages=self._old_messages + sum(c.messages_sent for c in self._conns),
        )

    async def run(self, on_bars: Callable[[list[Bar]], None]) -> None:
        if self._on_bars is not None:
            raise RuntimeError("BinanceFeed.run() is already running")
        self._on_bars = on_bars
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for conn in self._conns:
                    conn.task = tg.create_task(conn.run())
                await asyncio.Event().wait()  # until cancelled
        finally:
            self._tg = None
            self._on_bars = None

    async def close(self) -> None:
        conns = [*self._conns, *self._retired]
        await asyncio.gather(*(c.stop() for c in conns), return_exceptions=True)

    # --- streams ------------------------------------------------------------------------------

    def _stream(self, symbol: str) -> str:
        return f"{symbol.lower()}@kline_{self.interval}"

    def _assign(self, stream: str) -> Connection:
        conn = next((c for c in self._conns if len(c.wanted) < self._max_streams), None)
        if conn is None:
            conn = Connection(socket_manager=self._socket_manager, on_kline=self._on_kline,
                              on_reconnect=self._on_reconnect,
                              max_messages_per_s=self._max_messages, backoff_s=self._backoff)
            self._conns.append(conn)
            if self._tg is not None:
                conn.task = self._tg.create_task(conn.run())
        conn.wanted.add(stream)
        conn.poke()
        return conn

    async def _on_kline(self, data: dict[str, Any]) -> None:
        k = data.get("k")
        if not isinstance(k, dict) or not k.get("x") or k.get("i") != self.interval:
            return
        symbol = str(k.get("s") or data.get("s"))
        served = self._served.get(symbol)
        if served is None:
            return  # not served (any more)
        t = int(k["t"])
        if served.last is not None and t <= served.last:
            self._duplicates += 1
            return
        bars: list[Bar] = []
        if served.last is not None and t > served.last + self._step:
            filled = await self._fill(symbol, served, before=t)
            if filled is None:
                # Hold this bar back rather than skip the hole: the next streamed bar sees
                # the same gap and tries again, so bars come late but never out of order.
                self._deferred += 1
                return
            bars = filled
            self._gap_filled += len(bars)
            if bars:
                log.info("gap-filled %d %s bars of %s from REST", len(bars), self.interval,
                         symbol)
        self._emit(self._accept(symbol, served, [*bars, bar_from_kline(symbol, k)]))

    async def _on_reconnect(self, conn: Connection) -> None:
        served = [(s, v) for s, v in self._served.items() if v.conn is conn]
        limit = asyncio.Semaphore(FILL_CONCURRENCY)

        async def fill(symbol: str, state: _Served) -> list[Bar]:
            async with limit:  # a failed fill is retried by the next streamed bar's gap check
                return await self._fill(symbol, state, before=None) or []

        filled = await asyncio.gather(*(fill(s, v) for s, v in served))
        out: list[Bar] = []
        for bars, (symbol, state) in zip(filled, served, strict=True):
            out += self._accept(symbol, state, bars)
        self._gap_filled += len(out)
        log.info("gap fill after reconnect of stream connection %d: %d bars for %d symbols",
                 conn.id, len(out), len(served))
        self._emit(out)

    def _accept(self, symbol: str, served: _Served, bars: list[Bar]) -> list[Bar]:
        """Keep only bars newer than the last delivered, oldest first, and record them."""
        if self._served.get(symbol) is not served:
            return []  # removed (or removed and added again) while we were waiting
        out: list[Bar] = []
        for bar in sorted(bars, key=lambda b: b.open_time):
            if served.last is not None and bar.open_time <= served.last:
                self._duplicates += 1
                continue
            served.last = bar.open_time
            served.bars.append(bar)
            out.append(bar)
        return out

    def _emit(self, bars: list[Bar]) -> None:
        if not bars:
            return
        newest = max(b.open_time for b in bars)
        self._cursor = newest if self._cursor is None else max(self._cursor, newest)
        if self._on_bars is None:
            return
        try:
            self._on_bars(bars)
        except Exception:  # the consumer's bug must not stop the feed of every symbol
            log.exception("on_bars callback failed on %d bars", len(bars))

    # --- REST ---------------------------------------------------------------------------------

    async def _klines(self, symbol: str, start_ms: int | None, limit: int) -> list[list[Any]]:
        rows = await asyncio.wait_for(
            self._rest.klines(symbol, self.interval, start_ms=start_ms, limit=limit),
            REST_TIMEOUT_S)
        return sorted((r for r in rows if start_ms is None or int(r[0]) >= start_ms),
                      key=lambda r: int(r[0]))

    async def _warmup(self, symbol: str) -> list[Bar]:
        """The last HISTORY_LIMIT closed bars (the newest REST row is the bar still forming)."""
        try:
            rows = (await self._klines(symbol, None, REST_LIMIT))[:-1]
            need = HISTORY_LIMIT - len(rows)
            if rows and need > 0 and len(rows) == REST_LIMIT - 1:
                first = int(rows[0][0])
                older = await self._klines(symbol, first - need * self._step, need)
                rows = [r for r in older if int(r[0]) < first] + rows
        except Exception as exc:
            raise FeedError(f"could not load {self.interval} klines of {symbol}: "
                            f"{type(exc).__name__}: {exc}") from exc
        return [bar_from_row(symbol, r) for r in rows[-HISTORY_LIMIT:]]

    async def _fill(self, symbol: str, served: _Served,
                    before: int | None) -> list[Bar] | None:
        """Closed bars after the last delivered (and before ``before``, a closed bar's open
        time; without it the newest row may still be forming and is left to the stream).
        None if REST failed: one attempt only, since it runs in the connection's reader."""
        if served.last is None:
            return []
        try:
            return await self._fill_once(symbol, served.last + self._step, before)
        except Exception as exc:
            log.warning("gap fill of %s failed (retried with its next bar): %s: %s",
                        symbol, type(exc).__name__, exc)
            return None

    async def _fill_once(self, symbol: str, start: int, before: int | None) -> list[Bar]:
        end = before if before is not None else int(time.time() * 1000) + 2 * self._step
        rows: list[list[Any]] = []
        for _ in range(FILL_PAGES):
            limit = max(1, min(REST_LIMIT, (end - start) // self._step + 1))
            page = await self._klines(symbol, start, limit)
            page = [r for r in page if before is None or int(r[0]) < before]
            rows += page
            if not page or len(page) < limit or (before is not None and
                                                 int(page[-1][0]) + self._step >= before):
                break
            start = int(page[-1][0]) + self._step
        if before is None:
            rows = rows[:-1]  # the newest row may be the bar still forming
        return [bar_from_row(symbol, r) for r in rows]
