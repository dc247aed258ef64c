"""Fault injection: ``fail(kind, times, method, path, **options)`` arms a fault for the next
``times`` matching requests. A fault either replaces the reply before anything happens, or
(``5xx_after_accept``) lets the order through and then loses the reply, or (``slow``) delays
it. Thread-safe through the fake's lock, which the caller holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.fakes.binance.errors import INSUFFICIENT, ApiError

ORDER_PATH = "/api/v3/order"
BEFORE = ("429", "418", "5xx", "-1021", "-2010", "-1013")
KINDS = (*BEFORE, "5xx_after_accept", "slow")
_OPTIONS = {
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
        if self.kind == "5xx_after_accept" and (method, path) != ("POST", ORDER_PATH):
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
        if kind.startswith("5xx") and not 500 <= status <= 599:
            raise ValueError("status must be a 5xx")
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
    default = "json" if fault.kind == "5xx_after_accept" else "html"
    if fault.options.get("body", default) == "html":
        return status, HTML_5XX.format(status), "text/html"
    return status, f'{{"code":-1007,"msg":"{UNKNOWN_STATUS}"}}', "application/json"
