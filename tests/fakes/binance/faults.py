"""Fault injection: ``fail(kind, times, method, path, **options)`` arms a fault for the next
``times`` matching requests. Thread-safe through the fake's lock, which the caller holds.

Kinds and their options:

- ``429`` (retry_after, msg, ban), ``418`` (retry_after, msg), ``-1021``, ``-2010``,
  ``-1013`` (msg): that error instead of the reply, before anything happens.
- ``5xx`` (status, body="html"|"json"): a 5xx before anything happens; nothing is booked.
- ``5xx_after_accept`` (status, body="json"): the order is booked at once, the reply is lost
  (503 -1007 "... execution status unknown.").
- ``late_booking`` (delay=2.0, status, body="json"): POST order only. The reply is the 5xx
  -1007 and nothing is booked yet; ``delay`` seconds later the matching engine books the
  order (checked and matched then, with the account and price of that moment), and from then
  on it is in GET order, openOrders, allOrders, myTrades and the user data stream as any
  order. Before that it is invisible everywhere (:meth:`FakeBinance.pending_bookings`
  counts them). A booking the engine rejects then (e.g. the balance is gone) never appears.
- ``never_booked`` (status, body="json"): POST order only. The same 5xx -1007 answer, but
  the request died in the backend: the order never appears.
- ``slow`` (delay): the reply comes ``delay`` seconds late.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.fakes.binance.errors import INSUFFICIENT, ApiError

ORDER_PATH = "/api/v3/order"
BEFORE = ("429", "418", "5xx", "-1021", "-2010", "-1013")
LATE = ("late_booking", "never_booked")  # answered 5xx after the API checks passed
ORDER_ONLY = ("5xx_after_accept", *LATE)
KINDS = (*BEFORE, "5xx_after_accept", *LATE, "slow")
_OPTIONS = {
    "late_booking": {"delay", "status", "body"}, "never_booked": {"status", "body"},
    "429": {"retry_after", "msg", "ban"}, "418": {"retry_after", "msg"},
    "5xx": {"status", "body"}, "5xx_after_accept": {"status", "body"},
    "-1021": {"msg"}, "-2010": {"msg"}, "-1013": {"msg"}, "slow": {"delay"},
}
UNKNOWN_STATUS = ("Timeout waiting for response from backend server. Send status unknown; "
                  "execution status unknown.")
HTML_5XX = "<html><head><title>{0} Service Unavailable</title></head><body>{0}</body></html>"


def normalize_path(path: str) -> str:
    """"order", "/order" and "/api/v3/order" all name /api/v3/order."""
    if path.startswith("/api/"):
        return path
    return "/api/v3/" + path.lstrip("/")


@dataclass
class Fault:
    kind: str
    remaining: int
    method: str | None
    path: str | None
    options: dict[str, Any] = field(default_factory=dict)

    def matches(self, method: str, path: str) -> bool:
        if self.kind in ORDER_ONLY and (method, path) != ("POST", ORDER_PATH):
            return False
        return ((self.method is None or self.method == method)
                and (self.path is None or self.path == path))


class Faults:
    def __init__(self) -> None:
        self._armed: list[Fault] = []

    def arm(self, kind: str, times: int, method: str | None, path: str | None,
            options: dict[str, Any]) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(KINDS)}")
        unknown = set(options) - _OPTIONS[kind]
        if unknown:
            raise ValueError(f"fault {kind!r} takes no option(s) {sorted(unknown)}")
        if times < 1:
            raise ValueError("times must be >= 1")
        status = int(options.get("status", 503))
        if (kind.startswith("5xx") or kind in LATE) and not 500 <= status <= 599:
            raise ValueError("status must be a 5xx")
        if float(options.get("delay", 0)) < 0:
            raise ValueError("delay must be >= 0")
        self._armed.append(Fault(kind, times, method.upper() if method else None,
                                 normalize_path(path) if path else None, dict(options)))

    def take(self, method: str, path: str) -> Fault | None:
        """The first armed fault matching this request, used up by one."""
        for fault in self._armed:
            if fault.matches(method, path):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._armed.remove(fault)
                return fault
        return None

    def clear(self) -> None:
        self._armed.clear()


def before_error(fault: Fault, now_ms: int) -> ApiError:
    """The reply of a fault that answers before the request is processed."""
    opts = fault.options
    if fault.kind == "429":
        retry = opts.get("retry_after", 1)
        return ApiError(429, -1003, opts.get("msg", "Too many requests; current limit of IP"
                                                    "(127.0.0.1) is exceeded."),
                        {"Retry-After": str(retry)})
    if fault.kind == "418":
        retry = opts.get("retry_after", 2)
        until = now_ms + int(float(retry) * 1000)
        return ApiError(418, -1003, opts.get("msg", f"Way too many requests; IP(127.0.0.1) "
                                                    f"banned until {until}. Please use the "
                                                    "websocket for live updates to avoid bans."),
                        {"Retry-After": str(retry)})
    if fault.kind == "-1021":
        return ApiError(400, -1021, opts.get(
            "msg", "Timestamp for this request is outside of the recvWindow."))
    if fault.kind == "-2010":
        return ApiError(400, -2010, opts.get("msg", INSUFFICIENT))
    if fault.kind == "-1013":
        return ApiError(400, -1013, opts.get("msg", "Filter failure: LOT_SIZE"))
    raise ValueError(f"{fault.kind} is not answered before processing")


def server_error(fault: Fault) -> tuple[int, str, str]:
    """(status, body, content type) of a 5xx fault: JSON -1007 or an HTML proxy page."""
    status = int(fault.options.get("status", 503))
    default = "html" if fault.kind == "5xx" else "json"
    if fault.options.get("body", default) == "html":
        return status, HTML_5XX.format(status), "text/html"
    return status, f'{{"code":-1007,"msg":"{UNKNOWN_STATUS}"}}', "application/json"


@dataclass(frozen=True)
class LateBooking:
    """An order request the API gave up on that the matching engine books at ``due``."""

    due: float  # time.monotonic()
    symbol: str
    params: dict[str, str]


class LateBookings:
    def __init__(self) -> None:
        self._pending: list[LateBooking] = []

    def add(self, booking: LateBooking) -> None:
        self._pending.append(booking)

    def take_due(self, now: float) -> list[LateBooking]:
        due = [b for b in self._pending if b.due <= now]
        self._pending = [b for b in self._pending if b.due > now]
        return due

    def __len__(self) -> int:
        return len(self._pending)
