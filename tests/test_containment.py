"""User strategy code in worker processes: errors contained, state never shared."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from multibot.market.bar import Bar
from strategies.registry import create
from tests.support import FleetCli, eventually, where

pytestmark = pytest.mark.process

RAISING = '''
from strategies.base import Strategy


class AlwaysRaises(Strategy):
    name = "always_raises"

    @property
    def warmup(self) -> int:
        return 1

    def on_bar(self, bar):
        raise ZeroDivisionError("boom on " + bar.symbol)
'''

LEAKY = '''
from strategies.base import Strategy


class Leaky(Strategy):
    """Keeps state in a mutable CLASS attribute: shared by every instance in a process."""

    name = "leaky"
    seen: list = []

    @property
    def warmup(self) -> int:
        return 1

    def on_bar(self, bar):
        Leaky.seen.append(bar.symbol)
        mixed = sorted(set(Leaky.seen) - {bar.symbol})
        if mixed:
            raise RuntimeError(f"state mixed with {mixed}")
        return None
'''


def test_a_raising_strategy_is_contained_and_reported(fleet: FleetCli, tmp_path: Path) -> None:
    path = tmp_path / "raising.py"
    path.write_text(RAISING)
    config = tmp_path / "fleet.toml"
    config.write_text(f'[symbol.ETHUSDT]\nstrategies = ["{path}:AlwaysRaises"]\n'
                      '[symbol.BTCUSDT]\nstrategies = ["sma_cross:fast=3,slow=10"]\n')
    fleet.up("--config", str(config), "--speed", "20")
    pids = {s: w["pid"] for s, w in fleet.workers().items()}
    eth = eventually(lambda: where(fleet.workers()["ETHUSDT"],
                                   lambda w: "disabled after 10 errors" in w["last_error"]),
                     timeout=20, what="the strategy to be disabled")
    assert "ZeroDivisionError: boom on ETHUSDT" in eth["last_error"]
    assert re.search(r" on the bar of \d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d)?Z: ", eth["last_error"])
    assert eth["state"] == "RUNNING" and eth["pid"] == pids["ETHUSDT"] and eth["restarts"] == 0
    log = (fleet.home / "logs" / "ETHUSDT.log").read_text()
    assert "Traceback" in log and "raise ZeroDivisionError" in log
    btc = fleet.workers()["BTCUSDT"]
    assert btc["last_error"] == "" and btc["pid"] == pids["BTCUSDT"]
    eventually(lambda: fleet.workers()["BTCUSDT"]["bars"] > btc["bars"] + 5,
               what="BTCUSDT to keep trading")
    assert fleet.status()["orchestrator"]["pid"] == fleet.orchestrator_pid()
    assert "Traceback" not in (fleet.home / "logs" / "BTCUSDT.log").read_text()


def test_leaky_class_state_cannot_cross_worker_processes(fleet: FleetCli,
                                                         tmp_path: Path) -> None:
    path = tmp_path / "leaky.py"
    path.write_text(LEAKY)
    symbols = ("BTCUSDT", "ETHUSDT", "XRPUSDT")
    fleet.up(*symbols, "-s", f"{path}:Leaky", "--speed", "50")
    eventually(lambda: all(w["bars"] > 20 for w in fleet.workers().values()),
               what="every worker to process bars")
    for worker in fleet.workers().values():
        assert worker["last_error"] == "", worker  # never saw another symbol's state


def test_the_leaky_strategy_does_mix_inside_one_process(tmp_path: Path) -> None:
    """The control: the same strategy, two symbols, ONE process -> the leak shows."""
    path = tmp_path / "leaky.py"
    path.write_text(LEAKY)
    btc, eth = create(f"{path}:Leaky"), create(f"{path}:Leaky")
    assert btc is not eth
    btc.on_bar(Bar(symbol="BTCUSDT", open_time=0, close_time=1, open=1, high=1, low=1,
                   close=1, volume=1))
    with pytest.raises(RuntimeError, match="mixed"):
        eth.on_bar(Bar(symbol="ETHUSDT", open_time=0, close_time=1, open=1, high=1, low=1,
                       close=1, volume=1))
