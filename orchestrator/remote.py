"""The server side of remote control over TCP: CURVE-encrypted, key-authenticated.

``bind_curve_router`` is the only way to a TCP control socket, and it refuses to bind unless
a ZAP handler (``start_authenticator``) runs that admits only the keys authorized in
``<home>/keys/authorized/`` (re-read on change: ``multibot keys revoke`` takes effect for
the next connection). The client side is ``multibot.remote``.
"""

from __future__ import annotations

import logging
import time
import weakref
from pathlib import Path

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils import z85

from multibot.wire.endpoints import parse_tcp_endpoint, set_ipv6
from multibot.wire.home import Home
from multibot.wire.keystore import (
    KeyStoreError,
    authorized_dir,
    ensure_server_keys,
    load_public_key,
    private_dir,
)
from multibot.wire.protocol import ZMQ_MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

ZAP_DOMAIN = "multibot-control"
_DENIED_LOG_S = 60.0


class _AuthorizedKeys:
    """The authorized public keys, re-read whenever the directory changes."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._stamp: tuple[tuple[str, int], ...] | None = None
        self._keys: dict[bytes, str] = {}

    def name_of(self, key: bytes) -> str | None:
        paths = sorted(self._directory.glob("*.key"))
        stamp = tuple((p.name, p.stat().st_mtime_ns) for p in paths)
        if stamp != self._stamp:
            keys = {}
            for path in paths:
                try:
                    keys[z85.decode(load_public_key(path))] = path.stem
                except KeyStoreError as exc:
                    log.warning("ignoring an authorized key: %s", exc)
            self._keys, self._stamp = keys, stamp
        return self._keys.get(key)


class CurveAuthenticator(AsyncioAuthenticator):
    """Admits CURVE clients with an authorized key on the control domain and nothing else
    there; other sockets of the context (NULL, no domain) are not its business.
    Never raises: errors are logged and the connection is denied."""

    def __init__(self, ctx: zmq.asyncio.Context, home: Home) -> None:
        super().__init__(ctx, log=logging.getLogger(f"{__name__}.zap"))
        self.keys = _AuthorizedKeys(private_dir(authorized_dir(home)))
        self._denied_at: dict[tuple[str, bytes], float] = {}

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        request_id = msg[1] if len(msg) > 1 else None
        try:
            status, text, user = self._decide(msg)
        except Exception:
            log.exception("ZAP request failed; connection denied")
            status, text, user = b"500", b"internal error", ""
        if request_id is not None:
            try:
                self._send_zap_reply(request_id, status, text, user)
            except zmq.ZMQError as exc:
                log.error("cannot answer a ZAP request: %s", exc)

    def _decide(self, msg: list[bytes]) -> tuple[bytes, bytes, str]:
        if len(msg) < 6 or msg[0] != b"1.0":
            return b"400", b"bad ZAP request", ""
        domain, address = msg[2].decode(errors="replace"), msg[3].decode(errors="replace")
        mechanism, credentials = msg[5], msg[6:]
        if domain != ZAP_DOMAIN:
            allowed = mechanism == b"NULL"  # local ipc sockets: guarded by file permissions
            return (b"200", b"OK", "local") if allowed else (b"400", b"denied", "")
        if mechanism == b"CURVE" and len(credentials) == 1:
            name = self.keys.name_of(credentials[0])
            if name is not None:
                log.info("remote control client %r connected from %s", name, address)
                return b"200", b"OK", name
        self._warn_denied(address, mechanism, credentials[0] if credentials else b"")
        return b"400", b"not authorized", ""

    def _warn_denied(self, address: str, mechanism: bytes, key: bytes) -> None:
        """Once a minute per (address, key): a denied client retries every 100 ms."""
        now, seen = time.monotonic(), (address, key)
        if now - self._denied_at.get(seen, -_DENIED_LOG_S) < _DENIED_LOG_S:
            return
        if len(self._denied_at) > 1000:
            self._denied_at.clear()
        self._denied_at[seen] = now
        who = z85.encode(key).decode() if len(key) == 32 else "no key"
        log.warning("remote control: denied %s client %s from %s (key not authorized)",
                    mechanism.decode(errors="replace"), who, address)


# the authenticator serving each context: bind_curve_router refuses a context without one
_AUTHENTICATORS: weakref.WeakKeyDictionary[zmq.asyncio.Context, CurveAuthenticator] = (
    weakref.WeakKeyDictionary())


def start_authenticator(ctx: zmq.asyncio.Context, home: Home) -> AsyncioAuthenticator:
    """Start the ZAP handler of ``ctx`` (in the running event loop); ``stop()`` it before
    destroying the context."""
    auth = CurveAuthenticator(ctx, home)
    auth.start()
    _AUTHENTICATORS[ctx] = auth
    return auth


def _require_authenticator(ctx: zmq.asyncio.Context) -> None:
    auth = _AUTHENTICATORS.get(ctx)
    if auth is None or auth.zap_socket is None:
        raise RuntimeError("start_authenticator(ctx, home) must run before bind_curve_router: "
                           "without it any CURVE key would be admitted")


def bind_curve_router(ctx: zmq.asyncio.Context, home: Home, endpoint: str) -> zmq.asyncio.Socket:
    """A ROUTER on ``endpoint`` (TCP, CURVE server with this home's key, only authorized
    clients). Its actual address is ``sock.getsockopt(zmq.LAST_ENDPOINT)``."""
    address = parse_tcp_endpoint(endpoint, for_bind=True)
    _require_authenticator(ctx)
    public, secret = ensure_server_keys(home)
    sock = ctx.socket(zmq.ROUTER)
    try:
        sock.setsockopt(zmq.LINGER, 100)
        sock.setsockopt(zmq.MAXMSGSIZE, ZMQ_MAX_MESSAGE_BYTES)
        sock.setsockopt(zmq.HANDSHAKE_IVL, 10_000)
        sock.setsockopt_string(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
        if hasattr(zmq, "ZAP_ENFORCE_DOMAIN"):  # no ZAP handler → no connection
            sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True
        set_ipv6(sock, address)
        sock.bind(address)
    except BaseException:
        sock.close(0)
        raise
    log.info("remote control on %s (CURVE only; server public key %s)",
             sock.getsockopt_string(zmq.LAST_ENDPOINT), public.decode())
    return sock


