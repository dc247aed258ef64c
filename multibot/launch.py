"""Turn `multibot up` options (+ an optional config file) into fleet settings and a request.

Everything is validated here, in the CLI process, before anything starts: settings, symbols,
strategies (each is built once), stakes and order types.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from multibot.config import ConfigError, ConfigFile, load_config, plan_for
from multibot.wire.protocol import StrategySpec, Up
from multibot.wire.settings import (
    DEFAULT_SPEED,
    FleetSettings,
    SettingsError,
    normalize_symbols,
)
from orchestrator.plans import check_plan


@dataclass(frozen=True)
class UpOptions:
    """What the user typed; None = not given (the config file or a default decides)."""

    symbols: list[str]
    config: Path | None = None
    mode: str | None = None
    feed: str | None = None
    interval: str | None = None
    speed: float | None = None
    seed: int | None = None
    strategies: list[str] | None = None
    stake: str | None = None
    order_type: str | None = None
    max_restarts: int | None = None
    restart_window: float | None = None
    wait: float = 30.0
    control_tcp: str = ""
    rest_url: str | None = None
    stream_url: str | None = None
    key_file: str | None = None
    confirm_live: bool = False


T = TypeVar("T")


def _first(*values: T | None, default: T) -> T:
    return next((v for v in values if v is not None), default)


def fleet_settings(opts: UpOptions, config: ConfigFile | None) -> FleetSettings:
    f = config.fleet if config is not None else None
    b = config.binance if config is not None else None
    mode = _first(opts.mode, f.mode if f else None, default="paper")
    settings = FleetSettings(
        mode=mode,
        # on an exchange, its own prices; in paper, the bundled real klines
        feed=_first(opts.feed, f.feed if f else None,
                    default="replay" if mode == "paper" else "binance"),
        interval=_first(opts.interval, f.interval if f else None, default="1m"),
        speed=_first(opts.speed, f.speed if f else None, default=DEFAULT_SPEED),
        seed=_first(opts.seed, f.seed if f else None, default=7),
        max_restarts=_first(opts.max_restarts, f.max_restarts if f else None, default=5),
        restart_window_s=_first(opts.restart_window, f.restart_window if f else None, default=60.0),
        control_tcp=opts.control_tcp,
        rest_url=_first(opts.rest_url, b.rest_url if b else None, default=""),
        stream_url=_first(opts.stream_url, b.stream_url if b else None, default=""),
        key_file=_first(opts.key_file, b.key_file if b else None, default=""),
        confirm_live=opts.confirm_live,
    )
    settings.check()
    if settings.mode != "paper":  # fail here, before a daemon starts, with the same message
        from orchestrator.exchange.credentials import CredentialsError, load_credentials

        try:
            load_credentials(settings.network, settings.key_file)
        except CredentialsError as exc:
            raise SettingsError(str(exc)) from None
    return settings


def cli_strategies(raw: list[str] | None) -> list[StrategySpec] | None:
    from strategies.base import StrategyError
    from strategies.registry import parse_spec

    if not raw:
        return None
    specs = []
    for text in raw:
        try:
            name, params = parse_spec(text)
        except StrategyError as exc:
            raise SettingsError(str(exc)) from None
        specs.append(StrategySpec(name=name, params=params))
    return specs


def prepare_up(opts: UpOptions) -> tuple[FleetSettings, Up]:
    """Raises SettingsError or ConfigError with a message fit for the user."""
    config = load_config(opts.config) if opts.config is not None else None
    settings = fleet_settings(opts, config)
    raw_symbols = opts.symbols or (list(config.symbol) if config is not None else [])
    if not raw_symbols:
        raise SettingsError("name at least one symbol (or [symbol.X] sections in --config)")
    symbols = normalize_symbols(raw_symbols)
    specs = cli_strategies(opts.strategies)
    plans = {}
    for symbol in symbols:
        plan = plan_for(config, symbol, strategies=specs, stake=opts.stake,
                        order_type=opts.order_type)
        check_plan(symbol, plan)
        plans[symbol] = plan
    f = config.fleet if config is not None else None
    up = Up(symbols=symbols, plans=plans, wait_s=opts.wait,
            mode=_first(opts.mode, f.mode if f else None, default=""),
            feed=_first(opts.feed, f.feed if f else None, default=""),
            interval=_first(opts.interval, f.interval if f else None, default=""))
    return settings, up


__all__ = ["ConfigError", "SettingsError", "UpOptions", "prepare_up"]
