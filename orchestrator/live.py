"""The live view of a foreground fleet: a frame, drawn by the caller's renderer, redrawn."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import TextIO

from multibot.wire.protocol import Event, EventKind, StatusReport
from orchestrator.broker.journal import Journal

# (status, the latest events with their time in ns, oldest first) -> the whole frame's text
DrawFrame = Callable[[StatusReport, list[tuple[int, Event]]], str]

_CLEAR = "\x1b[H\x1b[2J"


async def live_view(report: Callable[[], StatusReport], journal: Journal, draw: DrawFrame,
                    period_s: float = 1.0, out: TextIO = sys.stdout) -> None:
    """Redraw every ``period_s``: the status ``report`` and the journal's latest events."""
    while True:
        events = [(e.ts_ns, Event(kind=EventKind(e.kind), symbol=e.symbol, detail=e.detail))
                  for e in journal.events(limit=8)]
        out.write(_CLEAR + draw(report(), events) + "\n")
        out.flush()
        await asyncio.sleep(period_s)
