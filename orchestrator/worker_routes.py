"""Who may speak for a symbol on the broker socket, and where its messages go.

Each start of a worker gets a fresh random token that only that process receives (over the
pipe its start uses: never argv, never the environment). The first connection that registers
with the symbol's current token becomes the symbol's route: the symbol's messages are accepted
from that connection alone, and replies and commands for the symbol go to it alone. ZeroMQ
assigns the routing ids (workers do not name themselves, and the broker socket refuses a
peer that claims an id already in use), so no peer can take over a worker's route.

Tokens are compared in constant time and never logged, shown or journaled.
"""

from __future__ import annotations

import hmac
import secrets

from multibot.wire.protocol import WORKER_TOKEN_BYTES, ErrorCode, ProtocolError


class WorkerRoutes:
    def __init__(self) -> None:
        self._tokens: dict[str, bytes] = {}
        self._route_of: dict[str, bytes] = {}
        self._symbol_of: dict[bytes, str] = {}

    def __repr__(self) -> str:  # never the tokens
        return f"WorkerRoutes({len(self._route_of)} routes)"

    def issue(self, symbol: str) -> bytes:
        """The token of a new worker process of ``symbol``; the previous token and its route
        are void from now on."""
        self.revoke(symbol)
        token = secrets.token_bytes(WORKER_TOKEN_BYTES)
        self._tokens[symbol] = token
        return token

    def revoke(self, symbol: str) -> None:
        """The symbol's worker is gone: nobody speaks for it until the next ``issue``."""
        self._tokens.pop(symbol, None)
        route = self._route_of.pop(symbol, None)
        if route is not None:
            self._symbol_of.pop(route, None)

    def admit(self, symbol: str, token: bytes, route: bytes) -> None:
        """Bind ``route`` to ``symbol`` if ``token`` is the symbol's current one and no other
        connection registered with it; ProtocolError(NOT_ALLOWED) otherwise."""
        expected = self._tokens.get(symbol)
        if expected is None or not hmac.compare_digest(expected, token):
            raise ProtocolError(ErrorCode.NOT_ALLOWED,
                                f"{symbol}: not the token of its current worker")
        bound = self._route_of.get(symbol)
        if bound is not None and bound != route:
            raise ProtocolError(ErrorCode.NOT_ALLOWED,
                                f"{symbol}: its worker registered on another connection")
        speaks_for = self._symbol_of.get(route)
        if speaks_for is not None and speaks_for != symbol:
            raise ProtocolError(ErrorCode.NOT_ALLOWED,
                                f"this connection speaks for {speaks_for}, not {symbol}")
        self._route_of[symbol] = route
        self._symbol_of[route] = symbol

    def symbol_of(self, route: bytes) -> str | None:
        """The symbol whose registered worker is on this connection, if any."""
        return self._symbol_of.get(route)

    def route_of(self, symbol: str) -> bytes | None:
        """The connection of the symbol's registered worker, if any."""
        return self._route_of.get(symbol)
