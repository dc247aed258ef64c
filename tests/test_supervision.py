"""Supervision with real processes: crashes, hangs, crash loops, graceful stops."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.invariants import assert_never_doubled
from tests.support import FleetCli, eventually, where, worker_running

pytestmark = pytest.mark.process

FAST_TRADER = ("-s", "sma_cross:fast=3,slow=10")


def _fills(fleet: FleetCli, symbol: str) -> list[Any]:
    with fleet.journal() as journal:
        return journal.execute(
            "SELECT * FROM fills WHERE symbol = ? ORDER BY trade_id", (symbol,)
        ).fetchall()


def test_sigkilled_worker_comes_back_with_its_position(fleet: FleetCli) -> None:
    # up to 10 kills: room for them all before the restart limit, and for the backoff
    fleet.up("BTCUSDT", "ETHUSDT", "--speed", "4", "--max-restarts", "20", *FAST_TRADER)
    others = fleet.workers()["ETHUSDT"]["pid"]
    # a restarted worker acts at once when its strategy turned flat while it was down (it
    # sells what it holds): such a restart is not quiet, and is tried again
    for _attempt in range(10):
        worker = eventually(lambda: where(fleet.workers()["BTCUSDT"], lambda w: w["position"] > 0
                                          and w["worker_position"] == w["position"]),
                            timeout=30, what="BTCUSDT to hold a position")
        fills = len(_fills(fleet, "BTCUSDT"))
        os.kill(worker["pid"], signal.SIGKILL)
        old_pid = worker["pid"]
        eventually(functools.partial(worker_running, fleet, "BTCUSDT", not_pid=old_pid),
                   timeout=20, what="BTCUSDT to restart (backoff grows to 8 s)")
        back = eventually(lambda: where(fleet.workers()["BTCUSDT"],
                                        lambda w: w["worker_position"] is not None),
                          what="the restarted worker's heartbeat")
        if len(_fills(fleet, "BTCUSDT")) != fills:
            continue  # a fill landed while it restarted: the comparison is moot, try again
        assert back["restarts"] >= 1
        assert back["worker_position"] == worker["position"]  # resumed from the broker
        assert back["position"] == worker["position"]
        assert "killed by signal SIGKILL" in back["last_error"]
        break
    else:
        pytest.fail("could not observe a quiet restart in 10 attempts")
    assert fleet.workers()["ETHUSDT"]["pid"] == others  # the other symbol was untouched
    eventually(lambda: len(_fills(fleet, "BTCUSDT")) > fills + 2, timeout=30,
               what="BTCUSDT to keep trading after the restart")
    assert_never_doubled(fleet.home / "multibot.db")


CRASHING_STRATEGY = '''
import os
from strategies.base import Strategy


class CrashOnStart(Strategy):
    name = "crash_on_start"

    @property
    def warmup(self) -> int:
        return 1

    def on_start(self) -> None:
        os._exit(13)

    def on_bar(self, bar):
        return None
'''


def test_crash_loop_marks_only_that_symbol_failed(fleet: FleetCli, tmp_path: Path) -> None:
    path = tmp_path / "crashy.py"
    path.write_text(CRASHING_STRATEGY)
    fleet.up("BTCUSDT", "--max-restarts", "2", "--restart-window", "30")
    healthy = fleet.workers()["BTCUSDT"]["pid"]
    proc = fleet.run("up", "ETHUSDT", "-s", f"{path}:CrashOnStart")
    assert proc.returncode == 1
    assert "FAILED" in proc.stdout and "exited with code 13" in proc.stdout
    workers = fleet.workers()
    assert workers["ETHUSDT"]["state"] == "FAILED" and workers["ETHUSDT"]["restarts"] == 2
    assert "gave up after 3 exits" in workers["ETHUSDT"]["last_error"]
    assert workers["BTCUSDT"]["state"] == "RUNNING" and workers["BTCUSDT"]["pid"] == healthy
    bars = workers["BTCUSDT"]["bars"]
    eventually(lambda: fleet.workers()["BTCUSDT"]["bars"] > bars, what="BTCUSDT to go on")
    fleet.up("ETHUSDT")  # a FAILED symbol can be started again with a good strategy
    assert fleet.workers()["ETHUSDT"]["state"] == "RUNNING"


def test_hung_worker_is_killed_and_restarted(fleet: FleetCli) -> None:
    fleet.up("XRPUSDT")
    pid = fleet.workers()["XRPUSDT"]["pid"]
    os.kill(pid, signal.SIGSTOP)
    back = eventually(lambda: worker_running(fleet, "XRPUSDT", not_pid=pid), timeout=30,
                      what="the hung worker to be replaced")
    assert "no heartbeat" in back["last_error"]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_kill_flatten_closes_the_position(fleet: FleetCli) -> None:
    fleet.up("SOLUSDT", "--speed", "20", *FAST_TRADER)
    eventually(lambda: fleet.workers()["SOLUSDT"]["position"] > 0, timeout=30,
               what="a position to flatten")
    fleet.run("kill", "SOLUSDT", "--flatten", check=True)
    worker = fleet.workers()["SOLUSDT"]
    assert worker["state"] == "STOPPED" and worker["position"] == 0
    assert worker["open_orders"] == 0


def test_kill_cancels_resting_limit_orders(fleet: FleetCli) -> None:
    fleet.up("BTCUSDT", "--order-type", "LIMIT", "--speed", "20", *FAST_TRADER)
    with fleet.journal() as journal:
        eventually(lambda: journal.execute(
            "SELECT count(*) FROM orders WHERE type = 'LIMIT'").fetchone()[0] > 2,
            timeout=30, what="limit orders")
    fleet.run("kill", "BTCUSDT", check=True)
    with fleet.journal() as journal:
        still_open = journal.execute(
            "SELECT count(*) FROM orders WHERE status IN ('NEW', 'PARTIALLY_FILLED')"
        ).fetchone()[0]
    assert still_open == 0
    assert fleet.workers()["BTCUSDT"]["open_orders"] == 0


def test_foreground_ctrl_c_is_an_orderly_down(tmp_path: Path) -> None:
    home = tmp_path / "fg"
    cli = FleetCli(home)
    proc = subprocess.Popen(
        [sys.executable, "-m", "multibot.cli.app", "up", "BTCUSDT", "ETHUSDT",
         "--foreground", "--home", str(home)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        eventually(lambda: cli.orchestrator_pid() is not None and len(cli.processes()) >= 3,
                   timeout=20, what="a foreground fleet")
        eventually(lambda: all(w["state"] == "RUNNING" for w in cli.workers().values()),
                   what="workers running")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert cli.processes() == []
        with cli.journal() as journal:  # each worker went through an orderly stop
            stopped = {r[0] for r in journal.execute(
                "SELECT symbol FROM events WHERE kind = 'state' AND detail = 'STOPPED'")}
        assert stopped == {"BTCUSDT", "ETHUSDT"}
        log = (home / "logs" / "orchestrator.log").read_text()
        assert log.count("worker stopped (exited with code 0)") == 2
    finally:
        proc.kill()
        proc.wait(timeout=10)
        cli.cleanup()


def test_one_orchestrator_per_home_and_two_homes_coexist(fleet: FleetCli,
                                                         tmp_path: Path) -> None:
    fleet.up("BTCUSDT")
    second = subprocess.run(
        [sys.executable, "-m", "orchestrator", "--home", str(fleet.home)],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )
    assert second.returncode == 3 and "already runs" in second.stderr
    other = FleetCli(tmp_path / "other")
    try:
        other.up("BTCUSDT")
        assert other.workers()["BTCUSDT"]["pid"] != fleet.workers()["BTCUSDT"]["pid"]
        other.run("down", check=True)
        assert fleet.workers()["BTCUSDT"]["state"] == "RUNNING"  # untouched by the other
    finally:
        other.cleanup()
    started = time.monotonic()
    assert fleet.run("status").returncode == 0 and time.monotonic() - started < 10


def test_sigterm_to_the_orchestrator_is_an_orderly_down(fleet: FleetCli) -> None:
    fleet.up("BTCUSDT", "XRPUSDT")
    orchestrator = fleet.orchestrator_pid()
    assert orchestrator is not None
    os.kill(orchestrator, signal.SIGTERM)
    eventually(lambda: fleet.processes() == [], timeout=20, what="everything to stop")
    with fleet.journal() as journal:
        stopped = {r[0] for r in journal.execute(
            "SELECT symbol FROM events WHERE kind = 'state' AND detail = 'STOPPED'")}
    assert stopped == {"BTCUSDT", "XRPUSDT"}  # each worker was stopped, not orphaned
    assert not (fleet.home / "run" / "orchestrator.pid").exists()


def test_a_stalled_orchestrator_reads_waiting_heartbeats_before_judging(
        fleet: FleetCli) -> None:
    # Longer than the supervisor's hung limit (10 s without a heartbeat), shorter than the
    # workers' own (3 silent periods of 4 s, when they exit by themselves): on resume the
    # heartbeats sent meanwhile wait in the broker socket, and no healthy worker may be killed.
    stall_s = 10.6
    fleet.up("BTCUSDT", "ETHUSDT", "--speed", "20")
    before = fleet.workers()
    orchestrator = fleet.orchestrator_pid()
    assert orchestrator is not None
    os.kill(orchestrator, signal.SIGSTOP)
    try:
        time.sleep(stall_s)  # the stall itself
    finally:
        os.kill(orchestrator, signal.SIGCONT)
    resumed = time.monotonic()
    # heartbeats sent after the resume are read: the judgement has had its chance to err
    after = eventually(lambda: where(fleet.workers(), lambda ws: all(
        w["heartbeat_age_s"] is not None and w["heartbeat_age_s"] < time.monotonic() - resumed
        and w["bars"] > before[s]["bars"] for s, w in ws.items())),
        timeout=10, what="heartbeats after the resume")
    for symbol, worker in after.items():
        assert worker["state"] == "RUNNING", worker
        assert worker["pid"] == before[symbol]["pid"] and worker["restarts"] == 0, worker
    log = (fleet.home / "logs" / "orchestrator.log").read_text()
    assert "killing worker" not in log
