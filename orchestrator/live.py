"""The live view of a foreground fleet: the status table and the latest events, redrawn."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING, TextIO

from orchestrator.render import status_table
from orchestrator.status import StatusBuilder

if TYPE_CHECKING:
    from orchestrator.fleet import Fleet

_CLEAR = "\x1b[H\x1b[2J"


async def live_view(fleet: Fleet, period_s: float = 1.0, out: TextIO = sys.stdout) -> None:
    builder = StatusBuilder(fleet)
    while True:
        lines = [_CLEAR + status_table(builder.report()), "", "latest events:"]
        for event in fleet.journal.events(limit=8):
            when = time.strftime("%H:%M:%S", time.localtime(event.ts_ns / 1e9))
            lines.append(f"  {when} {event.symbol or 'fleet':<9} {event.kind:<6} {event.detail}")
        lines += ["", "Ctrl-C stops the fleet (orderly: orders cancelled, journal kept)"]
        out.write("\n".join(lines) + "\n")
        out.flush()
        await asyncio.sleep(period_s)
