"""The caller's side of the backtest fork server (see forkserver): start it once, ask it for
children, learn their pids and exit statuses.

One server per process, started on first use or by ``start`` (its imports take a few hundred
ms, once), and started again if it died. It stops when this process closes its socket: at
exit, or when the process dies. A child is started without waiting for it to boot; its pid
is read when first needed.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
from pathlib import Path

from orchestrator.backtest.forkserver import HEADER, MAX_FDS, PID, STATUS

__all__ = ["Child", "ServerGone", "launch", "start"]

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # where `orchestrator` lives


class ServerGone(RuntimeError):
    """The fork server exited (or was killed) while a child was being started."""


class Child:
    """A child of the fork server, through its status pipe: pid first, exit status last."""

    def __init__(self, status: int) -> None:
        self._status = status
        self._pid: int | None = None
        self.exitcode: int | None = None

    @property
    def pid(self) -> int:
        """Blocks until the server has forked the child."""
        if self._pid is None:
            data = self._read(PID.size)
            if data is None:
                raise ServerGone("the backtest fork server exited before starting a child")
            self._pid = PID.unpack(data)[0]
        return self._pid

    def wait(self, timeout: float) -> int | None:
        """The exit status (code, or minus the signal), or None if unknown after ``timeout``."""
        if self.exitcode is None and self._status >= 0:
            self.pid  # noqa: B018 - the pid comes first in the pipe
            ready, _, _ = select.select([self._status], [], [], timeout)
            if ready:
                data = self._read(STATUS.size)
                self.exitcode = None if data is None else STATUS.unpack(data)[0]
                self.close()
        return self.exitcode

    def terminate(self) -> None:
        """SIGTERM, unless it is known to have exited (its pid may then be someone else's)."""
        if self.exitcode is None and self._status >= 0:
            with contextlib.suppress(ProcessLookupError, ServerGone):
                os.kill(self.pid, signal.SIGTERM)

    def close(self) -> None:
        """Stop listening for the exit status (the server then just reaps the child)."""
        if self._status >= 0:
            os.close(self._status)
            self._status = -1

    def _read(self, size: int) -> bytes | None:
        data = b""
        while len(data) < size:
            chunk = os.read(self._status, size - len(data))
            if not chunk:
                return None
            data += chunk
        return data


class _Server:
    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.backtest.forkserver",
                 str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=env)
        self.sock = ours
        self.owner = os.getpid()

    def alive(self) -> bool:
        return self.owner == os.getpid() and self.process.poll() is None

    def launch(self, payload: bytes, fds: list[int]) -> Child:
        status_r, status_w = os.pipe()
        try:
            socket.send_fds(self.sock, [HEADER.pack(len(payload), 1 + len(fds))],
                            [status_w, *fds])
            self.sock.sendall(payload)
        except OSError:
            os.close(status_r)
            raise
        finally:
            os.close(status_w)
        return Child(status_r)

    def stop(self, wait: float = 5.0) -> None:
        """Close the socket: the server exits when it sees that (after its imports, if it is
        still busy with them); killed if it has not within ``wait`` seconds."""
        self.sock.close()
        try:
            self.process.wait(wait)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_server: _Server | None = None


def start() -> None:
    """Start the fork server now, if it is not running: its imports take a few hundred ms,
    which the caller's own start-up can overlap (the backtest command does)."""
    global _server
    if _server is None or not _server.alive():
        if _server is not None and _server.owner == os.getpid():
            _server.stop()
        _server = _Server()


def launch(payload: bytes, fds: list[int]) -> Child:
    """A new child of the fork server, given ``payload`` and ``fds`` (which stay open here:
    the server has its own copies). Starts the server first if there is none (or it died)."""
    global _server
    if len(fds) >= MAX_FDS:
        raise ValueError(f"a child takes at most {MAX_FDS - 1} descriptors")
    for attempt in range(2):
        start()
        assert _server is not None
        try:
            return _server.launch(payload, fds)
        except OSError as exc:  # it died since the check: once more with a new one
            if attempt:
                raise ServerGone(f"the backtest fork server is gone: {exc}") from exc
            _server.stop()
            _server = None
    raise AssertionError("unreachable")


@atexit.register
def _stop() -> None:
    if _server is not None and _server.owner == os.getpid():
        _server.stop(wait=1.0)
