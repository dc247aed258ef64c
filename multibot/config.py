"""A command's configuration, layered once: declared defaults < config file < environment < CLI.

``up``, ``backtest`` and any later command call ``configure(options, path)`` with the CLI
options the user gave (None = not given) and read what they need from the ``Configuration``:
``fleet_settings()`` (defaults declared by ``FleetSettings``) and ``plan(symbol)`` (CLI, then
the symbol's section, then ``[defaults]``, then ``DEFAULT_PLAN``).

The config file (``--config``):

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
Unknown keys are errors that name the key and its line. A strategy file's path
(``path/to/file.py:Class``) is relative to the config file's directory; on the command line,
to the working directory. Either way it is made absolute here, in the caller, so that the
daemon (with its own working directory) loads the same file.

The environment (``ENVIRONMENT``): ``MULTIBOT_BINANCE_REST_URL`` and
``MULTIBOT_BINANCE_STREAM_URL`` set the endpoints of ``[binance]``. The orchestrator's
``resolve_endpoints`` reads them again and puts them before the settings it was given.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from multibot.errors import ErrorCode, MultibotError
from multibot.wire.protocol import StrategySpec, SymbolPlan
from multibot.wire.settings import DEFAULT_PLAN, FleetSettings, SettingsError, settings_from
from orchestrator.exchange.endpoints import REST_ENV, STREAM_ENV

# which fleet settings a config file may set, by table
SETTINGS_SECTIONS = {
    "fleet": ("mode", "feed", "interval", "speed", "seed", "max_restarts", "restart_window"),
    "binance": ("rest_url", "stream_url", "key_file"),
}
ENVIRONMENT = {REST_ENV: "rest_url", STREAM_ENV: "stream_url"}  # variable -> setting
PLAN_OPTIONS = SymbolPlan.__struct_fields__  # the CLI options that are a symbol's, not the fleet's


class ConfigError(MultibotError, ValueError):
    """The config file is unreadable or wrong; the message names the file, key and line."""

    CODE = ErrorCode.BAD_CONFIG


class SymbolSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    stake: str | float | int | None = None
    order_type: str | None = None
    strategies: list[str] = []
    strategy: list[dict[str, Any]] = []


class ConfigFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    fleet: dict[str, Any] = {}  # fleet settings by name (SETTINGS_SECTIONS), checked on parse
    binance: dict[str, Any] = {}
    defaults: SymbolSection = SymbolSection()
    symbol: dict[str, SymbolSection] = {}

    def settings(self) -> dict[str, Any]:
        """The fleet settings this file gives, by name."""
        return {**self.fleet, **self.binance}


def _unknown_key(raw: dict[str, Any]) -> tuple[list[str], str] | None:
    """(table path, key) of the first key no section knows, walking the raw TOML."""
    symbol_keys = set(SymbolSection.__struct_fields__)
    tables: list[tuple[list[str], Any, set[str]]] = [
        ([], raw, set(ConfigFile.__struct_fields__)),
        (["defaults"], raw.get("defaults"), symbol_keys),
    ]
    tables += [([name], raw.get(name), set(keys)) for name, keys in SETTINGS_SECTIONS.items()]
    symbols = raw.get("symbol")
    if isinstance(symbols, dict):
        tables += [(["symbol", name], section, symbol_keys) for name, section in symbols.items()]
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
    for section in SETTINGS_SECTIONS:
        try:
            settings_from(getattr(config, section))
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{source}: {exc}".replace("`$.", f"`$.{section}.")) from None
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


def overlay(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Layers merged, lowest first: each name takes the last value given (None = not given)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update((name, value) for name, value in layer.items() if value is not None)
    return merged


def environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The settings the environment gives (``ENVIRONMENT``; an empty variable is not set)."""
    env = os.environ if environ is None else environ
    return {name: env[variable] for variable, name in ENVIRONMENT.items() if env.get(variable)}


def _specs(texts: list[str], error: type[MultibotError], base: Path) -> list[StrategySpec]:
    """Spec strings parsed; a strategy file's path made absolute against ``base``."""
    from strategies.base import StrategyError
    from strategies.registry import absolute_ref, parse_spec

    specs = []
    for text in texts:
        try:
            name, params = parse_spec(text)
        except StrategyError as exc:
            raise error(str(exc)) from None
        specs.append(StrategySpec(name=absolute_ref(name, base), params=params))
    return specs


def _plan_layer(section: SymbolSection, base: Path) -> dict[str, Any]:
    from strategies.registry import absolute_ref

    specs = _specs(section.strategies, ConfigError, base)
    for table in section.strategy:
        params = dict(table)
        name = params.pop("name", None)
        if not isinstance(name, str):
            raise ConfigError("each [[...strategy]] table needs name = \"...\"")
        specs.append(StrategySpec(name=absolute_ref(name, base), params=params))
    stake = None if section.stake is None else str(section.stake)
    return {"strategies": specs or None, "stake": stake, "order_type": section.order_type or None}


@dataclass(frozen=True)
class Configuration:
    """The layers of one command's configuration (see the module's docstring)."""

    file: ConfigFile
    given: Mapping[str, Any]  # fleet settings given by the file, the environment or the CLI
    plan_options: Mapping[str, Any]  # the CLI's strategies (spec strings), stake, order type
    file_dir: Path  # the config file's directory: its strategy files' paths are relative to it

    @classmethod
    def layer(cls, file: ConfigFile | None = None, options: Mapping[str, Any] | None = None,
              environ: Mapping[str, str] | None = None,
              file_dir: Path | None = None) -> Configuration:
        """``options``: the CLI's, by setting name (FleetSettings' or PLAN_OPTIONS);
        ``file_dir``: where ``file`` was read (None: the working directory)."""
        cli = dict(options or {})
        plan = {name: cli.pop(name, None) or None for name in PLAN_OPTIONS}
        file = file or ConfigFile()
        return cls(file, overlay(file.settings(), environment(environ), cli), plan,
                   (file_dir or Path()).absolute())

    def fleet_settings(self) -> FleetSettings:
        """Types checked; what only ``FleetSettings.check()`` sees is left to the command."""
        try:
            return settings_from(self.given)
        except msgspec.ValidationError as exc:
            raise SettingsError(str(exc)) from None

    def plan(self, symbol: str) -> SymbolPlan:
        """CLI options beat the symbol's section, which beats [defaults], which beats
        DEFAULT_PLAN."""
        sections = (self.file.defaults, self.file.symbol.get(symbol))
        cli = dict(self.plan_options)
        if cli["strategies"]:  # the caller's paths: relative to its working directory
            cli["strategies"] = _specs(cli["strategies"], SettingsError, Path.cwd())
        values = overlay(msgspec.structs.asdict(DEFAULT_PLAN),
                         *(_plan_layer(s, self.file_dir) for s in sections if s is not None),
                         cli)
        return SymbolPlan(strategies=list(values["strategies"]), stake=values["stake"],
                          order_type=values["order_type"].upper())

    def plan_given(self, symbol: str) -> list[str]:
        """The fields of ``plan(symbol)`` given by the CLI or the config file (not defaults)."""
        given = {name for name, value in self.plan_options.items() if value}
        for section in (self.file.defaults, self.file.symbol.get(symbol)):
            if section is not None:
                layer = _plan_layer(section, self.file_dir)
                given |= {name for name, value in layer.items() if value is not None}
        return sorted(given)


def configure(options: Mapping[str, Any], config: Path | None = None,
              environ: Mapping[str, str] | None = None) -> Configuration:
    """Load ``config`` (if given) and layer it under the environment and ``options``."""
    if config is None:
        return Configuration.layer(None, options, environ)
    return Configuration.layer(load_config(config), options, environ, config.absolute().parent)
