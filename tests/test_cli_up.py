"""`up` as a new user types it: paths relative to where they stand, and options that a running
fleet cannot apply refused rather than ignored."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from multibot.config import Configuration, configure, parse_config
from tests.support import FleetCli

pytestmark = pytest.mark.process

MOMENTUM = '''
from strategies.base import Strategy


class Momentum(Strategy):
    name = "momentum"

    @property
    def warmup(self) -> int:
        return 2

    def on_bar(self, bar):
        return None
'''

DECOY = '''
raise RuntimeError("the daemon's directory's file was loaded, not the caller's")
'''


def test_strategy_paths_are_made_absolute_in_the_caller(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "strats").mkdir()
    (tmp_path / "conf").mkdir()
    config = tmp_path / "conf" / "fleet.toml"
    config.write_text('[symbol.BTCUSDT]\nstrategies = ["../strats/momo.py:Momentum"]\n'
                      '[[symbol.BTCUSDT.strategy]]\nname = "mine.py:Other"\n')
    monkeypatch.chdir(tmp_path / "strats")  # neither path is relative to the caller's directory
    from_file = configure({}, Path("../conf/fleet.toml")).plan("BTCUSDT")
    assert [s.name for s in from_file.strategies] == [
        f"{tmp_path / 'strats' / 'momo.py'}:Momentum", f"{tmp_path / 'conf' / 'mine.py'}:Other"]
    cli = Configuration.layer(parse_config(""), {"strategies": ["momo.py:Momentum:x=1",
                                                                "sma_cross", "pkg.mod:Cls"]})
    assert [(s.name, s.params) for s in cli.plan("BTCUSDT").strategies] == [
        (f"{tmp_path / 'strats' / 'momo.py'}:Momentum", {"x": 1}), ("sma_cross", {}),
        ("pkg.mod:Cls", {})]


def test_up_loads_the_callers_strategy_file_not_the_daemons(fleet: FleetCli,
                                                            tmp_path: Path) -> None:
    daemon_dir, caller = tmp_path / "daemon", tmp_path / "caller"
    for where, text in ((daemon_dir, DECOY), (caller, MOMENTUM)):
        (where / "work" / "strats").mkdir(parents=True)
        (where / "work" / "strats" / "momo.py").write_text(text)
    (caller / "conf").mkdir()
    (caller / "conf" / "fleet.toml").write_text(
        '[symbol.SOLUSDT]\nstrategies = ["../work/strats/momo.py:Momentum"]\n')
    fleet.up("BTCUSDT", "--speed", "5", cwd=daemon_dir)  # the daemon's working directory

    fleet.up("ETHUSDT", "-s", "work/strats/momo.py:Momentum", cwd=caller)
    fleet.up("--config", "conf/fleet.toml", cwd=caller)  # its paths: relative to the file

    workers = fleet.workers()
    for symbol in ("ETHUSDT", "SOLUSDT"):
        assert workers[symbol]["state"] == "RUNNING", workers[symbol]
        assert workers[symbol]["strategies"] == [
            f"{caller / 'work' / 'strats' / 'momo.py'}:Momentum"]


def test_up_refuses_what_a_running_fleet_cannot_apply(fleet: FleetCli) -> None:
    fleet.up("BTCUSDT", "--speed", "5")
    for args, names in (
        (["BTCUSDT", "-s", "ema_cross"],
         ["BTCUSDT runs with -s sma_cross, not -s ema_cross", "multibot kill BTCUSDT"]),
        (["BTCUSDT", "ETHUSDT", "--stake", "250"],
         ["BTCUSDT runs with --stake 100, not --stake 250", "multibot kill BTCUSDT"]),
        (["SOLUSDT", "--speed", "20"],
         ["uses --speed 5, not 20", "multibot down"]),
        (["SOLUSDT", "--seed", "8"], ["uses --seed 7, not 8", "multibot down"]),
        (["SOLUSDT", "--max-restarts", "9"], ["uses --max-restarts 5, not 9"]),
        (["SOLUSDT", "--restart-window", "30"], ["uses --restart-window 60, not 30"]),
    ):
        proc = fleet.run("up", *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "[conflict]" in proc.stderr and all(n in proc.stderr for n in names), proc.stderr
    assert set(fleet.workers()) == {"BTCUSDT"}  # a refused request starts nothing

    fleet.up("BTCUSDT", "--stake", "100.0", "-s", "sma_cross")  # what runs: nothing to change
    fleet.up("SOLUSDT", "-s", "ema_cross:fast=3,slow=9")  # not running yet: applied
    fleet.up("BTCUSDT", "SOLUSDT")  # nothing asked of either
    assert fleet.workers()["BTCUSDT"]["strategies"] == ["sma_cross"]
    assert fleet.workers()["SOLUSDT"]["strategies"] == ["ema_cross"]


def test_a_stake_below_the_exchange_minimum_is_refused_up_front(tmp_path: Path) -> None:
    cli = FleetCli(tmp_path / "home")
    try:
        proc = cli.run("up", "BTCUSDT", "--stake", "0.5")
        assert proc.returncode == 2, (proc.stdout, proc.stderr)
        assert proc.stderr.startswith("error: stake of BTCUSDT (0.5 USDT) is below BTCUSDT's "
                                      "minimum order: min notional 5 USDT"), proc.stderr
        assert "use --stake " in proc.stderr
        assert cli.orchestrator_pid() is None  # nothing was started
    finally:
        cli.cleanup()
    backtest = subprocess.run(
        [sys.executable, "-m", "multibot.cli.app", "backtest", "BTCUSDT", "--stake", "0.5",
         "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL)
    assert backtest.returncode == 2, (backtest.stdout, backtest.stderr)
    assert "stake of BTCUSDT (0.5 USDT) is below BTCUSDT's minimum order" in backtest.stderr


def test_a_stake_below_the_minimum_is_refused_when_the_rules_are_learnt(fleet: FleetCli) -> None:
    """On a feed whose prices the caller does not know, the orchestrator refuses the symbol."""
    fleet.up("BTCUSDT", "--feed", "synthetic", "--speed", "5", "--stake", "50")
    proc = fleet.run("up", "FOOUSDT", "--feed", "synthetic", "--stake", "0.001")
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    reason = "stake of FOOUSDT (0.001 USDT) is below FOOUSDT's minimum order"
    assert reason in proc.stdout + proc.stderr
    foo = fleet.workers()["FOOUSDT"]
    assert foo["pid"] is None and reason in foo["last_error"], foo
