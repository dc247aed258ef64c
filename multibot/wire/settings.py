"""Fleet-wide settings, declared once, and input normalisation shared by the CLI and the daemon.

``FleetSettings`` declares every fleet setting with its default: the CLI layers a config file,
the environment and its options over those defaults (``multibot.config``), the daemon gets the
result on its argv, and the supervisor's policy and the backtest take their defaults from
``DEFAULTS``. A symbol's defaults are ``DEFAULT_PLAN``.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import msgspec

from multibot.errors import ErrorCode, MultibotError
from multibot.market.orders import OrderType
from multibot.wire.records import StrategySpec, SymbolPlan

ORDER_TYPES = tuple(OrderType)
_SYMBOL_TEXT = re.compile(r"^[A-Z0-9]{2,20}$")
_Choice = TypeVar("_Choice", bound=enum.StrEnum)
MAX_AMOUNT = Decimal(10) ** 15  # a stake, capital or rate larger is a typo, never money
MAX_SECONDS = 7 * 24 * 3600.0  # the longest wait or window a setting may ask for


class Mode(enum.StrEnum):
    """Where orders go: simulated fills, Binance's testnet, or Binance (real money)."""

    PAPER = "paper"
    TESTNET = "testnet"
    LIVE = "live"


class Feed(enum.StrEnum):
    """Where bars come from: bundled real klines, a seeded random walk, or Binance's streams."""

    REPLAY = "replay"
    SYNTHETIC = "synthetic"
    BINANCE = "binance"


MAX_SYMBOLS = 5_000  # Binance lists about 3,000 spot symbols


class SettingsError(MultibotError, ValueError):
    """Bad fleet settings or arguments; the message says which and why."""

    CODE = ErrorCode.BAD_CONFIG


class FleetSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every fleet setting and its default; names are those of the config file and the CLI."""

    mode: Mode = Mode.PAPER
    feed: Feed = Feed.REPLAY  # when none is given: default_feed(mode)
    interval: str = "1m"
    speed: float = 10.0  # replay bars per second: with 1m bars, trades show up within a minute
    seed: int = 7
    fee_rate: str = "0.001"  # per fill, a fraction of the notional
    slippage_bps: str = "2"
    max_restarts: int = 5
    restart_window_s: float = msgspec.field(default=60.0, name="restart_window")
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
        return "testnet" if self.mode == Mode.TESTNET else "live"

    def check(self) -> None:
        """What types cannot say: combinations, ranges and formats (raises SettingsError)."""
        if self.feed == Feed.BINANCE:
            from multibot.market.intervals import BINANCE_INTERVAL_MS

            if self.interval not in BINANCE_INTERVAL_MS:
                raise SettingsError(f"--interval {self.interval!r} is not a Binance kline "
                                    f"interval; one of {', '.join(BINANCE_INTERVAL_MS)}")
        if self.mode != Mode.PAPER and self.feed != Feed.BINANCE:
            raise SettingsError(
                f"--mode {self.mode} trades on Binance and needs --feed binance (its prices), "
                f"not --feed {self.feed}"
            )
        if self.mode == Mode.LIVE and not self.confirm_live:
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
        check_seconds(self.restart_window_s, "--restart-window")
        check_seconds(self.grace_s, "grace period")
        parse_decimal(self.fee_rate, "fee rate")
        parse_decimal(self.slippage_bps, "slippage")
        if self.control_tcp:
            from multibot.wire.endpoints import EndpointError, parse_tcp_endpoint

            try:
                parse_tcp_endpoint(self.control_tcp, for_bind=True)
            except EndpointError as exc:
                raise SettingsError(f"--control-tcp: {exc}") from None


DEFAULTS = FleetSettings()
DEFAULT_PLAN = SymbolPlan(strategies=[StrategySpec(name="sma_cross")])  # stake, order type: its own


def default_feed(mode: Mode) -> Feed:
    """On an exchange, its own prices; in paper, the bundled real klines."""
    return Feed.REPLAY if mode == Mode.PAPER else Feed.BINANCE


def choice(kind: type[_Choice], value: Any, what: str) -> _Choice:
    """``value`` as a member of ``kind``, else SettingsError listing the choices."""
    try:
        return kind(value)
    except ValueError:
        raise SettingsError(f"unknown {what} {value!r}; one of {', '.join(kind)}") from None


def settings_from(given: Mapping[str, Any]) -> FleetSettings:
    """FleetSettings from the settings someone gave (by name); the rest are the defaults.

    An unknown mode or feed raises SettingsError; a value of the wrong type or an unknown
    name raises msgspec.ValidationError (the caller says where the value came from).
    """
    values = dict(given)
    mode = choice(Mode, values.get("mode", DEFAULTS.mode), "mode")
    values["feed"] = choice(Feed, values.get("feed", default_feed(mode)), "feed")
    values["mode"] = mode
    return msgspec.convert(values, FleetSettings)


def parse_decimal(text: str, what: str, positive: bool = False) -> Decimal:
    """A finite number >= 0 (> 0 if ``positive``) and at most MAX_AMOUNT, else SettingsError:
    an exponent like 1E+999999999 would overflow the arithmetic that uses it later."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise SettingsError(f"{what} must be a number, not {text!r}") from None
    if not value.is_finite() or value < 0 or (positive and value == 0):
        raise SettingsError(f"{what} must be a {'positive' if positive else 'non-negative'} "
                            f"number, not {text!r}")
    if value > MAX_AMOUNT:
        raise SettingsError(f"{what} must be at most {MAX_AMOUNT:,}, not {text!r}")
    return value


def check_seconds(value: float, what: str, maximum: float = MAX_SECONDS) -> float:
    """A finite duration in (0, maximum] seconds, else SettingsError (nan passes no
    comparison, so it is named here rather than slipping through a range check)."""
    if not (math.isfinite(value) and 0 < value <= maximum):
        raise SettingsError(f"{what} must be a number of seconds above 0 and at most "
                            f"{maximum:g}, not {value!r}")
    return value


def normalize_symbols(raw: list[str]) -> list[str]:
    """Upper-case, strip, dedupe (keeping order); reject text that cannot be a symbol, and
    more symbols than any exchange lists (a request's work stays bounded)."""
    out: dict[str, None] = {}
    for item in raw:
        for part in item.replace(",", " ").split():
            symbol = part.strip().upper().replace("/", "")
            if not _SYMBOL_TEXT.match(symbol):
                raise SettingsError(f"{part!r} is not a symbol (expected e.g. BTCUSDT)")
            out[symbol] = None
            if len(out) > MAX_SYMBOLS:
                raise SettingsError(f"at most {MAX_SYMBOLS} symbols at once")
    if not out:
        raise SettingsError("name at least one symbol, e.g. BTCUSDT")
    return list(out)


# fleet settings a running fleet cannot change, by their configuration key (its CLI option is
# the key with dashes): an `up` that gives another value is refused, not silently ignored
FLEET_GIVEN = ("seed", "max_restarts", "restart_window")


def fleet_value(settings: FleetSettings, key: str) -> str:
    """The text of one of FLEET_GIVEN's settings, as both sides compare it."""
    value = settings.restart_window_s if key == "restart_window" else getattr(settings, key)
    return f"{value:g}" if isinstance(value, float) else str(value)
