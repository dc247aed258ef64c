"""The TOML config file (`--config`): fleet settings and per-symbol strategies.

```toml
[fleet]                      # optional; CLI options win
feed = "replay"
speed = 20

[binance]                    # optional: endpoints ("" = Binance's own) and the key file
rest_url = "http://127.0.0.1:9000/api"
stream_url = "ws://127.0.0.1:9000/"
key_file = "~/.config/multibot/testnet.toml"

[defaults]                   # every symbol without its own section
stake = "100"
strategies = ["sma_cross"]

[symbol.BTCUSDT]
stake = "250"
order_type = "LIMIT"
strategies = ["ema_cross:fast=8,slow=21"]   # spec strings, and/or tables:

[[symbol.BTCUSDT.strategy]]
name = "sma_cross"
fast = 5
slow = 20
```
Unknown keys are errors that name the key and its line.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from multibot.errors import ErrorCode, MultibotError
from multibot.wire.protocol import StrategySpec, SymbolPlan

DEFAULT_STAKE = "100"
DEFAULT_ORDER_TYPE = "MARKET"
DEFAULT_STRATEGIES = ("sma_cross",)


class ConfigError(MultibotError, ValueError):
    """The config file is unreadable or wrong; the message names the file, key and line."""

    CODE = ErrorCode.BAD_CONFIG


class SymbolSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    stake: str | float | int | None = None
    order_type: str | None = None
    strategies: list[str] = []
    strategy: list[dict[str, Any]] = []


class FleetSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    mode: str | None = None
    feed: str | None = None
    interval: str | None = None
    speed: float | None = None
    seed: int | None = None
    max_restarts: int | None = None
    restart_window: float | None = None


class BinanceSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where Binance is and where the keys are (never the keys themselves)."""

    rest_url: str | None = None
    stream_url: str | None = None
    key_file: str | None = None


class ConfigFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    fleet: FleetSection = FleetSection()
    binance: BinanceSection = BinanceSection()
    defaults: SymbolSection = SymbolSection()
    symbol: dict[str, SymbolSection] = {}


def _fields(cls: type[msgspec.Struct]) -> set[str]:
    return set(cls.__struct_fields__)


def _unknown_key(raw: dict[str, Any]) -> tuple[list[str], str] | None:
    """(table path, key) of the first key no section knows, walking the raw TOML."""
    tables: list[tuple[list[str], Any, set[str]]] = [([], raw, _fields(ConfigFile))]
    tables.append((["fleet"], raw.get("fleet"), _fields(FleetSection)))
    tables.append((["defaults"], raw.get("defaults"), _fields(SymbolSection)))
    tables.append((["binance"], raw.get("binance"), _fields(BinanceSection)))
    symbols = raw.get("symbol")
    if isinstance(symbols, dict):
        tables += [(["symbol", name], section, _fields(SymbolSection))
                   for name, section in symbols.items()]
    for path, table, known in tables:
        if isinstance(table, dict):
            for key in table:
                if key not in known:
                    return path, key
    return None


def _line_of(text: str, parts: list[str], key: str) -> int | None:
    """Best effort: the line where ``key`` is set inside the table ``parts``."""
    header = re.compile(r"^\s*\[\[?\s*" + r"\s*\.\s*".join(map(re.escape, parts)) + r"\s*\]\]?")
    in_table = not parts
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("["):
            in_table = bool(header.match(line)) if parts else False
            continue
        if in_table and re.match(rf"^\s*{re.escape(key)}\s*=", line):
            return number
    return None


def parse_config(text: str, source: str = "<config>") -> ConfigFile:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    unknown = _unknown_key(raw)
    if unknown is not None:
        parts, key = unknown
        line = _line_of(text, parts, key)
        at = f" line {line}" if line else ""
        table = f"[{'.'.join(parts)}]" if parts else "the top level"
        raise ConfigError(f"{source}{at}: unknown key {key!r} in {table}") from None
    try:
        config = msgspec.convert(raw, type=ConfigFile)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    for name in config.symbol:
        if name != name.upper():
            raise ConfigError(f"{source}: symbol sections are upper case: [symbol.{name}]")
    return config


def load_config(path: Path) -> ConfigFile:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    return parse_config(text, str(path))


def _section_specs(section: SymbolSection) -> list[StrategySpec]:
    from strategies.base import StrategyError
    from strategies.registry import parse_spec

    specs = []
    for text in section.strategies:
        try:
            name, params = parse_spec(text)
        except StrategyError as exc:
            raise ConfigError(str(exc)) from None
        specs.append(StrategySpec(name=name, params=params))
    for table in section.strategy:
        params = dict(table)
        name = params.pop("name", None)
        if not isinstance(name, str):
            raise ConfigError("each [[...strategy]] table needs name = \"...\"")
        specs.append(StrategySpec(name=name, params=params))
    return specs


def plan_for(
    config: ConfigFile | None,
    symbol: str,
    *,
    strategies: list[StrategySpec] | None = None,
    stake: str | None = None,
    order_type: str | None = None,
) -> SymbolPlan:
    """CLI options beat the symbol's section, which beats [defaults], which beats built-ins."""
    sections = [SymbolSection()]
    if config is not None:
        sections = [s for s in (config.symbol.get(symbol), config.defaults) if s is not None]
    specs = strategies or next(
        (found for s in sections if (found := _section_specs(s))),
        [StrategySpec(name=n) for n in DEFAULT_STRATEGIES],
    )
    chosen_stake = stake or next(
        (str(s.stake) for s in sections if s.stake is not None), DEFAULT_STAKE)
    chosen_type = order_type or next(
        (s.order_type for s in sections if s.order_type), DEFAULT_ORDER_TYPE)
    return SymbolPlan(strategies=specs, stake=chosen_stake, order_type=chosen_type.upper())
