"""The TOML config: per-symbol strategies, precedence, and errors that point at the line."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import pytest

from multibot.config import ConfigError, Configuration, configure, parse_config
from multibot.launch import prepare_up
from multibot.wire.protocol import StrategySpec
from multibot.wire.settings import DEFAULTS, Feed, Mode, SettingsError, parse_decimal
from tests.support import FleetCli

CONFIG = """
[fleet]
speed = 25
feed = "replay"

[defaults]
stake = 50
strategies = ["ema_cross"]

[symbol.BTCUSDT]
stake = "250"
order_type = "limit"
strategies = ["sma_cross:fast=5,slow=20"]

[[symbol.BTCUSDT.strategy]]
name = "ema_cross"
fast = 3
slow = 9
"""


def test_symbol_sections_beat_defaults_and_cli_beats_both() -> None:
    config = Configuration.layer(parse_config(CONFIG))
    btc = config.plan("BTCUSDT")
    assert btc.stake == "250" and btc.order_type == "LIMIT"
    assert btc.strategies == [
        StrategySpec(name="sma_cross", params={"fast": 5, "slow": 20}),
        StrategySpec(name="ema_cross", params={"fast": 3, "slow": 9}),
    ]
    eth = config.plan("ETHUSDT")
    assert eth.stake == "50" and eth.strategies == [StrategySpec(name="ema_cross")]
    cli = {"strategies": ["sma_cross"], "stake": "7"}
    forced = Configuration.layer(parse_config(CONFIG), cli).plan("BTCUSDT")
    assert forced.stake == "7" and forced.strategies == [StrategySpec(name="sma_cross")]
    assert forced.order_type == "LIMIT"  # not given on the CLI: the section's
    default = Configuration.layer().plan("XRPUSDT")
    assert default.strategies == [StrategySpec(name="sma_cross")]
    assert (default.stake, default.order_type) == ("100", "MARKET")


def test_unknown_keys_name_the_key_the_table_and_the_line() -> None:
    text = CONFIG.replace('order_type = "limit"', 'order_typ = "limit"')
    with pytest.raises(ConfigError) as info:
        parse_config(text, "fleet.toml")
    assert str(info.value) == "fleet.toml line 12: unknown key 'order_typ' in [symbol.BTCUSDT]"
    with pytest.raises(ConfigError, match=r"line 3: unknown key 'sped' in \[fleet\]"):
        parse_config("[fleet]\n\nsped = 3\n")
    with pytest.raises(ConfigError, match="unknown key 'symbols' in the top level"):
        parse_config("[symbols.BTCUSDT]\nstake = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_config("[fleet\n")
    with pytest.raises(ConfigError, match="speed"):
        parse_config('[fleet]\nspeed = "fast"\n')


def test_prepare_up_validates_everything_before_anything_starts(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(CONFIG)
    settings, up = prepare_up([], configure({}, path))
    assert settings.speed == 25 and up.symbols == ["BTCUSDT"]  # symbols from the sections
    assert up.plans["BTCUSDT"].order_type == "LIMIT"
    assert (up.mode, up.feed, up.interval) == ("", "replay", "")  # what was asked for
    settings, up = prepare_up(["ethusdt"], configure({"speed": 3}, path))
    assert settings.speed == 3 and up.plans["ETHUSDT"].stake == "50"
    path.write_text(CONFIG.replace("fast = 3", "fast = 30"))
    with pytest.raises(SettingsError, match=r"BTCUSDT: strategy 'ema_cross'.*fast"):
        prepare_up([], configure({}, path))
    with pytest.raises(ConfigError, match="cannot read config"):
        configure({}, tmp_path / "missing.toml")


def test_layers_defaults_file_environment_cli() -> None:
    file = parse_config('[fleet]\nmode = "testnet"\nmax_restarts = 2\nrestart_window = 9\n'
                        '[binance]\nrest_url = "http://file/api"\nstream_url = "ws://file/"\n')
    env = {"MULTIBOT_BINANCE_REST_URL": "http://env/api", "MULTIBOT_BINANCE_STREAM_URL": ""}
    settings = Configuration.layer(file, {"max_restarts": None}, env).fleet_settings()
    assert settings.mode is Mode.TESTNET and settings.feed is Feed.BINANCE  # feed follows mode
    assert (settings.max_restarts, settings.restart_window_s) == (2, 9.0)  # file over defaults
    assert settings.rest_url == "http://env/api"  # environment over file
    assert settings.stream_url == "ws://file/"  # an empty variable is not set
    assert settings.seed == DEFAULTS.seed and settings.fee_rate == DEFAULTS.fee_rate
    cli = {"rest_url": "http://cli/api", "feed": "replay", "max_restarts": 0}
    settings = Configuration.layer(file, cli, env).fleet_settings()
    assert (settings.rest_url, settings.feed, settings.max_restarts) == (
        "http://cli/api", Feed.REPLAY, 0)  # the CLI over everything (0 is given, None is not)
    assert Configuration.layer(environ={}).fleet_settings() == DEFAULTS


def test_unknown_modes_and_feeds_list_the_choices() -> None:
    with pytest.raises(SettingsError) as info:
        Configuration.layer(options={"mode": "x"}).fleet_settings()
    assert str(info.value) == "unknown mode 'x'; one of paper, testnet, live"
    with pytest.raises(SettingsError, match=r"unknown feed 'tv'; one of replay, synthetic, "):
        parse_config('[fleet]\nfeed = "tv"\n')


@pytest.mark.parametrize(("given", "message"), [
    ({"restart_window": math.nan}, r"--restart-window must be a number of seconds above 0 "
                                   r"and at most 604800, not nan"),
    ({"restart_window": math.inf}, "--restart-window must be a number of seconds"),
    ({"restart_window": -1.0}, "restart limits and grace period must be positive"),
    ({"stake": "1E+999999999"}, r"stake of BTCUSDT must be at most 1,000,000,000,000,000, "
                                r"not '1E\+999999999'"),
    ({"stake": "Infinity"}, "stake of BTCUSDT must be a positive number, not 'Infinity'"),
    ({"stake": "NaN"}, "stake of BTCUSDT must be a positive number, not 'NaN'"),
    ({"strategies": ["sma_cross:slow=100000000"]}, r"BTCUSDT: strategy 'sma_cross': slow "
                                                   r"must be at most 1000"),
    ({"strategies": ["macd_cross:fast=500,slow=1000,signal=900"]},
     r"BTCUSDT: strategy 'macd_cross' needs \d+ bars of warm-up, but a worker keeps the "
     r"last 1000: use shorter periods"),
])
def test_numbers_must_be_finite_and_bounded(given: dict[str, object], message: str) -> None:
    """nan passes no comparison, so a range check alone lets it through; a stake like
    1E+999999999 is finite and positive yet overflows the arithmetic that uses it."""
    with pytest.raises(SettingsError, match=message):
        prepare_up(["BTCUSDT"], configure(given))


def test_a_config_file_nan_is_refused_too() -> None:
    settings = Configuration.layer(parse_config("[fleet]\nrestart_window = nan\n"))
    with pytest.raises(SettingsError, match="--restart-window must be a number of seconds"):
        prepare_up(["BTCUSDT"], settings)
    assert parse_decimal("1E+15", "stake") == Decimal("1E+15")  # the bound itself is fine
    with pytest.raises(SettingsError, match="fee rate must be at most"):
        parse_decimal("1e16", "fee rate")


@pytest.mark.parametrize(("args", "message"), [
    (["--wait", "nan"], "--wait must be a number of seconds above 0 and at most 604800, not nan"),
    (["--wait", "inf"], "--wait must be a number of seconds"),
    (["--wait", "-1"], "--wait must be a number of seconds"),
    (["--restart-window", "nan"], "--restart-window must be a number of seconds"),
    (["--stake", "1E+999999999"], "stake of BTCUSDT must be at most 1,000,000,000,000,000"),
])
def test_up_refuses_non_finite_and_huge_numbers_with_exit_2(tmp_path: Path, args: list[str],
                                                            message: str) -> None:
    cli = FleetCli(tmp_path / "home")
    try:
        proc = cli.run("up", "BTCUSDT", *args)
        assert proc.returncode == 2, (proc.stdout, proc.stderr)
        assert proc.stderr.startswith(f"error: {message}"), proc.stderr
        assert "Traceback" not in proc.stderr
        assert cli.orchestrator_pid() is None  # nothing was started
    finally:
        cli.cleanup()


def test_symbol_lists_are_bounded_and_deduplicated() -> None:
    from multibot.wire.settings import MAX_SYMBOLS, normalize_symbols

    many = [f"S{i:05d}USDT" for i in range(MAX_SYMBOLS)]
    assert normalize_symbols(many + many[::-1]) == many
    with pytest.raises(SettingsError, match=f"at most {MAX_SYMBOLS} symbols"):
        normalize_symbols([*many, "ONEMOREUSDT"])
