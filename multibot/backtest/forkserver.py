"""The backtest's fork server: a process that imported what a backtest child needs, and never
ran a strategy. Every child is a fork of it (see launcher, the caller's side).

Started by launcher (``main`` with FD, its end of a Unix socket pair). A request is a header
(payload length, descriptor count) that carries descriptors (SCM_RIGHTS), then the payload.
To start a child, the first descriptor is a status pipe: the server writes the child's pid
into it at once and, once it has reaped the child, its exit status (an exit code, or minus
the signal that killed it); the child gets the payload and the other descriptors (see
child.serve). A request without descriptors asks to SIGTERM the child whose pid is its
payload: only the server signals its children, as only it knows that a pid is still theirs.
When the caller closes its end of the socket (or dies), the server stops the children still
running, then exits.

Lean on purpose, unlike multiprocessing's forkserver, which this replaced: a child does not
re-import the caller's main module or unpickle a Process object, and the server imports no
CLI. Measured here (bench/README): a child reaches its ``main`` ~5 ms sooner, after ~700
page faults instead of ~950.

A fresh process is expensive on a VM whose host backs guest memory lazily: each page touched
for the first time costs a page fault (~3.5-5 us here). A child allocates and frees many numpy
temporaries of a few hundred KB, which glibc hands back to the kernel when freed (mmap, or
trimming the top of the heap), so the next one faults its pages in again. Told to keep freed
memory (``keep_freed_memory``, in the server only: the children inherit it), a child reuses
those pages: ~430 fewer faults a child, which then takes ~2,200 in all.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import gc
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback

__all__ = ["HEADER", "MAX_FDS", "STOP_GRACE_S", "WORD", "keep_freed_memory", "main",
           "read_exactly"]

HEADER = struct.Struct("<II")  # payload bytes, descriptors
WORD = struct.Struct("<q")  # what a status pipe carries: a pid, then an exit status
MAX_FDS = 8
STOP_GRACE_S = 1.0  # children still running when the caller goes: SIGTERM, then SIGKILL

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_KEEP_BYTES = 256 << 20  # do not trim the heap until this much is free at its top
_MMAP_BYTES = 32 << 20  # blocks below this come from the heap (glibc's largest threshold)


def keep_freed_memory() -> bool:
    """Whether glibc's mallopt took both settings (nothing changes without glibc)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: libc on Linux
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))


def _preload() -> None:
    """What every child needs: the engine and its child entry point, every built-in strategy
    (with numpy and the vector forms), the bundled exchange rules."""
    import multibot.backtest.child  # noqa: F401
    import strategies.vector  # noqa: F401
    from multibot.market.rules import bundled_rules
    from strategies.registry import builtins

    builtins()
    bundled_rules()


def read_exactly(fd: int, size: int) -> bytes | None:
    """``size`` bytes from ``fd`` (a pipe or a stream socket), or None at end of file."""
    chunks, left = [], size
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _recv_fds(sock: socket.socket, size: int) -> tuple[bytes, list[int]]:
    """Up to ``size`` bytes and the descriptors sent with them, close-on-exec (so that a
    strategy that runs a program does not hand it its results pipe)."""
    fds = array.array("i")
    data, ancillary, _, _ = sock.recvmsg(size, socket.CMSG_LEN(MAX_FDS * fds.itemsize),
                                         socket.MSG_CMSG_CLOEXEC)
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return data, list(fds)


def _request(sock: socket.socket) -> tuple[bytes, list[int]] | None:
    """The next request's payload and descriptors; None when the caller closed its end."""
    try:
        head, fds = _recv_fds(sock, HEADER.size)
    except ConnectionResetError:
        return None
    if not head:
        return None
    try:
        size, count = HEADER.unpack(head + _rest_of_request(sock, HEADER.size - len(head)))
        if count != len(fds):
            raise ValueError(f"{len(fds)} descriptors came with a request for {count}")
        return _rest_of_request(sock, size), fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _rest_of_request(sock: socket.socket, size: int) -> bytes:
    data = read_exactly(sock.fileno(), size)
    if data is None:
        raise EOFError("the caller closed its end in the middle of a request")
    return data


def _run_child(payload: bytes, fds: list[int]) -> int:
    """In the new child: run it, and the exit code."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C stops a child
    try:
        from multibot.backtest.child import serve

        serve(payload, fds)
        return 0
    except KeyboardInterrupt:
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()


class _Children:
    """The server's children not reaped yet, each with its status pipe. A pid here cannot
    belong to another process (it is not free before it is reaped), so only the server
    signals its children."""

    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}  # pid -> status pipe

    def start(self, payload: bytes, status: int, given: list[int],
              closed_in_child: tuple[int, ...]) -> None:
        try:
            pid = os.fork()
        except OSError:  # out of processes or memory: the caller sees its pipes close
            for fd in (status, *given):
                os.close(fd)
            return
        if pid == 0:
            # the child keeps only what it was given
            for fd in (*closed_in_child, status, *self.statuses.values()):
                os.close(fd)
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os._exit(_run_child(payload, given))
        for fd in given:
            os.close(fd)
        try:
            os.write(status, WORD.pack(pid))
            self.statuses[pid] = status
        except OSError:
            os.close(status)  # the caller gave up on it already

    def kill(self, pid: int, sig: int = signal.SIGTERM) -> None:
        if pid in self.statuses:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def reap(self, block: bool = False) -> None:
        """Reap every child that has exited (``block``: every child, waiting for each), and
        tell the caller its exit status (if it still listens)."""
        while True:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            fd = self.statuses.pop(pid, None)
            if fd is not None:
                with contextlib.suppress(OSError):  # the caller closed its end
                    os.write(fd, WORD.pack(os.waitstatus_to_exitcode(status)))
                os.close(fd)

    def stop(self, grace: float) -> None:
        """SIGTERM to every child still running, SIGKILL to those alive after ``grace`` s."""
        for pid in list(self.statuses):
            self.kill(pid)
        deadline = time.monotonic() + grace
        while self.statuses and time.monotonic() < deadline:
            time.sleep(0.01)
            self.reap()
        for pid in list(self.statuses):
            self.kill(pid, signal.SIGKILL)
        self.reap(block=True)


def serve(sock: socket.socket) -> None:
    """Serve requests until the caller goes away; then stop the children still running (a
    caller that was killed cannot stop them itself)."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select() through wake_w
    children = _Children()
    try:
        while True:
            ready, _, _ = select.select([sock.fileno(), wake_r], [], [])
            if wake_r in ready:
                os.read(wake_r, 4096)
                children.reap()
            if sock.fileno() not in ready:
                continue
            request = _request(sock)
            if request is None:
                return
            payload, fds = request
            if not fds:  # a kill request
                children.kill(WORD.unpack(payload)[0])
                continue
            children.start(payload, fds[0], fds[1:], (wake_r, wake_w, sock.fileno()))
    finally:
        children.stop(STOP_GRACE_S)


def main(fd: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the caller and the children
    keep_freed_memory()
    sock = socket.socket(fileno=fd)
    _preload()
    gc.freeze()  # what was imported stays out of the children's collections
    serve(sock)
