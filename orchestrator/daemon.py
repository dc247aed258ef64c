"""Entry point of the orchestrator process (background daemon or `up --foreground`)."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
import sys
from typing import TYPE_CHECKING, TextIO

import msgspec
import zmq

from multibot.wire.home import Home, HomeError
from multibot.wire.protocol import Up
from multibot.wire.settings import FleetSettings, SettingsError

if TYPE_CHECKING:
    from orchestrator.live import DrawFrame

EXIT_HOME_BUSY = 3
EXIT_BAD_SETTINGS = 2
EXIT_BAD_JOURNAL = 4
log = logging.getLogger("orchestrator")


def private_files() -> None:
    """Whatever the umask we were started with, what the orchestrator and its workers
    create (journal, logs, pid file, sockets) is for the owner only."""
    os.umask(0o077)


def configure_logging(home: Home, console: bool, live: bool = False) -> None:
    private_files()
    _log_fatal_signals(home)
    handlers: list[logging.Handler] = []
    if not live:  # the live view owns the terminal
        handlers.append(logging.StreamHandler(sys.stderr))
    if console:  # foreground: the terminal AND the log file
        home.ensure()
        handlers.append(logging.FileHandler(home.orchestrator_log))
    logging.basicConfig(
        level=logging.INFO, handlers=handlers, force=True,
        format=f"%(asctime)s orchestrator pid={os.getpid()} %(levelname)s %(name)s %(message)s",
    )


_fatal_log: list[TextIO] = []  # kept open for the process's life: faulthandler writes to it


def _log_fatal_signals(home: Home) -> None:
    """A SIGSEGV, SIGBUS (e.g. SQLite's shared memory file truncated or unwritable), SIGFPE
    or SIGABRT leaves its Python traceback in the orchestrator's log, not silence."""
    if _fatal_log:
        return
    home.ensure()
    _fatal_log.append(open(home.orchestrator_log, "a", encoding="utf-8"))  # noqa: SIM115
    faulthandler.enable(file=_fatal_log[0])


def run(home: Home, settings: FleetSettings, initial: Up | None = None,
        live: DrawFrame | None = None) -> int:
    """Run the fleet until it is stopped; ``live`` draws the foreground's live view."""
    private_files()
    try:
        settings.check()
    except SettingsError as exc:
        log.error("%s", exc)
        return EXIT_BAD_SETTINGS
    try:
        from setproctitle import setproctitle

        setproctitle(f"multibot-orchestrator {home.root}")
    except ImportError:
        pass

    async def main() -> None:
        from orchestrator.fleet import Fleet  # heavy imports only in the orchestrator

        fleet = Fleet(home, settings)
        await fleet.run(initial, live)

    try:
        asyncio.run(main())
    except HomeError as exc:
        log.error("%s", exc)
        return EXIT_HOME_BUSY
    except zmq.ZMQError as exc:  # e.g. the --control-tcp port is taken
        log.error("cannot open the fleet's sockets: %s", exc)
        return EXIT_BAD_SETTINGS
    except Exception as exc:
        from orchestrator.broker.journal import JournalError
        from orchestrator.exchange.credentials import CredentialsError
        from orchestrator.exchange.venue import VenueError

        if isinstance(exc, JournalError):  # empty, corrupt or not a journal: refused, say why
            log.error("%s", exc)
            return EXIT_BAD_JOURNAL
        if not isinstance(exc, VenueError | CredentialsError):
            raise
        log.error("%s", exc)
        return EXIT_BAD_SETTINGS
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="multibot-orchestrator")
    parser.add_argument("--home", required=True)
    parser.add_argument("--settings", default="{}", help="FleetSettings as JSON")
    args = parser.parse_args(argv)
    home = Home.at(args.home)
    configure_logging(home, console=False)
    try:
        settings = msgspec.json.decode(args.settings.encode(), type=FleetSettings)
    except msgspec.ValidationError as exc:
        log.error("bad settings: %s", exc)
        return EXIT_BAD_SETTINGS
    return run(home, settings)


if __name__ == "__main__":
    sys.exit(main())
