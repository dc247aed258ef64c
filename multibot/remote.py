"""The client side of remote control (``--connect``): one CURVE request/reply with a remote
fleet. There is no plaintext variant."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.utils.monitor import recv_monitor_message

from multibot.client import exchange
from multibot.wire.endpoints import parse_tcp_endpoint, set_ipv6
from multibot.wire.home import Home
from multibot.wire.keystore import (
    KeyStoreError,
    check_name,
    check_public_key,
    clients_dir,
    load_keypair,
    load_public_key,
    parse_public_key,
    shell_safe_key,
)
from multibot.wire.protocol import ZMQ_MAX_MESSAGE_BYTES, ErrorCode, Message, ProtocolError

_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


def remote_request(endpoint: str, server_public_key: bytes, client_key_file: Path,
                   message: Message, timeout: float = 10.0) -> Message:
    """One request/reply with a remote fleet over CURVE; Error replies raise ProtocolError,
    no reply within ``timeout`` raises ProtocolError(TIMEOUT)."""
    address = parse_tcp_endpoint(endpoint)
    server_key = check_public_key(server_public_key)
    public, secret = load_keypair(client_key_file)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, ZMQ_MAX_MESSAGE_BYTES)
        sock.curve_serverkey = server_key
        sock.curve_publickey = public
        sock.curve_secretkey = secret
        set_ipv6(sock, address)
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | _HANDSHAKE_FAILED)
        try:
            sock.connect(address)
            deadline = time.monotonic() + timeout
            _await_handshake(monitor, address, public, timeout)
        finally:
            sock.disable_monitor()
            monitor.close(0)
        return exchange(
            sock, message, max(deadline - time.monotonic(), 0.001),
            f"no reply from {address} within {timeout:g}s after the CURVE handshake "
            "succeeded: the fleet may be stuck or overloaded")
    finally:
        sock.close(0)


def _await_handshake(monitor: zmq.Socket[bytes], address: str, client_public: bytes,
                     timeout: float) -> None:
    """Return once the CURVE handshake with ``address`` succeeded; a failed one raises at
    once (NOT_ALLOWED, saying which key is most likely wrong), none in time raises TIMEOUT."""
    if not monitor.poll(max(1, int(timeout * 1000))):
        raise ProtocolError(ErrorCode.TIMEOUT, f"no connection to {address} within "
                            f"{timeout:g}s: the fleet is down, not listening there (its "
                            "--control-tcp), or unreachable")
    event = recv_monitor_message(monitor)["event"]
    if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
        return
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        raise ProtocolError(ErrorCode.NOT_ALLOWED, f"{address} refused this client key "
                            f"({shell_safe_key(client_public)}): it is not authorized there "
                            "(`multibot keys authorize` on the fleet's machine)")
    raise ProtocolError(ErrorCode.NOT_ALLOWED, f"the CURVE handshake with {address} failed: "
                        "the server key is wrong (`multibot keys server` on the fleet's "
                        "machine prints the right one)")


@dataclass(frozen=True)
class RemoteTarget:
    """A remote fleet the CLI commands instead of the local one (``--connect``)."""

    endpoint: str
    server_public_key: bytes
    client_key_file: Path

    @classmethod
    def resolve(cls, home: Home, connect: str, key: str, server_key: str) -> RemoteTarget:
        """``key``: a client key name under ``<home>/keys/clients`` or a key file;
        ``server_key``: the server's public key (hex, as `multibot keys` prints it, or z85)
        or a file holding it."""
        key_path = Path(key).expanduser()
        with contextlib.suppress(KeyStoreError):  # a name, unless it is not one
            named = clients_dir(home) / f"{check_name(key)}.key_secret"
            key_path = named if named.exists() else key_path
        load_keypair(key_path)  # fail now, with a clear message
        server = Path(server_key).expanduser()
        public = load_public_key(server) if server.is_file() else parse_public_key(server_key)
        return cls(parse_tcp_endpoint(connect), public, key_path)

    def request(self, message: Message, timeout: float = 10.0) -> Message:
        return remote_request(self.endpoint, self.server_public_key, self.client_key_file,
                              message, timeout)
