"""TCP endpoints of remote control: ``tcp://HOST:PORT`` only, and only ever with CURVE."""

from __future__ import annotations

import re

import zmq
import zmq.asyncio

from multibot.errors import ErrorCode, MultibotError

_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?|\*)$")


class EndpointError(MultibotError, ValueError):
    """Not a usable TCP endpoint (only ``tcp://HOST:PORT`` or ``HOST:PORT``, always CURVE)."""

    CODE = ErrorCode.BAD_CONFIG


def parse_tcp_endpoint(text: str, for_bind: bool = False) -> str:
    """``tcp://HOST:PORT`` or ``HOST:PORT`` → ``tcp://HOST:PORT``; anything else is refused.
    With ``for_bind``, HOST may be ``*`` and PORT ``*``/``0`` (any free port).
    There is no plaintext variant: TCP sockets are only ever made with CURVE."""
    raw = text.strip()
    scheme, sep, rest = raw.partition("://")
    if not sep:
        scheme, rest = "tcp", raw
    if scheme.lower() != "tcp":
        raise EndpointError(f"{text!r}: only tcp:// endpoints can be remote (always CURVE)")
    host, colon, port = rest.rpartition(":")
    if not colon or not _HOST.match(host) or (host == "*" and not for_bind):
        raise EndpointError(f"{text!r}: expected tcp://HOST:PORT, e.g. tcp://10.0.0.5:7070")
    if for_bind and port in ("*", "0"):
        return f"tcp://{host}:*"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise EndpointError(f"{text!r}: the port must be 1-65535")
    return f"tcp://{host}:{int(port)}"


def set_ipv6(sock: zmq.SyncSocket | zmq.asyncio.Socket, endpoint: str) -> None:
    if endpoint.startswith("tcp://["):
        sock.setsockopt(zmq.IPV6, 1)
