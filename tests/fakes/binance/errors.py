"""Binance's error replies, and the number formatting every response shares."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

EIGHT = Decimal("0.00000001")


class ApiError(Exception):
    """A Binance error reply: HTTP status, Binance code and message, extra headers."""

    def __init__(self, status: int, code: int, msg: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status} code {code}: {msg}")
        self.status = status
        self.code = code
        self.msg = msg
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        return {"code": self.code, "msg": self.msg}


class FakeBinanceError(ApiError):
    """Raised to the test by :meth:`FakeBinance.place_external_order` when Binance would
    have rejected the order."""


def bad_request(code: int, msg: str) -> ApiError:
    return ApiError(400, code, msg)


def mandatory(name: str) -> ApiError:
    return bad_request(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, "
                              "or malformed.")


def illegal(name: str, legal: str) -> ApiError:
    return bad_request(-1100, f"Illegal characters found in parameter '{name}'; legal range is "
                              f"'{legal}'.")


def invalid_symbol() -> ApiError:
    return bad_request(-1121, "Invalid symbol.")


def filter_failure(name: str) -> ApiError:
    return bad_request(-1013, f"Filter failure: {name}")


# -2010 NEW_ORDER_REJECTED has many causes; each has its own message
INSUFFICIENT = "Account has insufficient balance for requested action."
MARKET_CLOSED = "Market is closed."
DUPLICATE = "Duplicate order sent."
# Binance documents these as "Account has too many open orders on the symbol / exchange." but
# answers with the filter's name (seen in the wild as -2010, not -1013)
MAX_NUM_ORDERS = "Filter failure: MAX_NUM_ORDERS"
TOO_MANY_ORDERS = "Filter failure: EXCHANGE_MAX_NUM_ORDERS"


def rejected(msg: str) -> ApiError:
    """-2010 (HTTP 400) with the cause's own message."""
    return bad_request(-2010, msg)


def f8(value: Decimal) -> str:
    """Binance's 8-decimal string ("0.00100000"); the values are exact to 8 decimals already,
    so rounding down only guards against a stray longer product."""
    return f"{value.quantize(EIGHT, rounding=ROUND_DOWN):f}"


def floor8(value: Decimal) -> Decimal:
    return value.quantize(EIGHT, rounding=ROUND_DOWN)
