"""Fleet-wide settings and input normalisation shared by the CLI and the orchestrator."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

import msgspec

from multibot.errors import ErrorCode, MultibotError

MODES = ("paper", "testnet", "live")
FEEDS = ("replay", "synthetic", "binance")
ORDER_TYPES = ("MARKET", "LIMIT")
DEFAULT_SPEED = 10.0  # replay bars per second: with 1m bars, trades show up within a minute
_SYMBOL_TEXT = re.compile(r"^[A-Z0-9]{2,20}$")


class SettingsError(MultibotError, ValueError):
    """Bad fleet settings or arguments; the message says which and why."""

    CODE = ErrorCode.BAD_CONFIG


class FleetSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    mode: str = "paper"
    feed: str = "replay"
    interval: str = "1m"
    speed: float = DEFAULT_SPEED
    seed: int = 7
    fee_rate: str = "0.001"
    slippage_bps: str = "2"
    max_restarts: int = 5
    restart_window_s: float = 60.0
    grace_s: float = 5.0
    control_tcp: str = ""  # e.g. "tcp://0.0.0.0:7070": remote control, CURVE only; "" = off
    # Binance endpoints ("" = the network's real ones) and where the API keys are; the keys
    # themselves never travel in settings (settings are on the daemon's argv).
    rest_url: str = ""
    stream_url: str = ""
    key_file: str = ""
    confirm_live: bool = False

    @property
    def network(self) -> str:
        """Which Binance the fleet talks to: "live" (also paper on the binance feed: public
        market data only) or "testnet"."""
        return "testnet" if self.mode == "testnet" else "live"

    def check(self) -> None:
        if self.mode not in MODES:
            raise SettingsError(f"unknown mode {self.mode!r}; one of {', '.join(MODES)}")
        if self.feed not in FEEDS:
            raise SettingsError(f"unknown feed {self.feed!r}; one of {', '.join(FEEDS)}")
        if self.feed == "binance":
            from multibot.market.intervals import BINANCE_INTERVAL_MS

            if self.interval not in BINANCE_INTERVAL_MS:
                raise SettingsError(f"--interval {self.interval!r} is not a Binance kline "
                                    f"interval; one of {', '.join(BINANCE_INTERVAL_MS)}")
        if self.mode != "paper" and self.feed != "binance":
            raise SettingsError(
                f"--mode {self.mode} trades on Binance and needs --feed binance (its prices), "
                f"not --feed {self.feed}"
            )
        if self.mode == "live" and not self.confirm_live:
            raise SettingsError(
                "--mode live trades real money on Binance: add --confirm-live to say so "
                "(or try --mode testnet first)"
            )
        for name, url, schemes in (("rest_url", self.rest_url, ("http://", "https://")),
                                   ("stream_url", self.stream_url, ("ws://", "wss://"))):
            if url and not url.startswith(schemes):
                raise SettingsError(f"{name} must start with {' or '.join(schemes)}: {url!r}")
        if not 0 < self.speed <= 100_000:
            raise SettingsError(f"--speed must be in (0, 100000] bars/s, not {self.speed}")
        if self.max_restarts < 0 or self.restart_window_s <= 0 or self.grace_s <= 0:
            raise SettingsError("restart limits and grace period must be positive")
        parse_decimal(self.fee_rate, "fee rate")
        parse_decimal(self.slippage_bps, "slippage")
        if self.control_tcp:
            from multibot.wire.endpoints import EndpointError, parse_tcp_endpoint

            try:
                parse_tcp_endpoint(self.control_tcp, for_bind=True)
            except EndpointError as exc:
                raise SettingsError(f"--control-tcp: {exc}") from None


def parse_decimal(text: str, what: str, positive: bool = False) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise SettingsError(f"{what} must be a number, not {text!r}") from None
    if not value.is_finite() or value < 0 or (positive and value == 0):
        raise SettingsError(f"{what} must be a {'positive' if positive else 'non-negative'} "
                            f"number, not {text!r}")
    return value


def normalize_symbols(raw: list[str]) -> list[str]:
    """Upper-case, strip, dedupe (keeping order); reject text that cannot be a symbol."""
    out: list[str] = []
    for item in raw:
        for part in item.replace(",", " ").split():
            symbol = part.strip().upper().replace("/", "")
            if not _SYMBOL_TEXT.match(symbol):
                raise SettingsError(f"{part!r} is not a symbol (expected e.g. BTCUSDT)")
            if symbol not in out:
                out.append(symbol)
    if not out:
        raise SettingsError("name at least one symbol, e.g. BTCUSDT")
    return out
