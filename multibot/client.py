"""The CLI side of the control socket: requests with timeouts, and starting the daemon."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import msgspec
import zmq

from multibot.errors import ErrorCode, MultibotError
from multibot.wire.home import Home
from multibot.wire.protocol import (
    Error,
    Message,
    Ping,
    Pong,
    ProtocolError,
    decode,
    encode,
    new_id,
)
from multibot.wire.settings import FleetSettings
from orchestrator.procstat import read_stat

EXIT_HOME_BUSY = 3  # another orchestrator owns the home (e.g. a concurrent `up`): use it


class FleetNotRunning(MultibotError):
    """No orchestrator answers for this home."""

    CODE = ErrorCode.NOT_RUNNING


class DaemonStartError(MultibotError):
    """The orchestrator did not come up; the message says why (its log's tail)."""

    CODE = ErrorCode.NOT_AVAILABLE


class PeerGone(Exception):
    """The peer's process exited while a request waited for its reply."""


_ALIVE_CHECK_S = 0.5  # how often a waiting request looks whether its peer still runs


def pid_alive(pid: int | None) -> bool:
    """True for a running process; a zombie (exited, not yet reaped) counts as gone.

    From /proc/<pid>/stat, not psutil: importing psutil would slow every command that talks
    to a fleet."""
    if pid is None or pid <= 0:
        return False
    try:
        stat = read_stat(pid)
    except OSError:  # no /proc (not Linux): the process exists, zombie or not
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat is not None and stat.state not in ("Z", "X")


def request(home: Home, message: Message, timeout: float = 10.0) -> Message:
    """One request/reply over a fresh DEALER; Error replies raise ProtocolError. An
    orchestrator that exits before it answers raises FleetNotRunning at once, not after
    ``timeout``."""
    pid = home.read_pid()
    if not home.socket_path("control").exists() or not pid_alive(pid):
        raise FleetNotRunning(f"no fleet is running on home {home.root}")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(home.endpoint("control"))
        return exchange(sock, message, timeout,
                        f"the orchestrator did not answer within {timeout:g}s",
                        alive=lambda: pid_alive(pid))
    except PeerGone:
        raise FleetNotRunning(
            f"the orchestrator (pid {pid}) exited before it answered; the end of its log:\n"
            + tail(home.orchestrator_log, 5)) from None
    finally:
        sock.close(0)


def exchange(sock: zmq.Socket[bytes], message: Message, timeout: float,
             silence: str, alive: Callable[[], bool] | None = None) -> Message:
    """Send one request on a connected DEALER and wait for ITS reply (matched by id).

    Error replies raise ProtocolError with their code; no reply in time raises TIMEOUT with
    the ``silence`` text; ``alive()`` turning false while waiting raises PeerGone.
    """
    msg_id = new_id()
    # A DEALER blocks on send while it has no live connection (e.g. a failing CURVE
    # handshake that tears the pipe down): bound that wait too.
    sock.setsockopt(zmq.SNDTIMEO, max(1, int(timeout * 1000)))
    deadline = time.monotonic() + timeout
    try:
        sock.send(encode(message, msg_id))
    except zmq.Again:
        raise ProtocolError(ErrorCode.TIMEOUT, silence) from None
    while (left := deadline - time.monotonic()) > 0:
        wait = left if alive is None else min(left, _ALIVE_CHECK_S)
        if not sock.poll(int(wait * 1000) + 1):
            if alive is not None and not alive():
                raise PeerGone
            continue
        envelope, reply = decode(sock.recv())
        if envelope.id != msg_id:
            continue  # a late reply to an earlier request
        if isinstance(reply, Error):
            try:
                code = ErrorCode(reply.code)
            except ValueError:
                code = ErrorCode.INTERNAL
            raise ProtocolError(code, reply.reason)
        return reply
    raise ProtocolError(ErrorCode.TIMEOUT, silence)


def ping(home: Home, timeout: float = 2.0) -> Pong | None:
    try:
        reply = request(home, Ping(), timeout)
    except (FleetNotRunning, ProtocolError):
        return None
    return reply if isinstance(reply, Pong) else None


class Daemon(NamedTuple):
    """The orchestrator that answers for a home once `start_daemon` returns."""

    pid: int
    ours: bool  # started by this call; False: another command's (it won the home's lock)


def start_daemon(home: Home, settings: FleetSettings, timeout: float = 20.0) -> Daemon:
    """Start the orchestrator in the background; returns once one answers pings.

    Two commands may race to start a fleet on one home: only one orchestrator takes the
    home's lock, and the other exits. Which one answers is told by its pid, so that the
    loser never takes the winner's fleet (and its settings) for its own.
    """
    home.ensure()
    fd = os.open(home.orchestrator_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with open(fd, "ab") as log_file:  # the owner's only, whatever the umask
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "--home", str(home.root),
             "--settings", msgspec.json.encode(settings).decode()],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
            start_new_session=True, close_fds=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pong = ping(home, timeout=0.5)
        if pong is not None:
            return Daemon(pid=pong.pid, ours=pong.pid == process.pid)
        if process.poll() is not None and process.returncode != EXIT_HOME_BUSY:
            raise DaemonStartError(
                f"the orchestrator exited with code {process.returncode}:\n"
                + tail(home.orchestrator_log, 5)
            )
        time.sleep(0.05)
    process.kill()
    raise DaemonStartError(f"the orchestrator did not answer within {timeout:g}s")


def tail(path: os.PathLike[str], lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
    except FileNotFoundError:
        return ""
