"""The per-symbol worker process: SUB to its symbol's bars, DEALER to the broker.

Lean on purpose: pyzmq, msgspec and the strategies; no exchange SDK, no credentials. It exits
on its own the moment the orchestrator dies (a pipe only the orchestrator holds open reaches
EOF), or when its heartbeats stop (a hung orchestrator), so no orphan ever trades unsupervised.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from types import FrameType

import msgspec
import zmq

from multibot.market.bar import Bar
from multibot.market.times import iso
from multibot.wire.home import Home
from multibot.wire.protocol import (
    HEARTBEAT_TOPIC,
    MARKET_HWM,
    MAX_ERROR_CHARS,
    PARENT_FD_ENV,
    WORKER_TOKEN_BYTES,
    ZMQ_MAX_MESSAGE_BYTES,
    BarMessage,
    CancelOrder,
    Error,
    Goodbye,
    Message,
    OrchestratorHeartbeat,
    OrderUpdate,
    PlaceOrder,
    ProtocolError,
    Register,
    StopWorker,
    Welcome,
    decode,
    decode_market,
    encode,
    market_topic,
)
from strategies.base import StrategyError
from strategies.registry import create
from worker.retries import backoff
from worker.runner import Runner

log = logging.getLogger("worker")

EXIT_OK, EXIT_CONFIG, EXIT_NO_ORCHESTRATOR = 0, 2, 4
_WELCOME_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0


def orchestrator_pipe() -> int | None:
    """An fd that turns readable (EOF) when the orchestrator exits, however it exits.

    A forked worker has multiprocessing's parent sentinel: the read end of a pipe whose only
    write end the orchestrator keeps while the worker runs. An exec'd worker is handed such a
    pipe by the orchestrator (PARENT_FD_ENV). None: heartbeats alone tell.
    """
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is not None and parent.sentinel is not None:
        return parent.sentinel
    raw = os.environ.pop(PARENT_FD_ENV, "")
    return int(raw) if raw.isdigit() else None


def read_token(parent_fd: int | None) -> bytes:
    """An exec'd worker's token: the first WORKER_TOKEN_BYTES on its orchestrator pipe,
    written before the worker started. Without a pipe there is none (registration fails)."""
    token = b""
    while parent_fd is not None and len(token) < WORKER_TOKEN_BYTES:
        chunk = os.read(parent_fd, WORKER_TOKEN_BYTES - len(token))
        if not chunk:  # the orchestrator is gone already
            break
        token += chunk
    return token


class WorkerProcess:
    def __init__(self, symbol: str, home: Home, parent_fd: int | None = None,
                 token: bytes = b"") -> None:
        self.symbol = symbol
        self._parent_fd = parent_fd
        self._token = token  # proves who we are when we register; never logged
        self._ctx = zmq.Context()
        # No routing id of our own: the broker socket assigns one, and our token binds it
        # to our symbol when we register.
        self._broker = self._ctx.socket(zmq.DEALER)
        self._market = self._ctx.socket(zmq.SUB)
        for sock in (self._broker, self._market):
            sock.setsockopt(zmq.LINGER, 200)
            sock.setsockopt(zmq.MAXMSGSIZE, ZMQ_MAX_MESSAGE_BYTES)
        self._market.setsockopt(zmq.RCVHWM, MARKET_HWM)
        self._market.setsockopt(zmq.SUBSCRIBE, market_topic(symbol))
        self._market.setsockopt(zmq.SUBSCRIBE, HEARTBEAT_TOPIC)  # one broadcast for all
        self._market.connect(home.endpoint("market"))
        self._broker.connect(home.endpoint("broker"))
        self._stop_signal = False
        self._heard_from_orchestrator = time.monotonic()
        self.foreign_bars = 0

    def _send(self, message: Message) -> None:
        self._broker.send(encode(message, request_id(message)))

    def _send_actions(self, actions: list[Message]) -> None:
        """The runner's requests out, then logged (logging first would delay the orders)."""
        for action in actions:
            self._send(action)
        for action in actions:
            if isinstance(action, PlaceOrder):
                log.info("%s %s %s%s (%s%s)", action.side, action.type, action.quantity,
                         f" @ {action.price}" if action.price else "", action.client_order_id,
                         ", exit retry" if action.exit_retry else "")

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self._stop_signal = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        # A signal also writes to this pipe, so a SIGTERM wakes the poll at once: the loop
        # may then sleep until its next heartbeat instead of waking up just to check.
        self._wake_r, wake_w = socket.socketpair()
        wake_w.setblocking(False)
        self._wake_r.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        try:
            return self._run()
        finally:
            signal.set_wakeup_fd(-1)
            wake_w.close()
            self._wake_r.close()
            self._ctx.destroy(linger=200)

    def _run(self) -> int:
        self._send(Register(symbol=self.symbol, pid=os.getpid(), token=self._token))
        welcome = self._await_welcome()
        if welcome is None:
            log.error("no welcome from the orchestrator within %ss; exiting", _WELCOME_TIMEOUT_S)
            return EXIT_NO_ORCHESTRATOR
        try:
            strategies = [create(spec.name, spec.params) for spec in welcome.config.strategies]
        except StrategyError as exc:
            self._send(Goodbye(reason=f"bad strategy: {exc}"[:MAX_ERROR_CHARS]))
            log.error("bad strategy: %s", exc)
            return EXIT_CONFIG
        runner = Runner(welcome.config, welcome.rules, strategies, welcome.position,
                        welcome.open_orders, welcome.next_seq, welcome.last_decision_bar)
        for strategy in strategies:
            strategy.on_start()
        runner.warmup(welcome.history)
        return self._loop(runner, welcome.config.heartbeat_s, welcome.config.liveness)

    def _recv(self, sock: zmq.Socket[bytes]) -> tuple[str, Message] | None:
        """(the id of the request it answers, the message), or None if nothing came."""
        try:
            envelope, message = decode(sock.recv(zmq.NOBLOCK))
        except zmq.Again:
            return None
        except ProtocolError as exc:
            log.warning("dropped a bad message: %s", exc)
            return None
        if sock is self._broker:
            self._heard_from_orchestrator = time.monotonic()
        return envelope.id, message

    def _await_welcome(self) -> Welcome | None:
        deadline = time.monotonic() + _WELCOME_TIMEOUT_S
        while time.monotonic() < deadline and not self._stop_signal:
            if not self._broker.poll(100):
                continue
            received = self._recv(self._broker)
            message = received[1] if received else None
            if isinstance(message, Welcome):
                return message
            if isinstance(message, Error):
                log.error("orchestrator refused registration: %s", message.reason)
                return None
        return None

    def _loop(self, runner: Runner, heartbeat_s: float, liveness: int) -> int:
        poller = zmq.Poller()
        poller.register(self._broker, zmq.POLLIN)
        poller.register(self._market, zmq.POLLIN)
        poller.register(self._wake_r.fileno(), zmq.POLLIN)
        if self._parent_fd is not None:
            poller.register(self._parent_fd, zmq.POLLIN)
        next_beat = 0.0
        while True:
            # Sleep until a message, a signal, the next heartbeat or what the runner has to
            # try again: an idle worker wakes once per heartbeat period (the orchestrator's
            # broadcast, which it answers).
            wake = runner.wake_at()
            until = next_beat if wake is None else min(next_beat, wake)
            wait_ms = max(0, int((until - time.monotonic()) * 1000) + 1)
            ready = dict(poller.poll(wait_ms))
            if self._wake_r.fileno() in ready:
                with contextlib.suppress(BlockingIOError):
                    self._wake_r.recv(64)
            if self._parent_fd is not None and self._parent_fd in ready:
                log.error("the orchestrator exited: exiting (open orders stay in the journal)")
                return EXIT_NO_ORCHESTRATOR
            beat_heard = False
            if self._market in ready:
                beat_heard = self._drain_market(runner)
            if self._broker in ready:
                stop = self._drain_broker(runner)
                if stop is not None:
                    return self._stop(runner, stop.flatten)
            if self._stop_signal:
                return self._stop(runner, flatten=False)
            self._on_timer(runner)
            now = time.monotonic()
            # Answer the orchestrator's broadcast when ours is due within half a period, and
            # in any case wait for the next broadcast (our timer is only the fallback, at 1.5
            # periods): one wake-up per period for both heartbeats instead of two. (Keeping
            # our timer when we beat just before a broadcast would lock that phase: our beat
            # always just ahead of the broadcast, two wake-ups.)
            if beat_heard:
                if now >= next_beat - heartbeat_s / 2:
                    self._beat(runner)
                next_beat = now + heartbeat_s * 1.5
            elif now >= next_beat:
                next_beat = now + heartbeat_s
                self._beat(runner)
            if now - self._heard_from_orchestrator > heartbeat_s * liveness:
                log.error("no heartbeat from the orchestrator for %.1fs: exiting",
                          now - self._heard_from_orchestrator)
                return EXIT_NO_ORCHESTRATOR

    def _beat(self, runner: Runner) -> None:
        """Our heartbeat, with the stats status shows."""
        self._send(msgspec.structs.replace(runner.stats(), foreign_bars=self.foreign_bars))

    def _on_timer(self, runner: Runner) -> None:
        """What the runner has due without a bar: resends, cancels asked again, and the exit
        or entry that the answers just received allow (an exit does not wait for a bar)."""
        try:
            self._send_actions(runner.on_timer())
        except Exception as exc:
            _contained(runner, "the runner's timer", exc)

    def _drain_market(self, runner: Runner) -> bool:
        """Bars to the runner, its orders out; True if the orchestrator's heartbeat came."""
        self._heard_from_orchestrator = time.monotonic()  # bars and heartbeats alike
        beat = False
        for _ in range(1000):
            try:
                frame = self._market.recv(zmq.NOBLOCK)
            except zmq.Again:
                return beat
            try:
                _, message = decode_market(frame)
            except ProtocolError as exc:
                log.warning("dropped a bad market message: %s", exc)
                continue
            if not isinstance(message, BarMessage):
                beat = True  # the orchestrator's heartbeat: its arrival was all it had to say
                continue
            if message.bar.symbol != self.symbol:  # cannot happen with a correct topic filter
                self.foreign_bars += 1
                log.error("received a %s bar; ignored", message.bar.symbol)
                continue
            try:
                self._on_bar(runner, message.bar)
            except Exception as exc:
                _contained(runner, f"the bar of {iso(message.bar.open_time)}", exc)
        return beat

    def _on_bar(self, runner: Runner, bar: Bar) -> None:
        self._send_actions(runner.on_bar(bar))

    def _drain_broker(self, runner: Runner) -> StopWorker | None:
        while (received := self._recv(self._broker)) is not None:
            request, message = received
            if isinstance(message, OrderUpdate):
                try:
                    runner.on_update(message)
                except Exception as exc:
                    _contained(runner, f"order update {message.order.client_order_id}", exc)
            elif isinstance(message, StopWorker):
                return message
            elif isinstance(message, Error):
                runner.last_error = f"broker: {message.code}: {message.reason}"
                log.warning("%s", runner.last_error)
                _refused(runner, request, message.code)
            elif not isinstance(message, OrchestratorHeartbeat):
                log.warning("unexpected %s from the orchestrator", message.TYPE)
        return None

    def _stop(self, runner: Runner, flatten: bool) -> int:
        """Cancel open orders (and with flatten sell the position), then say goodbye."""
        log.info("stopping (flatten=%s)", flatten)
        for action in runner.cancel(list(runner.open_orders)):
            self._send(action)
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        tries, next_try = 0, 0.0
        while (now := time.monotonic()) < deadline:
            if runner.open_orders or runner.pending:
                pass  # a cancel or an exit in flight: its outcome first
            elif not (flatten and runner.holds_tradable()):
                break
            elif now >= next_try:
                # sold until flat (an exit may leave an EXPIRED remainder or be rejected),
                # with the exits' growing wait; a commanded exit, not a decision on a bar
                tries += 1
                next_try = now + backoff(tries)
                price = runner.last_price
                for action in runner.close_position(price, exit_retry=True) if price else []:
                    self._send(action)
            if self._broker.poll(100):
                self._drain_broker(runner)
        for strategy in runner.strategies:
            strategy.on_stop()
        self._send(Goodbye(reason="stopped on request"))
        log.info("stopped; position %s", runner.position)
        return EXIT_OK


def request_id(message: Message) -> str | None:
    """The envelope id of an order request, which the broker's reply carries back: an error
    reply then says which order or cancel it refused. None: a fresh random id."""
    if isinstance(message, PlaceOrder | CancelOrder):
        return f"{message.TYPE}:{message.client_order_id}"
    return None


def _refused(runner: Runner, request: str, code: str) -> None:
    kind, _, client_order_id = request.partition(":")
    if kind == CancelOrder.TYPE:
        runner.cancel_refused(client_order_id, code)
    elif kind == PlaceOrder.TYPE:
        runner.place_refused(client_order_id, code)


def _contained(runner: Runner, what: str, exc: Exception) -> None:
    """One message's handling failed: log it and show it in status; the loop goes on."""
    runner.last_error = f"{what}: {type(exc).__name__}: {exc}"
    log.exception("%s could not be handled", what)


def log_format(symbol: str, pid: int) -> str:
    return f"%(asctime)s {symbol} pid={pid} %(levelname)s %(message)s"


def lean_log_records() -> None:
    """Skip per-record work a worker's format never shows (the logging HOWTO's
    "Optimization"): the caller lookup, thread and process names. Every order and fill is
    logged, on the bar's path."""
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False


def main(argv: list[str] | None = None, token: bytes | None = None) -> int:
    """Run a worker; ``token`` is given by a forked start, else read from the orchestrator
    pipe of an exec'd one."""
    parser = argparse.ArgumentParser(prog="multibot-worker")
    parser.add_argument("--symbol", required=True)
    parser.add_argument("--home", required=True)
    args = parser.parse_args(argv)
    home = Home.at(args.home)
    try:
        from setproctitle import setproctitle

        setproctitle(f"multibot-worker {args.symbol} {home.root}")
    except ImportError:  # optional nicety
        pass
    lean_log_records()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format=log_format(args.symbol, os.getpid()))
    log.info("worker starting")
    parent_fd = orchestrator_pipe()
    if token is None:
        token = read_token(parent_fd)
    return WorkerProcess(args.symbol, home, parent_fd, token).run()


def run_forked(symbol: str, home: str, log_path: str, token: bytes) -> None:
    """Entry point of a worker forked by the orchestrator's forkserver."""
    os.setsid()  # a Ctrl-C on the orchestrator's terminal must not reach the workers
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.exit(main(["--symbol", symbol, "--home", home], token))
