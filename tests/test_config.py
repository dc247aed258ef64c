"""The TOML config: per-symbol strategies, precedence, and errors that point at the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from multibot.config import ConfigError, parse_config, plan_for
from multibot.launch import UpOptions, prepare_up
from multibot.wire.protocol import StrategySpec
from multibot.wire.settings import SettingsError

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
    config = parse_config(CONFIG)
    btc = plan_for(config, "BTCUSDT")
    assert btc.stake == "250" and btc.order_type == "LIMIT"
    assert btc.strategies == [
        StrategySpec(name="sma_cross", params={"fast": 5, "slow": 20}),
        StrategySpec(name="ema_cross", params={"fast": 3, "slow": 9}),
    ]
    eth = plan_for(config, "ETHUSDT")
    assert eth.stake == "50" and eth.strategies == [StrategySpec(name="ema_cross")]
    forced = plan_for(config, "BTCUSDT", strategies=[StrategySpec(name="sma_cross")],
                      stake="7")
    assert forced.stake == "7" and forced.strategies == [StrategySpec(name="sma_cross")]
    assert plan_for(None, "XRPUSDT").strategies == [StrategySpec(name="sma_cross")]


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
    settings, up = prepare_up(UpOptions(symbols=[], config=path))
    assert settings.speed == 25 and up.symbols == ["BTCUSDT"]  # symbols from the sections
    assert up.plans["BTCUSDT"].order_type == "LIMIT"
    settings, up = prepare_up(UpOptions(symbols=["ethusdt"], config=path, speed=3))
    assert settings.speed == 3 and up.plans["ETHUSDT"].stake == "50"
    path.write_text(CONFIG.replace("fast = 3", "fast = 30"))
    with pytest.raises(SettingsError, match=r"BTCUSDT: strategy 'ema_cross'.*fast"):
        prepare_up(UpOptions(symbols=[], config=path))
    with pytest.raises(ConfigError, match="cannot read config"):
        prepare_up(UpOptions(symbols=["BTCUSDT"], config=tmp_path / "missing.toml"))
