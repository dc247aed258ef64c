"""Handlers for the control socket: what `multibot up/status/kill/down` ask of the fleet."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import msgspec
import zmq.asyncio

from multibot.wire.protocol import (
    Down,
    Error,
    ErrorCode,
    Kill,
    KillResult,
    Message,
    Ok,
    Ping,
    Pong,
    ProtocolError,
    Status,
    StrategySpec,
    SymbolPlan,
    SymbolResult,
    Up,
    UpResult,
    WorkerConfig,
    decode,
    encode,
    error_reply,
)
from multibot.wire.settings import SettingsError, normalize_symbols
from orchestrator.broker.base import NotReconciled
from orchestrator.feeds.base import FeedError, UnknownSymbol
from orchestrator.plans import check_plan
from orchestrator.status import StatusBuilder
from orchestrator.supervisor import ACTIVE, State, WorkerHandle

if TYPE_CHECKING:
    from orchestrator.fleet import Fleet

DEFAULT_STRATEGY = StrategySpec(name="sma_cross")
_MAX_IN_FLIGHT_PER_PEER = 8  # a flooding client cannot starve the others or grow memory
_MAX_IN_FLIGHT = 256
log = logging.getLogger(__name__)


def _result(handle: WorkerHandle, error: str = "") -> SymbolResult:
    if not error and handle.state not in (State.RUNNING, State.STOPPED):
        error = handle.last_error
    return SymbolResult(symbol=handle.symbol, state=handle.state.value, pid=handle.pid,
                        error=error)


class ControlHandlers:
    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self._status = StatusBuilder(fleet)
        self._in_flight: dict[bytes, int] = {}
        self._preparing: set[str] = set()  # symbols between `up` and their start

    # --- the socket ---------------------------------------------------------------------------

    async def serve(self, sock: zmq.asyncio.Socket,
                    spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        """Read requests forever; each is answered by its own task (``spawn``)."""
        while True:
            frames = await sock.recv_multipart()
            if len(frames) != 2:
                reply = Error(code=ErrorCode.MALFORMED, reason="expected exactly one frame")
                await sock.send_multipart([frames[0], encode(reply)])
                continue
            identity, payload = frames
            try:
                envelope, message = decode(payload)
                self._admit(identity)
            except ProtocolError as exc:
                await sock.send_multipart([identity, encode(error_reply(exc))])
                continue
            spawn(self._answer(sock, identity, envelope.id, message))

    def _admit(self, identity: bytes) -> None:
        mine = self._in_flight.get(identity, 0)
        if mine >= _MAX_IN_FLIGHT_PER_PEER or sum(self._in_flight.values()) >= _MAX_IN_FLIGHT:
            raise ProtocolError(ErrorCode.BUSY, "too many requests in flight; retry later")
        self._in_flight[identity] = mine + 1

    async def _answer(self, sock: zmq.asyncio.Socket, identity: bytes, msg_id: str,
                      message: Message) -> None:
        try:
            reply = await self.handle(message)
        except ProtocolError as exc:
            reply = error_reply(exc)
        except Exception as exc:  # a bad request must never take the orchestrator down
            log.exception("control request %s failed", message.TYPE)
            reply = Error(code=ErrorCode.INTERNAL, reason=f"{type(exc).__name__}: {exc}")
        finally:
            left = self._in_flight.get(identity, 1) - 1
            if left > 0:
                self._in_flight[identity] = left
            else:
                self._in_flight.pop(identity, None)
        await sock.send_multipart([identity, encode(reply, msg_id)])

    # --- requests -------------------------------------------------------------------------

    async def handle(self, message: Message) -> Message:
        if isinstance(message, Ping):
            return Pong(pid=os.getpid(), home=str(self._fleet.home.root))
        if isinstance(message, Status):
            return self._status.report()
        if self._fleet.shutting_down:
            raise ProtocolError(ErrorCode.SHUTTING_DOWN, "the fleet is shutting down")
        if isinstance(message, Up):
            return await self._up(message)
        if isinstance(message, Kill):
            return await self._kill(message)
        if isinstance(message, Down):
            await self._fleet.stop_for_down(message.flatten)
            return Ok(detail="fleet stopped")
        raise ProtocolError(ErrorCode.NOT_ALLOWED, f"{message.TYPE!r} is not a control request")

    def _check_matches_fleet(self, up: Up) -> None:
        settings = self._fleet.settings
        for option, asked, running in (("mode", up.mode, settings.mode),
                                       ("feed", up.feed, settings.feed),
                                       ("interval", up.interval, settings.interval)):
            if asked and asked != running:
                raise ProtocolError(
                    ErrorCode.CONFLICT,
                    f"the running fleet uses --{option} {running}, not {asked}; "
                    "run `multibot down` first to change it",
                )

    def _symbols(self, raw: list[str]) -> list[str]:
        try:
            return normalize_symbols(raw)
        except SettingsError as exc:
            raise ProtocolError(ErrorCode.BAD_CONFIG, str(exc)) from None

    @staticmethod
    def _plan(up: Up, symbol: str) -> tuple[SymbolPlan, int]:
        """The symbol's own plan, else the request-wide fields; validated, with its warmup."""
        plan = up.plans.get(symbol) or SymbolPlan(
            strategies=up.strategies, stake=up.stake, order_type=up.order_type)
        if not plan.strategies:
            plan = msgspec.structs.replace(plan, strategies=[DEFAULT_STRATEGY])
        try:
            return plan, check_plan(symbol, plan)
        except SettingsError as exc:
            raise ProtocolError(ErrorCode.BAD_CONFIG, str(exc)) from None

    async def _up(self, up: Up) -> UpResult:
        fleet = self._fleet
        self._check_matches_fleet(up)
        symbols = self._symbols(up.symbols)
        unknown = []
        for symbol in symbols:
            try:
                fleet.feed.validate(symbol)
            except UnknownSymbol as exc:
                unknown.append(str(exc))
        if unknown:
            raise ProtocolError(ErrorCode.UNKNOWN_SYMBOL, "; ".join(unknown))
        plans = {symbol: self._plan(up, symbol) for symbol in symbols}
        results: dict[str, SymbolResult] = {}
        started: list[str] = []
        for symbol in symbols:
            handle = fleet.supervisor.handles.get(symbol)
            if handle is not None and handle.state in ACTIVE | {State.STOPPING}:
                results[symbol] = _result(handle, f"already {handle.state.value.lower()}")
                continue
            if symbol in self._preparing:  # another `up` of it is reconciling right now
                results[symbol] = SymbolResult(symbol=symbol, state="STARTING",
                                               error="already being started")
                continue
            plan, warmup = plans[symbol]
            config = WorkerConfig(symbol=symbol, strategies=plan.strategies, stake=plan.stake,
                                  order_type=plan.order_type)
            self._preparing.add(symbol)
            try:
                refusal = await self._prepare(symbol)
            finally:
                self._preparing.discard(symbol)
            if refusal:
                results[symbol] = _result(fleet.supervisor.refuse(symbol, config, warmup,
                                                                  refusal))
                continue
            await fleet.supervisor.start(symbol, config, warmup)
            started.append(symbol)
        waited = await asyncio.gather(
            *(fleet.supervisor.wait_started(symbol, up.wait_s) for symbol in started)
        )
        for handle in waited:
            results[handle.symbol] = _result(handle)
        return UpResult(results=[results[s] for s in symbols])

    async def _prepare(self, symbol: str) -> str:
        """Market data, rules and (on an exchange) reconciliation; why it cannot trade, or ""."""
        fleet = self._fleet
        try:
            rules = await fleet.feed.add(symbol)
        except FeedError as exc:
            return f"no market data: {exc}"
        fleet.rules[symbol] = rules
        fleet.broker.add_rules(rules)
        try:
            await fleet.broker.reconcile(symbol)
        except NotReconciled as exc:
            fleet.feed.remove(symbol)
            return f"not reconciled with the exchange: {exc}"
        return ""

    async def _kill(self, kill: Kill) -> KillResult:
        fleet = self._fleet
        symbols = self._symbols(kill.symbols)
        handles = fleet.supervisor.handles
        not_running = [s for s in symbols if s not in handles or handles[s].state == State.STOPPED]
        if not_running:
            running = sorted(s for s, h in handles.items() if h.state != State.STOPPED)
            raise ProtocolError(
                ErrorCode.NOT_RUNNING,
                f"not running: {', '.join(not_running)}; running: {', '.join(running) or 'none'}",
            )
        stopped = await asyncio.gather(
            *(fleet.supervisor.stop(symbol, kill.flatten) for symbol in symbols)
        )
        for symbol in symbols:
            fleet.feed.remove(symbol)
        return KillResult(results=[_result(handle) for handle in stopped])

