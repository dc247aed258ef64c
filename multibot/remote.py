"""The client side of remote control (``--connect``): one CURVE request/reply with a remote
fleet. There is no plaintext variant."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import zmq

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
)
from multibot.wire.protocol import ZMQ_MAX_MESSAGE_BYTES, Message


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
        sock.connect(address)
        return exchange(
            sock, message, timeout,
            f"no reply from {address} within {timeout:g}s: the fleet may be down or "
            "unreachable, or (most likely) the server key is wrong or this client key "
            f"({public.decode()}) is not authorized there (`multibot keys authorize`)")
    finally:
        sock.close(0)


@dataclass(frozen=True)
class RemoteTarget:
    """A remote fleet the CLI commands instead of the local one (``--connect``)."""

    endpoint: str
    server_public_key: bytes
    client_key_file: Path

    @classmethod
    def resolve(cls, home: Home, connect: str, key: str, server_key: str) -> RemoteTarget:
        """``key``: a client key name under ``<home>/keys/clients`` or a key file;
        ``server_key``: the server's z85 public key or a file holding it."""
        key_path = Path(key).expanduser()
        with contextlib.suppress(KeyStoreError):  # a name, unless it is not one
            named = clients_dir(home) / f"{check_name(key)}.key_secret"
            key_path = named if named.exists() else key_path
        load_keypair(key_path)  # fail now, with a clear message
        server = Path(server_key).expanduser()
        public = (load_public_key(server) if server.is_file()
                  else check_public_key(server_key.encode()))
        return cls(parse_tcp_endpoint(connect), public, key_path)

    def request(self, message: Message, timeout: float = 10.0) -> Message:
        return remote_request(self.endpoint, self.server_public_key, self.client_key_file,
                              message, timeout)
