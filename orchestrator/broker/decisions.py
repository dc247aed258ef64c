"""One decision per symbol per bar, ever: the check both brokers make as they journal an intent.

Every order intent carries the open time of the bar whose decision it carries out
(``PlaceOrder.bar_time``), journaled with it. A decision on a bar at or before the symbol's
last journaled decision is refused (``STALE_DECISION``) before anything is journaled or sent:
a bar re-sent after a crash, or a worker that lost track, can never trade the same bar twice.
An exit retry (``exit_retry``: another try at an exit already decided; SELL only) is no new
decision: it passes, and does not move the symbol's last decision. A resend of a journaled
client order id never gets here: the brokers answer it from the journal first.

It also keeps each symbol's duplicate bars over the fleet's life (journaled): the live bars
its workers saw twice, as they report them, and the decisions refused here as stale.
"""

from __future__ import annotations

import logging

from multibot.errors import ErrorCode, ProtocolError
from multibot.market.orders import Side
from multibot.market.records import OrderView
from multibot.market.times import iso
from multibot.wire.protocol import PlaceOrder
from orchestrator.broker.order_journal import OrderJournal

__all__ = ["Decisions"]

log = logging.getLogger(__name__)

_SELL = Side.SELL
_MAX_COUNT = 2**40  # more bars than any worker sees: a lifetime sum stays far within SQLite's


class Decisions:
    """Each symbol's last decided bar (from the journal, then kept up to date in memory)."""

    def __init__(self, journal: OrderJournal) -> None:
        self._journal = journal
        self._last = journal.last_decision_bars()
        self._refused: set[str] = set()  # client order ids refused as stale (counted once)
        self._duplicates = journal.duplicate_bars()
        self._reported: dict[str, tuple[int | None, int]] = {}  # symbol -> (pid, its count)

    def last(self, symbol: str) -> int | None:
        """Open time of the newest bar ``symbol`` acted on, or None if it never did."""
        return self._last.get(symbol)

    def duplicate_bars(self, symbol: str) -> int:
        """Live bars ``symbol`` saw twice over the fleet's life (as journaled)."""
        return self._duplicates.get(symbol, 0)

    def reported(self, symbol: str, pid: int | None, count: int) -> None:
        """A worker process's own count of duplicate bars (since it started): what is new
        of it is added to the symbol's lifetime count. ProtocolError (BAD_BODY), with nothing
        counted, for a count no worker can have seen (a failed journal write of it would halt
        every symbol's trading)."""
        if not 0 <= count <= _MAX_COUNT:
            raise ProtocolError(ErrorCode.BAD_BODY, f"{symbol}: duplicate_bars {count} is "
                                f"not a count of bars (0 to {_MAX_COUNT})")
        last_pid, last = self._reported.get(symbol, (None, 0))
        new = count - last if pid == last_pid else count
        if new > 0:
            self._count(symbol, new)
        self._reported[symbol] = (pid, count)

    def _count(self, symbol: str, new: int) -> None:
        self._journal.add_duplicate_bars(symbol, new)
        self._duplicates[symbol] = self._duplicates.get(symbol, 0) + new

    def journal_intent(self, intent: OrderView, seq: int, order: PlaceOrder) -> None:
        """Journal ``intent`` (the broker's record of ``order``) with the decision it carries
        out. ProtocolError, with nothing journaled, for a stale decision (STALE_DECISION), an
        exit retry that is not a SELL or a decision without its bar (BAD_BODY)."""
        self.check(intent.symbol, order)
        self._journal.insert_order(intent, seq, order.bar_time, order.exit_retry)
        if not order.exit_retry and order.bar_time is not None:
            last = self._last.get(intent.symbol)
            if last is None or order.bar_time > last:
                self._last[intent.symbol] = order.bar_time

    def check(self, symbol: str, order: PlaceOrder) -> None:
        if order.exit_retry:
            if order.side != _SELL:
                raise ProtocolError(ErrorCode.BAD_BODY, f"order {order.client_order_id}: only "
                                    "a SELL can retry an exit (exit_retry on a BUY)")
            return
        bar_time = order.bar_time
        if bar_time is None:
            raise ProtocolError(ErrorCode.BAD_BODY, f"order {order.client_order_id}: a "
                                "decision needs the open time of its bar (bar_time)")
        last = self._last.get(symbol)
        if last is not None and bar_time <= last:
            coid = order.client_order_id
            if coid not in self._refused:  # a worker's resends of it count once
                self._count(symbol, 1)
                self._refused.add(coid)
                log.warning("%s: refused %s: bar %s was already decided (last decision: bar "
                            "%s)", symbol, coid, iso(bar_time), iso(last))
            raise ProtocolError(
                ErrorCode.STALE_DECISION,
                f"order {coid}: {symbol} already acted on bar {iso(last)}; a decision on bar "
                f"{iso(bar_time)} is refused (each bar is acted on once)")
