"""`down`: stop every worker (flattening their positions if asked), then the fleet."""

from __future__ import annotations

from multibot.wire.protocol import Down, Ok
from orchestrator.control.base import Unchecked


class DownCommand(Unchecked[Down]):
    request = Down

    async def execute(self, checked: Down) -> Ok:
        await self.ports.down(checked.flatten)
        return Ok(detail="fleet stopped")
