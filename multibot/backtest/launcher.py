"""The caller's side of the backtest fork server (see forkserver): start it once, ask it for
children, learn their pids and exit statuses, have it stop them.

One server per process, started on first use or by ``start`` (its imports take a few hundred
ms, once), and started again if it died. It stops when this process closes its socket: at
exit, or when the process dies (and then it stops the children still running). A child is
started without waiting for it to boot; its pid is read when first needed.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import wait
from pathlib import Path

from multibot.backtest.forkserver import HEADER, MAX_FDS, STOP_GRACE_S, WORD, read_exactly

__all__ = ["Child", "ServerGone", "launch", "start"]

# The server imports this very checkout, whatever the caller's working directory holds
# (-P: no script directory or cwd on its sys.path).
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
         "from multibot.backtest.forkserver import main; main(int(sys.argv[2]))")
# No BLAS threads in the server (nor in its children): a backtest does no linear algebra,
# and forking a process with threads is asking for trouble. What the user set is kept.
_ONE_THREAD = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                      "MKL_NUM_THREADS")}
# what a server that is gone looks like on its socket
_GONE = (BrokenPipeError, ConnectionResetError, ConnectionRefusedError)


class ServerGone(RuntimeError):
    """The fork server exited (or was killed) before it started a child."""


class Child:
    """A child of the fork server, through its status pipe: pid first, exit status last."""

    def __init__(self, status: int, server: _Server) -> None:
        self._status = status
        self._server = server
        self._pid: int | None = None
        self.exitcode: int | None = None

    @property
    def pid(self) -> int:
        """Blocks until the server has forked the child; ServerGone if it never will."""
        if self._pid is None:
            data = read_exactly(self._status, WORD.size)
            if data is None:
                raise ServerGone("the backtest fork server did not start the process")
            self._pid = WORD.unpack(data)[0]
        return self._pid

    def wait(self, timeout: float) -> int | None:
        """The exit status (code, or minus the signal), or None if unknown after ``timeout``
        (or never to be known: the server is gone)."""
        if self.exitcode is None and self._status >= 0:
            try:
                self.pid  # noqa: B018 - the pid comes first in the pipe
            except ServerGone:
                self.close()
                return None
            if wait([self._status], timeout):
                data = read_exactly(self._status, WORD.size)
                self.exitcode = None if data is None else WORD.unpack(data)[0]
                self.close()
        return self.exitcode

    def terminate(self) -> None:
        """Have the server SIGTERM it (only the server knows that the pid is still its
        child's); nothing if it has exited, or the server is gone."""
        if self.exitcode is None and self._status >= 0:
            # no server: nobody can tell whose that pid is now, so nothing is signalled
            with contextlib.suppress(ServerGone, OSError):
                self._server.kill(self.pid)

    def close(self) -> None:
        """Stop listening for the exit status (the server then just reaps the child)."""
        if self._status >= 0:
            os.close(self._status)
            self._status = -1


class _Server:
    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        env = {**_ONE_THREAD, **os.environ}
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-P", "-c", _BOOT, _PACKAGE_ROOT, str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=env)
        self.sock = ours
        self.owner = os.getpid()  # a process forked from this one must not use it
        self.retired = False  # given up: a request was interrupted half-way
        self.used = False  # has been asked for a child
        self.lock = threading.Lock()  # one request at a time on the socket

    @property
    def owned(self) -> bool:
        return self.owner == os.getpid()

    def alive(self) -> bool:
        return self.owned and not self.retired and self.process.poll() is None

    def launch(self, payload: bytes, fds: list[int]) -> Child:
        status_r, status_w = os.pipe()
        self.used = True
        try:
            self._send(payload, [status_w, *fds])
        except BaseException:
            os.close(status_r)
            raise
        finally:
            os.close(status_w)
        return Child(status_r, self)

    def kill(self, pid: int) -> None:
        self._send(WORD.pack(pid), [])

    def _send(self, payload: bytes, fds: list[int]) -> None:
        """One request. Interrupted half-way, it would leave the stream out of step: then
        this server is given up (and a new one started for the next request)."""
        with self.lock:
            sent = False
            try:
                socket.send_fds(self.sock, [HEADER.pack(len(payload), len(fds))], fds)
                sent = True
                self.sock.sendall(payload)
            except BaseException:
                self.retired = self.retired or sent
                raise

    def stop(self, wait: float) -> None:
        """Close the socket: the server exits when it sees that (after its imports, if it is
        still busy with them, and its children's stop); killed if it has not within ``wait``
        seconds. One never asked for a child has nothing to stop: it is terminated at once
        (a command that fails on its input does not wait for the server's imports)."""
        self.sock.close()
        if not self.used:
            self.process.terminate()
        try:
            self.process.wait(wait)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_server: _Server | None = None
_STOP_WAIT_S = STOP_GRACE_S + 1.0


def start() -> None:
    """Start the fork server now, if it is not running: its imports take a few hundred ms,
    which the caller's own start-up can overlap (the backtest command does)."""
    global _server
    if _server is None or not _server.alive():
        if _server is not None and _server.owned:
            _server.stop(_STOP_WAIT_S)  # its socket closed; reaped (at once if it died)
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
        except OSError as exc:
            if not (isinstance(exc, _GONE) or exc.errno == errno.ENOTCONN):
                raise
            if attempt:
                raise ServerGone(f"the backtest fork server is gone: {exc}") from exc
            _server.stop(_STOP_WAIT_S)  # it died since the check: once more with a new one
            _server = None
    raise AssertionError("unreachable")


@atexit.register
def _stop() -> None:
    if _server is not None and _server.owned:
        _server.stop(_STOP_WAIT_S)
