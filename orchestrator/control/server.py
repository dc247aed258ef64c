"""The control socket's server: admission, one task per request, dispatch to its command."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import zmq
import zmq.asyncio

from multibot.wire.protocol import (
    Error,
    ErrorCode,
    Message,
    ProtocolError,
    decode,
    encode,
    error_reply,
)
from orchestrator.control.base import Command, ControlPorts
from orchestrator.control.down import DownCommand
from orchestrator.control.kill import KillCommand
from orchestrator.control.logs import LogsCommand
from orchestrator.control.ping import PingCommand
from orchestrator.control.status import StatusCommand
from orchestrator.control.up import UpCommand
from orchestrator.ports import Spawn

COMMANDS: tuple[type[Command[Any, Any]], ...] = (
    PingCommand, StatusCommand, UpCommand, KillCommand, DownCommand, LogsCommand)
_MAX_IN_FLIGHT_PER_PEER = 8  # a flooding client cannot starve the others or grow memory
_MAX_IN_FLIGHT = 256
log = logging.getLogger(__name__)


class ControlServer:
    def __init__(self, ports: ControlPorts) -> None:
        self._shutting_down = ports.shutting_down
        self._commands: dict[type[Message], Command[Any, Any]] = {
            command.request: command(ports) for command in COMMANDS}
        self._in_flight: dict[bytes, int] = {}

    # --- the socket ---------------------------------------------------------------------------

    async def serve(self, sock: zmq.asyncio.Socket, spawn: Spawn) -> None:
        """Read requests forever; each is answered by its own task (``spawn``).

        Nothing one request does ends this loop: what escapes is logged and answered."""
        while True:
            frames = await sock.recv_multipart()
            try:
                self._take(sock, frames, spawn)
            except Exception as exc:
                log.exception("control request could not be taken")
                _send(sock, frames[0],
                      Error(code=ErrorCode.INTERNAL, reason=f"{type(exc).__name__}: {exc}"))

    def _take(self, sock: zmq.asyncio.Socket, frames: list[bytes], spawn: Spawn) -> None:
        if len(frames) != 2:
            _send(sock, frames[0],
                  Error(code=ErrorCode.MALFORMED, reason="expected exactly one frame"))
            return
        identity, payload = frames
        try:
            envelope, message = decode(payload)
            self._admit(identity)
        except ProtocolError as exc:
            _send(sock, identity, error_reply(exc))
            return
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
        try:
            data = encode(reply, msg_id)
        except ProtocolError as exc:  # a reply the wire cannot carry: say so instead
            log.error("control reply %s cannot be sent: %s", reply.TYPE, exc)
            data = encode(error_reply(exc), msg_id)
        await sock.send_multipart([identity, data])

    # --- requests -----------------------------------------------------------------------------

    async def handle(self, message: Message) -> Message:
        command = self._commands.get(type(message))
        if self._shutting_down() and not (command and command.while_shutting_down):
            raise ProtocolError(ErrorCode.SHUTTING_DOWN, "the fleet is shutting down")
        if command is None:
            raise ProtocolError(ErrorCode.NOT_ALLOWED,
                                f"{message.TYPE!r} is not a control request")
        return await command.execute(command.validate(message))


def _send(sock: zmq.asyncio.Socket, identity: bytes, reply: Message) -> None:
    """A reply that needs no waiting (the ROUTER drops it if the peer is gone or full)."""
    with contextlib.suppress(zmq.ZMQError):
        sock.send_multipart([identity, encode(reply)], flags=zmq.NOBLOCK)
