"""`multibot logs NAME [-f]`: a symbol's (or the orchestrator's) log, read from the local
home's files, or with --connect asked of the remote fleet over its control socket."""

# No `from __future__ import annotations`: typer reads the command's annotations on each run.

import contextlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer

from multibot.exits import reported
from multibot.wire.logfiles import MAX_LOG_LINES

if TYPE_CHECKING:
    from multibot.remote import RemoteTarget
    from multibot.wire.home import Home

RemoteOf = Callable[["Home"], "RemoteTarget | None"]  # the --connect target, if any
_FOLLOW_POLL_S = 0.2
_REMOTE_FOLLOW_POLL_S = 0.5


def follow_file(path: Path, out: TextIO, poll_s: float = _FOLLOW_POLL_S,
                stop_after_s: float | None = None) -> None:
    """Print what is appended to ``path``; reopens when the file is rotated or truncated."""
    started = time.monotonic()
    f = open(path, "rb")  # noqa: SIM115 - reopened on rotation, closed in finally
    f.seek(0, os.SEEK_END)
    inode = os.fstat(f.fileno()).st_ino
    try:
        while stop_after_s is None or time.monotonic() - started < stop_after_s:
            chunk = f.read()
            if chunk:
                out.write(chunk.decode(errors="replace"))
                out.flush()
                continue
            time.sleep(poll_s)
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                continue
            if stat.st_ino != inode or stat.st_size < f.tell():
                f.close()
                f = open(path, "rb")  # noqa: SIM115
                inode = os.fstat(f.fileno()).st_ino
    finally:
        f.close()


def _remote_logs(target: "RemoteTarget", name: str, lines: int, follow: bool) -> None:
    """The log as the remote fleet reads it: its last lines, then (``follow``) what is
    appended, asked for again every half second."""
    from multibot.wire.protocol import Logs, LogText

    offset = -1
    while True:
        reply = target.request(Logs(name=name, lines=lines, offset=offset))
        assert isinstance(reply, LogText)
        sys.stdout.write(reply.text)
        sys.stdout.flush()
        if not follow:
            return
        if offset == reply.offset:
            time.sleep(_REMOTE_FOLLOW_POLL_S)
        offset = reply.offset


def register(app: typer.Typer, remote_of: RemoteOf) -> None:
    """Add the `logs` command to ``app``."""
    from multibot.cli.keys import HomeOption

    @app.command()
    @reported
    def logs(
        symbol: Annotated[str, typer.Argument(help="a symbol, or 'orchestrator'")],
        home: HomeOption = None,
        follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing")] = False,
        lines: Annotated[int, typer.Option("--lines", "-n", help="lines to show", min=0,
                                           max=MAX_LOG_LINES)] = 50,
    ) -> None:
        """Print a symbol's log (or the orchestrator's), also of a remote fleet (--connect)."""
        from multibot.wire.home import Home
        from multibot.wire.logfiles import last_lines, log_path

        fleet_home = Home.at(home)
        with contextlib.suppress(KeyboardInterrupt):
            target = remote_of(fleet_home)
            if target is not None:
                _remote_logs(target, symbol, lines, follow)
                return
            path = log_path(fleet_home, symbol)
            sys.stdout.write(last_lines(path, lines)[0])
            sys.stdout.flush()
            if follow:
                follow_file(path, sys.stdout)
