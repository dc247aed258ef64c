"""How worker processes are started: forked from a preloaded forkserver (default) or exec'd.

The forkserver (multiprocessing's) imports worker/preload.py once; each worker is then a
fork of it: milliseconds to start and a few MB of private memory, instead of a fresh
interpreter importing everything. ``MULTIBOT_SPAWN=exec`` falls back to a plain subprocess.

The forkserver is a process of its own and may die (killed, or fed garbage on its listener,
which makes multiprocessing's server exit). Its workers live on: the orchestrator watches
each worker itself (a pidfd) once the server that reported its exit is gone, and adopts it
(a child subreaper) to learn its exit status. The next start launches a new server, with the
workers' scrubbed environment like the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol

from multibot.wire.home import Home
from multibot.wire.protocol import PARENT_FD_ENV

log = logging.getLogger(__name__)


class WorkerProcess(Protocol):
    @property
    def pid(self) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    async def wait(self) -> int: ...


_UNKNOWN_EXIT = 255  # multiprocessing's own code for an exit its forkserver did not report
_PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    """Orphaned descendants (workers whose forkserver died) become our children, not init's:
    we reap them, so their exit status is known and their pid stays theirs until then."""
    if sys.platform != "linux":
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.warning("cannot become a child subreaper: %s", os.strerror(ctypes.get_errno()))


def _open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux >= 5.3, or already gone
        return None


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def on_ready() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, on_ready)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def _reap(pid: int) -> int:
    """The exit status of an exited worker we adopted (its forkserver died before it)."""
    for _ in range(100):  # the kernel re-parents a dying server's children as it exits
        try:
            reaped, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not (yet) ours: no subreaper, or being re-parented
            await asyncio.sleep(0.01)
            continue
        if reaped:
            return os.waitstatus_to_exitcode(status)
        await asyncio.sleep(0.01)
    return _UNKNOWN_EXIT


class ForkedWorker:
    """A forkserver child seen like an asyncio subprocess: pid, send_signal, await wait()."""

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self._process = process
        self._returncode: int | None = None
        assert process.pid is not None
        self.pid: int = process.pid
        # The worker itself, whoever its parent is: outlives a dead forkserver's reports.
        self._pidfd = _open_pidfd(self.pid)

    def send_signal(self, sig: int) -> None:
        if self._returncode is not None:  # reaped: the pid may belong to someone else now
            raise ProcessLookupError(self.pid)
        if self._pidfd is not None:
            signal.pidfd_send_signal(self._pidfd, sig)
        else:
            os.kill(self.pid, sig)

    async def wait(self) -> int:
        if self._returncode is None:
            # The forkserver writes the worker's exit status to this pipe, or dies (EOF).
            sentinel = self._process.sentinel
            await _readable(sentinel)
            try:
                code = multiprocessing.forkserver.read_signed(sentinel)
            except (OSError, EOFError):  # the forkserver is gone, not (maybe) the worker
                code = await self._outlive_forkserver()
            else:
                await _readable(sentinel)  # the server closes it next: join() won't block
            self._returncode = code
            # Only now: closing the process object closes the pipe the worker watches for
            # the orchestrator's death, which would stop a worker still running.
            self._process.join()
            self._process.close()
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
        return self._returncode

    async def _outlive_forkserver(self) -> int:
        if self._pidfd is None:
            return _UNKNOWN_EXIT
        log.warning("worker pid %d: its forkserver died; watching the worker itself", self.pid)
        await _readable(self._pidfd)
        return await _reap(self.pid)


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    """Temporarily replace os.environ (the forkserver inherits it when it starts)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class ExecWorker:
    """An exec'd worker, and the write end of its orchestrator pipe (closed once reaped)."""

    def __init__(self, process: asyncio.subprocess.Process, pipe_w: int) -> None:
        self._process = process
        self._pipe_w: int | None = pipe_w
        self.pid: int = process.pid

    def send_signal(self, sig: int) -> None:
        self._process.send_signal(sig)

    async def wait(self) -> int:
        try:
            return await self._process.wait()
        finally:
            if self._pipe_w is not None:
                os.close(self._pipe_w)
                self._pipe_w = None


class Spawner:
    def __init__(self, home: Home, env: Mapping[str, str], mode: str | None = None) -> None:
        self._home = home
        # SPT_NOENV: a process title must not overwrite the environment block, so that
        # /proc/<pid>/environ keeps showing what a worker was given (and lacks).
        self._env = {**env, "SPT_NOENV": "1"}
        self.mode = mode or os.environ.get("MULTIBOT_SPAWN", "forkserver")
        self._context = multiprocessing.get_context("forkserver")
        self._forkserver_env = {**self._env,
                                "MULTIBOT_FORKSERVER_TITLE": f"multibot-forkserver {home.root}"}

    def start(self) -> None:
        """Start the forkserver now (with the workers' scrubbed environment), not on demand."""
        if self.mode != "forkserver":
            return
        _become_subreaper()
        self._context.set_forkserver_preload(["orchestrator.preload"])
        with _environment(self._forkserver_env):
            multiprocessing.forkserver.ensure_running()

    def stop(self) -> None:
        """Stop the forkserver (it would also exit by itself once we are gone)."""
        if self.mode == "forkserver":
            stop = getattr(multiprocessing.forkserver._forkserver, "_stop", None)
            if stop is not None:
                stop()

    async def spawn(self, symbol: str, log_path: Path, token: bytes) -> WorkerProcess:
        """Start a worker of ``symbol`` that alone learns ``token`` (its proof on the broker
        socket): never through argv or the environment, which other local users may read."""
        if self.mode == "forkserver":
            from worker.main import run_forked

            # The Process's arguments go over a pipe to the forked child alone (the forkserver
            # only passes the pipe on), so the token travels with them.
            process = self._context.Process(
                target=run_forked, args=(symbol, str(self._home.root), str(log_path), token),
                name=f"worker-{symbol}", daemon=True,
            )
            # A dead forkserver is replaced inside start(): with this environment, never the
            # orchestrator's own (which may hold credentials).
            with _environment(self._forkserver_env):
                process.start()
            return ForkedWorker(process)
        # The worker's read end reaches EOF when we exit (the write end is ours alone, kept
        # until the worker is reaped): it stops at once instead of waiting out its liveness.
        # It first carries the worker's token (a pipe holds far more than a token: the write
        # never blocks), then nothing until its EOF.
        pipe_r, pipe_w = os.pipe()
        try:
            os.write(pipe_w, token)
            with open(log_path, "ab") as log_file:
                child = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "worker", "--symbol", symbol,
                    "--home", str(self._home.root),
                    stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                    start_new_session=True,  # a Ctrl-C on the terminal reaches only us
                    env={**self._env, PARENT_FD_ENV: str(pipe_r)}, pass_fds=(pipe_r,),
                )
        except BaseException:
            os.close(pipe_w)
            raise
        finally:
            os.close(pipe_r)
        return ExecWorker(child, pipe_w)
