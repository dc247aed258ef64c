"""End to end: real orchestrator and worker processes, real ZeroMQ sockets, real SQLite."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from multibot.market.bundled import load_klines
from multibot.wire.home import Home
from tests.support import FleetCli, eventually, where

pytestmark = pytest.mark.process

THREE = ("BTCUSDT", "ETHUSDT", "XRPUSDT")


def _close_at(symbol: str, open_time: int) -> float:
    bars = load_klines(symbol, "1m")
    (index,) = (bars["open_time"] == open_time).nonzero()
    return float(bars["close"][index[0]])


def _bars(fleet: FleetCli) -> dict[str, int]:
    return {s: w["bars"] for s, w in fleet.workers().items()}


def test_up_status_kill_down(fleet: FleetCli) -> None:
    out = fleet.up(*THREE, "--speed", "20").stdout
    for symbol in THREE:
        assert f"{symbol}" in out and "RUNNING" in out
    workers = fleet.workers()
    pids = {s: workers[s]["pid"] for s in THREE}
    assert len(set(pids.values())) == 3
    orchestrator_pid = fleet.status()["orchestrator"]["pid"]
    for symbol, pid in pids.items():
        proc = psutil.Process(pid)  # a separate OS process per symbol, under the orchestrator
        assert orchestrator_pid in {proc.ppid(), psutil.Process(proc.ppid()).ppid()}
        assert symbol in " ".join(proc.cmdline())

    # every worker advances, on its own symbol's bars only (its last close is its own price)
    before = _bars(fleet)
    eventually(lambda: all(b > before[s] + 3 for s, b in _bars(fleet).items()),
               what="all three workers to process bars")
    for symbol, worker in fleet.workers().items():
        assert worker["foreign_bars"] == 0
        assert worker["last_price"] == _close_at(symbol, worker["last_bar_time"])

    killed = fleet.run("kill", "ETHUSDT", check=True)
    assert "STOPPED" in killed.stdout
    assert not psutil.pid_exists(pids["ETHUSDT"]) or \
        psutil.Process(pids["ETHUSDT"]).status() == psutil.STATUS_ZOMBIE
    after_kill = fleet.workers()
    assert after_kill["ETHUSDT"]["state"] == "STOPPED" and after_kill["ETHUSDT"]["pid"] is None
    for symbol in ("BTCUSDT", "XRPUSDT"):
        assert after_kill[symbol]["pid"] == pids[symbol]
    mark = _bars(fleet)
    eventually(lambda: all(_bars(fleet)[s] > mark[s] + 3 for s in ("BTCUSDT", "XRPUSDT")),
               what="the other two to keep trading")
    eth = fleet.workers()["ETHUSDT"]
    assert eth["state"] == "STOPPED" and eth["bars"] == mark["ETHUSDT"]  # it stopped trading

    fleet.run("down", check=True)
    assert fleet.processes() == []
    assert not (fleet.home / "run" / "orchestrator.pid").exists()
    journal = fleet.journal()
    assert journal.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_hot_add_and_second_up_of_a_running_symbol(fleet: FleetCli) -> None:
    fleet.up("btcusdt", "BTCUSDT")  # case is normalised, duplicates dropped
    btc = fleet.workers()["BTCUSDT"]["pid"]
    assert list(fleet.workers()) == ["BTCUSDT"]
    out = fleet.up("SOLUSDT", "BTCUSDT").stdout
    assert "already running" in out
    workers = fleet.workers()
    assert workers["BTCUSDT"]["pid"] == btc
    assert workers["SOLUSDT"]["state"] == "RUNNING" and workers["SOLUSDT"]["pid"] != btc


def test_unknown_symbol_is_refused_before_anything_starts(fleet: FleetCli) -> None:
    proc = fleet.run("up", "BTCUSDT", "FOOUSDT")
    assert proc.returncode == 2
    assert "FOOUSDT" in proc.stderr and "BTCUSDT" in proc.stderr  # names it, lists the rest
    assert fleet.processes() == []  # nothing was started, not even BTCUSDT
    fleet.up("BTCUSDT")
    proc = fleet.run("up", "NOPEUSDT")
    assert proc.returncode == 2 and "NOPEUSDT" in proc.stderr
    assert list(fleet.workers()) == ["BTCUSDT"]


def test_commands_without_a_fleet_fail_clearly(fleet: FleetCli) -> None:
    for command in (["status"], ["status", "--json"], ["kill", "BTCUSDT"], ["down"]):
        proc = fleet.run(*command)
        assert proc.returncode == 1, command
        assert "no fleet is running" in proc.stderr


def test_kill_of_a_symbol_that_is_not_running(fleet: FleetCli) -> None:
    fleet.up("BTCUSDT")
    proc = fleet.run("kill", "ETHUSDT")
    assert proc.returncode == 2
    assert "ETHUSDT" in proc.stderr and "BTCUSDT" in proc.stderr
    assert fleet.workers()["BTCUSDT"]["state"] == "RUNNING"


def test_exchange_modes_need_keys_confirmation_and_the_binance_feed(fleet: FleetCli) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MULTIBOT_BINANCE")}
    cases = [
        (("--mode", "testnet"), "MULTIBOT_BINANCE_TESTNET_API_KEY"),
        (("--mode", "live"), "--confirm-live"),
        (("--mode", "live", "--confirm-live"), "MULTIBOT_BINANCE_API_KEY"),
        (("--mode", "testnet", "--feed", "replay"), "needs --feed binance"),
        (("--feed", "binance", "--interval", "7m"), "not a Binance kline interval"),
    ]
    for args, message in cases:
        proc = fleet.run("up", "BTCUSDT", *args, env=clean)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
    assert fleet.processes() == []  # nothing started, nothing tried to reach Binance


def test_logs_show_a_symbols_own_log(fleet: FleetCli) -> None:
    fleet.up("XRPUSDT")
    proc = fleet.run("logs", "XRPUSDT", "-n", "20", check=True)
    assert "XRPUSDT" in proc.stdout and "warmed up" in proc.stdout
    assert "BTCUSDT" not in proc.stdout
    missing = fleet.run("logs", "DOGEUSDT")
    assert missing.returncode == 2 and "XRPUSDT" in missing.stderr  # bad input: nothing read


def test_synthetic_feed_serves_any_symbol(fleet: FleetCli) -> None:
    fleet.up("FOOUSDT", "BTCUSDT", "--feed", "synthetic", "--speed", "50")
    before = _bars(fleet)
    eventually(lambda: all(b > before[s] for s, b in _bars(fleet).items()),
               what="synthetic bars")
    proc = fleet.run("up", "ETHUSDT", "--feed", "replay")
    assert proc.returncode == 2 and "synthetic" in proc.stderr  # conflict is explained


def test_exec_spawned_workers_exit_at_once_when_the_orchestrator_dies(fleet: FleetCli) -> None:
    env = {**os.environ, "MULTIBOT_SPAWN": "exec"}
    fleet.run("up", "BTCUSDT", "--speed", "5", check=True, env=env)
    worker, orchestrator = fleet.workers()["BTCUSDT"]["pid"], fleet.orchestrator_pid()
    assert orchestrator is not None
    assert psutil.Process(worker).ppid() == orchestrator  # exec'd by it, not forked
    os.kill(orchestrator, signal.SIGKILL)
    eventually(lambda: not psutil.pid_exists(worker)
               or psutil.Process(worker).status() == psutil.STATUS_ZOMBIE,
               timeout=5, what="the orphaned worker to exit (liveness alone: 12 s)")


def test_orchestrator_sigkill_workers_exit_and_up_resumes(fleet: FleetCli) -> None:
    fleet.up("BTCUSDT", "ETHUSDT", "--speed", "100", "-s", "sma_cross:fast=2,slow=5")
    eventually(lambda: all(w["trades"] >= 3 for w in fleet.workers().values()),
               what="both symbols to trade")
    worker_pids = [w["pid"] for w in fleet.workers().values()]
    orchestrator = fleet.orchestrator_pid()
    assert orchestrator is not None
    os.kill(orchestrator, signal.SIGKILL)
    # well within the 12 s a worker waits for heartbeats: the orchestrator pipe's EOF
    eventually(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status()
                               != psutil.STATUS_ZOMBIE for p in worker_pids),
               timeout=5, what="orphaned workers to exit on their own")
    with fleet.journal() as journal:
        fills_before = journal.execute("SELECT * FROM fills ORDER BY trade_id").fetchall()
    positions = {
        s: sum(float(f["qty"]) * (1 if f["side"] == "BUY" else -1)
               for f in fills_before if f["symbol"] == s)
        for s in ("BTCUSDT", "ETHUSDT")
    }
    # No stale lock or socket blocks the restart; positions resume from the journal. A slow
    # strategy on a slow clock keeps the restarted fleet from trading while we compare.
    fleet.up("BTCUSDT", "ETHUSDT", "--speed", "1", "-s", "sma_cross:fast=200,slow=600")
    workers = eventually(lambda: where(fleet.workers(), lambda ws: bool(ws) and all(
        w["worker_position"] is not None for w in ws.values())),
        what="the restarted workers' first heartbeats")
    with fleet.journal() as journal:
        fills_after = journal.execute("SELECT * FROM fills ORDER BY trade_id").fetchall()
    assert [tuple(r) for r in fills_after] == [tuple(r) for r in fills_before]  # none lost
    for symbol, worker in workers.items():
        assert worker["position"] == pytest.approx(positions[symbol])
        assert worker["worker_position"] == pytest.approx(positions[symbol])


_MAIN_RECORDER = """
import sys
from pathlib import Path

from strategies.sma_cross import SmaCross

with open(Path(__file__).with_suffix(".mains"), "a") as record:
    print(sys.modules["__main__"].__name__, file=record)


class Recorder(SmaCross):
    name = "recorder"
"""


def test_workers_do_not_rerun_the_daemons_main_module(fleet: FleetCli, tmp_path: Path) -> None:
    """multiprocessing re-runs the parent's main module as `__mp_main__` in every forked
    worker unless it is a package's `__main__` (warning "found in sys.modules" when a preload
    already imported it): the daemon runs as `-m orchestrator`, so workers skip it."""
    strategy = tmp_path / "recorder.py"
    strategy.write_text(_MAIN_RECORDER)
    fleet.up("BTCUSDT", "XRPUSDT", "-s", f"{strategy}:Recorder")
    mains = eventually(lambda: where(strategy.with_suffix(".mains"), Path.exists),
                       what="a worker to load the strategy")
    eventually(lambda: mains.read_text().count("\n") >= 2, what="both workers")
    assert "__mp_main__" not in mains.read_text()
    log = Home(fleet.home).orchestrator_log.read_text()
    assert "RuntimeWarning" not in log and "found in sys.modules" not in log
