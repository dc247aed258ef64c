"""`logs`: a log of this fleet's home for a client that cannot read the files (a remote
`multibot --connect ... logs`): the last lines, or what was appended since an offset (the
client follows by asking again). Each reply is bounded (multibot.wire.logfiles); only the
home's own logs can be named."""

from __future__ import annotations

from pathlib import Path

from multibot.wire.home import Home
from multibot.wire.logfiles import check_lines, last_lines, log_path, read_from
from multibot.wire.protocol import Logs, LogText
from orchestrator.control.base import Command


class LogsCommand(Command[Logs, tuple[Path, Logs]]):
    request = Logs
    while_shutting_down = True  # why it stops is in the log

    def validate(self, request: Logs) -> tuple[Path, Logs]:
        check_lines(request.lines)
        return log_path(Home(Path(self.ports.home)), request.name), request

    async def execute(self, checked: tuple[Path, Logs]) -> LogText:
        path, request = checked
        text, offset = (last_lines(path, request.lines) if request.offset < 0
                        else read_from(path, request.offset))
        return LogText(text=text, offset=offset)
