"""The live view of a foreground fleet: a frame, drawn by the caller's renderer, redrawn."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from multibot.wire.protocol import Event, StatusReport
from orchestrator.status import StatusBuilder

if TYPE_CHECKING:
    from orchestrator.fleet import Fleet

# (status, the latest events with their time in ns, newest first) -> the whole frame's text
DrawFrame = Callable[[StatusReport, list[tuple[int, Event]]], str]

_CLEAR = "\x1b[H\x1b[2J"


async def live_view(fleet: Fleet, draw: DrawFrame, period_s: float = 1.0,
                    out: TextIO = sys.stdout) -> None:
    builder = StatusBuilder(fleet)
    while True:
        events = [(e.ts_ns, Event(kind=e.kind, symbol=e.symbol, detail=e.detail))
                  for e in fleet.journal.events(limit=8)]
        out.write(_CLEAR + draw(builder.report(), events) + "\n")
        out.flush()
        await asyncio.sleep(period_s)
