"""One supervised OS process per symbol: spawn, liveness, restart with backoff, orderly stop.

Semantics follow OTP/supervisord: an unexpected exit restarts the worker after a growing
backoff; more than ``max_restarts`` exits within ``window_s`` marks that symbol FAILED (the
others are untouched). A stop asks the worker first, then SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import re
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from multibot.wire.home import Home
from multibot.wire.protocol import (
    ErrorCode,
    Message,
    ProtocolError,
    StopWorker,
    WorkerConfig,
    WorkerHeartbeat,
)
from multibot.wire.settings import DEFAULTS
from orchestrator.spawner import Spawner, WorkerProcess
from orchestrator.worker_routes import WorkerRoutes

log = logging.getLogger(__name__)

_LOG_ROTATE_BYTES = 10 << 20


class State(enum.StrEnum):
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    BACKOFF = "BACKOFF"
    FAILED = "FAILED"


_ALLOWED = {
    State.STARTING: {State.RUNNING, State.STOPPING, State.BACKOFF, State.FAILED},
    State.RUNNING: {State.STOPPING, State.BACKOFF, State.FAILED},
    State.STOPPING: {State.STOPPED},
    State.STOPPED: {State.STARTING},
    State.BACKOFF: {State.STARTING, State.STOPPED},
    State.FAILED: {State.STARTING, State.STOPPED},
}
ACTIVE = {State.STARTING, State.RUNNING, State.BACKOFF}


@dataclass(frozen=True)
class Policy:
    max_restarts: int = DEFAULTS.max_restarts
    window_s: float = DEFAULTS.restart_window_s
    backoff_s: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
    start_timeout_s: float = 20.0
    liveness_s: float = 10.0  # 2.5 worker heartbeat periods
    grace_s: float = DEFAULTS.grace_s
    term_s: float = 2.0


@dataclass
class WorkerHandle:
    symbol: str
    config: WorkerConfig
    warmup: int
    state: State = State.STOPPED
    process: WorkerProcess | None = None
    registered: bool = False
    spawned_at: float = 0.0
    running_since: float | None = None
    last_heartbeat: float | None = None
    restarts: int = 0
    recent_exits: deque[float] = field(default_factory=deque)
    last_error: str = ""
    last_error_at: float | None = None  # monotonic: when last_error was set
    worker_error_at: float | None = None  # monotonic: when stats.last_error first showed
    exit_reason: str = ""  # what the worker said (goodbye) or why we killed it
    stats: WorkerHeartbeat = field(default_factory=WorkerHeartbeat)
    backoff_task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def transition(self, new: State) -> None:
        if new not in _ALLOWED[self.state]:
            raise RuntimeError(f"{self.symbol}: illegal transition {self.state} -> {new}")
        self.state = new


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by signal {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


_SECRET_NAME = re.compile(r"KEY|SECRET|PASSW|TOKEN|CREDENTIAL", re.IGNORECASE)


def worker_environment(parent: Mapping[str, str]) -> dict[str, str]:
    """Workers never hold credentials: drop anything that looks like one; one BLAS thread."""
    env = {k: v for k, v in parent.items() if not _SECRET_NAME.search(k)}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    return env


def _rotate(path: os.PathLike[str]) -> None:
    with contextlib.suppress(FileNotFoundError):
        if os.stat(path).st_size > _LOG_ROTATE_BYTES:
            os.replace(path, f"{os.fspath(path)}.1")


class Supervisor:
    def __init__(
        self,
        home: Home,
        policy: Policy,
        send: Callable[[str, Message], None],
        on_state: Callable[[WorkerHandle], None],
        on_gone: Callable[[str], None],
    ) -> None:
        self._home = home
        self._policy = policy
        self._send = send  # to a worker over the broker socket
        self._on_state = on_state  # every state change (events, journal)
        self._on_gone = on_gone  # a symbol stopped or gave up: clean its open orders
        self.handles: dict[str, WorkerHandle] = {}
        self.routes = WorkerRoutes()  # which connection speaks for which symbol
        self.spawner = Spawner(home, worker_environment(os.environ))

    def _set(self, handle: WorkerHandle, state: State) -> None:
        handle.transition(state)
        self._on_state(handle)

    # --- starting ---------------------------------------------------------------------------

    async def start(self, symbol: str, config: WorkerConfig, warmup: int) -> WorkerHandle:
        handle = self.handles.get(symbol)
        if handle is not None and handle.state not in (State.STOPPED, State.FAILED):
            return handle
        handle = WorkerHandle(symbol=symbol, config=config, warmup=warmup,
                              restarts=handle.restarts if handle else 0)
        self.handles[symbol] = handle
        await self._spawn(handle)
        return handle

    def refuse(self, symbol: str, config: WorkerConfig, warmup: int,
               reason: str) -> WorkerHandle:
        """The symbol may not trade (e.g. not reconciled): FAILED with the reason, no process.
        A later `up` of it tries again."""
        previous = self.handles.get(symbol)
        handle = WorkerHandle(symbol=symbol, config=config, warmup=warmup, state=State.FAILED,
                              restarts=previous.restarts if previous else 0, last_error=reason,
                              last_error_at=time.monotonic())
        self.handles[symbol] = handle
        log.error("%s: refused to trade: %s", symbol, reason)
        self._on_state(handle)
        return handle

    async def _spawn(self, handle: WorkerHandle) -> None:
        log_path = self._home.worker_log(handle.symbol)
        _rotate(log_path)
        # a new process, a new token: the previous worker's token and route are void
        token = self.routes.issue(handle.symbol)
        process = await self.spawner.spawn(handle.symbol, log_path, token)
        handle.process = process
        handle.registered = False
        handle.spawned_at = time.monotonic()
        handle.running_since = None
        handle.last_heartbeat = None
        handle.exit_reason = ""
        self._set(handle, State.STARTING)
        log.info("%s: spawned worker pid %d", handle.symbol, process.pid)
        asyncio.get_running_loop().create_task(self._watch(handle, process))

    async def wait_started(self, symbol: str, timeout: float) -> WorkerHandle:
        """Until RUNNING, FAILED, or the timeout (then whatever state it is in)."""
        handle = self.handles[symbol]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            handle = self.handles[symbol]
            if handle.state in (State.RUNNING, State.FAILED, State.STOPPED):
                break
            await asyncio.sleep(0.02)
        return handle

    # --- messages from workers ----------------------------------------------------------------

    def registered(self, symbol: str, pid: int, token: bytes, route: bytes) -> WorkerHandle:
        """The worker we started for ``symbol`` registers: ``token`` must be the one its
        process was given; ``route`` (its connection) becomes the symbol's only route."""
        handle = self.handles.get(symbol)
        if handle is None or handle.pid != pid or handle.state not in ACTIVE:
            raise ProtocolError(
                ErrorCode.NOT_ALLOWED, f"no worker for {symbol} with pid {pid} is expected"
            )
        self.routes.admit(symbol, token, route)
        handle.registered = True
        handle.last_heartbeat = time.monotonic()
        return handle

    def heartbeat(self, symbol: str, stats: WorkerHeartbeat) -> None:
        handle = self.handles.get(symbol)
        if handle is None or not handle.registered:
            return
        handle.last_heartbeat = time.monotonic()
        if stats.last_error != handle.stats.last_error:
            handle.worker_error_at = handle.last_heartbeat if stats.last_error else None
        handle.stats = stats
        if handle.state == State.STARTING:
            handle.running_since = time.monotonic()
            self._set(handle, State.RUNNING)

    def goodbye(self, symbol: str, reason: str) -> None:
        handle = self.handles.get(symbol)
        if handle is not None and reason:
            handle.exit_reason = reason

    def symbol_of(self, route: bytes) -> str | None:
        """The symbol whose registered worker sends on this connection, if any."""
        return self.routes.symbol_of(route)

    def is_live(self, symbol: str) -> bool:
        handle = self.handles.get(symbol)
        # STOPPING still counts: a stopping worker cancels and flattens through the broker
        return handle is not None and handle.registered and (
            handle.state in ACTIVE or handle.state == State.STOPPING)

    # --- exits and restarts -------------------------------------------------------------------

    async def _watch(self, handle: WorkerHandle, process: WorkerProcess) -> None:
        returncode = await process.wait()
        if handle.process is not process:
            return
        handle.process = None
        handle.registered = False
        self.routes.revoke(handle.symbol)
        how = describe_exit(returncode)
        if handle.state == State.STOPPING:
            log.info("%s: worker stopped (%s)", handle.symbol, how)
            self._set(handle, State.STOPPED)
            return
        handle.last_error = f"{handle.exit_reason} ({how})" if handle.exit_reason else how
        handle.last_error_at = time.monotonic()
        log.warning("%s: worker died unexpectedly: %s", handle.symbol, handle.last_error)
        now = time.monotonic()
        handle.recent_exits.append(now)
        while handle.recent_exits and now - handle.recent_exits[0] > self._policy.window_s:
            handle.recent_exits.popleft()
        if len(handle.recent_exits) > self._policy.max_restarts:
            handle.last_error = (
                f"gave up after {len(handle.recent_exits)} exits within "
                f"{self._policy.window_s:g}s; last: {handle.last_error}"
            )
            self._set(handle, State.FAILED)
            self._on_gone(handle.symbol)
            return
        steps = self._policy.backoff_s
        delay = steps[min(len(handle.recent_exits) - 1, len(steps) - 1)]
        self._set(handle, State.BACKOFF)
        handle.backoff_task = asyncio.get_running_loop().create_task(
            self._restart_later(handle, delay)
        )

    async def _restart_later(self, handle: WorkerHandle, delay: float) -> None:
        await asyncio.sleep(delay)
        if handle.state == State.BACKOFF and self.handles.get(handle.symbol) is handle:
            handle.restarts += 1
            await self._spawn(handle)

    def excuse_stall(self, seconds: float) -> None:
        """The orchestrator's own loop did not run for ``seconds`` (a blocking call, SIGSTOP):
        that silence was ours, not the workers'. The liveness clocks move on by it, so the
        heartbeats sent meanwhile, still waiting in the broker socket, are read before anyone
        is judged: a worker is hung after ``liveness_s`` of silence while we listened."""
        now = time.monotonic()
        for handle in self.handles.values():
            if handle.last_heartbeat is not None:
                handle.last_heartbeat = min(handle.last_heartbeat + seconds, now)
            handle.spawned_at = min(handle.spawned_at + seconds, now)

    def check_liveness(self) -> None:
        """Kill hung or never-registering workers; their exit then restarts them."""
        now = time.monotonic()
        for handle in self.handles.values():
            if handle.process is None:
                continue
            if handle.state == State.RUNNING and handle.last_heartbeat is not None:
                silent = now - handle.last_heartbeat
                if silent > self._policy.liveness_s:
                    self._kill(handle, f"no heartbeat for {silent:.1f}s")
            elif (handle.state == State.STARTING
                  and now - handle.spawned_at > self._policy.start_timeout_s):
                self._kill(handle, f"not running after {self._policy.start_timeout_s:g}s")

    def _kill(self, handle: WorkerHandle, reason: str) -> None:
        log.warning("%s: killing worker pid %s: %s", handle.symbol, handle.pid, reason)
        handle.exit_reason = reason
        self._signal(handle, signal.SIGKILL)

    @staticmethod
    def _signal(handle: WorkerHandle, sig: signal.Signals) -> None:
        if handle.process is not None:
            with contextlib.suppress(ProcessLookupError):
                handle.process.send_signal(sig)

    # --- stopping -----------------------------------------------------------------------------

    async def stop(self, symbol: str, flatten: bool) -> WorkerHandle:
        handle = self.handles.get(symbol)
        if handle is None or handle.state == State.STOPPED:
            raise ProtocolError(ErrorCode.NOT_RUNNING, f"{symbol} is not running")
        if handle.state in (State.BACKOFF, State.FAILED):
            if handle.backoff_task is not None:
                handle.backoff_task.cancel()
            self._set(handle, State.STOPPED)
            self._on_gone(symbol)
            return handle
        if handle.state != State.STOPPING:
            self._set(handle, State.STOPPING)
            if handle.registered:
                self._send(symbol, StopWorker(flatten=flatten))
            else:
                self._signal(handle, signal.SIGTERM)
        for sig, wait in ((None, self._policy.grace_s), (signal.SIGTERM, self._policy.term_s),
                          (signal.SIGKILL, 10.0)):
            if sig is not None:
                log.warning("%s: worker did not exit in time; sending %s", symbol, sig.name)
                self._signal(handle, sig)
            if await self._exited(handle, wait):
                break
        self._on_gone(symbol)
        return handle

    async def _exited(self, handle: WorkerHandle, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while handle.state != State.STOPPED and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return handle.state == State.STOPPED

    async def stop_all(self, flatten: bool) -> None:
        live = [s for s, h in self.handles.items() if h.state != State.STOPPED]
        await asyncio.gather(*(self.stop(s, flatten) for s in live), return_exceptions=True)
