"""A control command as one unit, and what commands may use of the fleet (``ControlPorts``)."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from multibot.wire.protocol import (
    ErrorCode,
    Message,
    ProtocolError,
    StatusReport,
    SymbolResult,
)
from multibot.wire.settings import FleetSettings, SettingsError, normalize_symbols
from orchestrator.ports import Trading
from orchestrator.supervisor import State, Supervisor, WorkerHandle

RequestT = TypeVar("RequestT", bound=Message)
CheckedT = TypeVar("CheckedT")


@dataclass(frozen=True)
class ControlPorts:
    """What control commands may use of the fleet, and nothing else."""

    home: str  # the fleet's home directory
    settings: FleetSettings
    supervisor: Supervisor
    trading: Trading
    status: Callable[[], StatusReport]
    shutting_down: Callable[[], bool]
    down: Callable[[bool], Awaitable[None]]  # stop every worker (flatten?), then the fleet


class Command(abc.ABC, Generic[RequestT, CheckedT]):
    """Answers one request type: ``validate`` refuses or prepares it (changing nothing),
    ``execute`` carries it out and returns the reply. A refusal is a ``ProtocolError``."""

    request: ClassVar[type[Message]]
    while_shutting_down: ClassVar[bool] = False  # answered even while the fleet stops

    def __init__(self, ports: ControlPorts) -> None:
        self.ports = ports

    @abc.abstractmethod
    def validate(self, request: RequestT) -> CheckedT: ...

    @abc.abstractmethod
    async def execute(self, checked: CheckedT) -> Message: ...


class Unchecked(Command[RequestT, RequestT]):
    """A command whose request needs no checks beyond the wire's own."""

    def validate(self, request: RequestT) -> RequestT:
        return request


def checked_symbols(raw: list[str]) -> list[str]:
    try:
        return normalize_symbols(raw)
    except SettingsError as exc:
        raise ProtocolError(ErrorCode.BAD_CONFIG, str(exc)) from None


def symbol_result(handle: WorkerHandle, error: str = "") -> SymbolResult:
    if not error and handle.state not in (State.RUNNING, State.STOPPED):
        error = handle.last_error
    return SymbolResult(symbol=handle.symbol, state=handle.state.value, pid=handle.pid,
                        error=error)
