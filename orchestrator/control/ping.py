"""`ping`: is the fleet there, and whose is it."""

from __future__ import annotations

import os

from multibot.wire.protocol import Ping, Pong
from orchestrator.control.base import Unchecked


class PingCommand(Unchecked[Ping]):
    request = Ping
    while_shutting_down = True

    async def execute(self, checked: Ping) -> Pong:
        return Pong(pid=os.getpid(), home=self.ports.home)
