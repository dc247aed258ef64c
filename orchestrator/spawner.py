"""How worker processes are started: forked from a preloaded forkserver (default) or exec'd.

The forkserver (multiprocessing's) imports worker/preload.py once; each worker is then a
fork of it: milliseconds to start and a few MB of private memory, instead of a fresh
interpreter importing everything. ``MULTIBOT_SPAWN=exec`` falls back to a plain subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
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


class WorkerProcess(Protocol):
    @property
    def pid(self) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    async def wait(self) -> int: ...


class ForkedWorker:
    """A forkserver child seen like an asyncio subprocess: pid, send_signal, await wait()."""

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self._process = process
        self._returncode: int | None = None
        assert process.pid is not None
        self.pid: int = process.pid

    def send_signal(self, sig: int) -> None:
        if self._returncode is not None:  # reaped: the pid may belong to someone else now
            raise ProcessLookupError(self.pid)
        os.kill(self.pid, sig)

    async def wait(self) -> int:
        if self._returncode is None:
            loop = asyncio.get_running_loop()
            exited = loop.create_future()
            sentinel = self._process.sentinel

            def on_exit() -> None:
                if not exited.done():
                    exited.set_result(None)

            loop.add_reader(sentinel, on_exit)
            try:
                await exited
            finally:
                loop.remove_reader(sentinel)
            self._process.join()
            code = self._process.exitcode
            self._returncode = code if code is not None else -signal.SIGKILL
            self._process.close()
        return self._returncode


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
        self._env = dict(env)
        self.mode = mode or os.environ.get("MULTIBOT_SPAWN", "forkserver")
        self._context = multiprocessing.get_context("forkserver")

    def start(self) -> None:
        """Start the forkserver now (with the workers' scrubbed environment), not on demand."""
        if self.mode != "forkserver":
            return
        self._context.set_forkserver_preload(["orchestrator.preload"])
        title = f"multibot-forkserver {self._home.root}"
        with _environment({**self._env, "MULTIBOT_FORKSERVER_TITLE": title}):
            multiprocessing.forkserver.ensure_running()

    def stop(self) -> None:
        """Stop the forkserver (it would also exit by itself once we are gone)."""
        if self.mode == "forkserver":
            stop = getattr(multiprocessing.forkserver._forkserver, "_stop", None)
            if stop is not None:
                stop()

    async def spawn(self, symbol: str, log_path: Path) -> WorkerProcess:
        if self.mode == "forkserver":
            from worker.main import run_forked

            process = self._context.Process(
                target=run_forked, args=(symbol, str(self._home.root), str(log_path)),
                name=f"worker-{symbol}", daemon=True,
            )
            process.start()
            return ForkedWorker(process)
        # The worker's read end reaches EOF when we exit (the write end is ours alone, kept
        # until the worker is reaped): it stops at once instead of waiting out its liveness.
        pipe_r, pipe_w = os.pipe()
        try:
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
