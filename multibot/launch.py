"""Turn `multibot up`'s configuration into fleet settings and the request to send.

Everything is validated here, in the CLI process, before anything starts: settings, symbols,
strategies (each is built once), stakes and order types.
"""

from __future__ import annotations

import msgspec

from multibot.config import Configuration
from multibot.wire.protocol import Up
from multibot.wire.settings import (
    FLEET_GIVEN,
    Feed,
    FleetSettings,
    Mode,
    SettingsError,
    fleet_value,
    normalize_symbols,
)
from orchestrator.plans import bundled_market, check_plan


def _checked_settings(configuration: Configuration) -> FleetSettings:
    settings = configuration.fleet_settings()
    settings.check()
    if settings.mode != Mode.PAPER:  # fail here, before a daemon starts, with the same message
        from orchestrator.exchange.credentials import load_credentials

        load_credentials(settings.network, settings.key_file)
    return settings


def prepare_up(symbols: list[str], configuration: Configuration,
               wait_s: float | None = None) -> tuple[FleetSettings, Up]:
    """Raises a MultibotError (bad settings, config, credentials) fit for the user.

    ``symbols`` as typed (none: the config's [symbol.X] sections); the request says which of
    mode, feed and interval were asked for, so that a running fleet can refuse others.
    """
    settings = _checked_settings(configuration)
    raw_symbols = symbols or list(configuration.file.symbol)
    if not raw_symbols:
        raise SettingsError("name at least one symbol (or [symbol.X] sections in --config)")
    plans = {}
    for symbol in normalize_symbols(raw_symbols):
        plan = configuration.plan(symbol)
        replay = settings.feed == Feed.REPLAY  # else the orchestrator checks the stake later
        check_plan(symbol, plan, bundled_market(symbol, settings.interval) if replay else None)
        plans[symbol] = plan
    given = configuration.given
    up = Up(symbols=list(plans), plans=plans, mode=given.get("mode", ""),
            feed=given.get("feed", ""), interval=given.get("interval", ""),
            speed=settings.speed if "speed" in given else 0.0,
            fleet_given={key: fleet_value(settings, key) for key in FLEET_GIVEN if key in given},
            plans_given={symbol: configuration.plan_given(symbol) for symbol in plans})
    return settings, up if wait_s is None else msgspec.structs.replace(up, wait_s=wait_s)
