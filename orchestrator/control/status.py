"""`status`: one row per symbol, and the orchestrator's own facts."""

from __future__ import annotations

from multibot.wire.protocol import Status, StatusReport
from orchestrator.control.base import Unchecked


class StatusCommand(Unchecked[Status]):
    request = Status
    while_shutting_down = True

    async def execute(self, checked: Status) -> StatusReport:
        return self.ports.status()
