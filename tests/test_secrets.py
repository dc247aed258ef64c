"""Credentials never leak: not to workers, argv, logs, status, events or the journal."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
from pathlib import Path
from typing import Any

import psutil
import pytest

from orchestrator.supervisor import worker_environment
from tests.support import FleetCli, eventually, record_figures, where, worker_running

pytestmark = pytest.mark.process

SECRET = "s3cr3t-Zq8vV1rT0pP4"


def test_worker_environment_drops_anything_credential_like() -> None:
    env = worker_environment({"PATH": "/bin", "MULTIBOT_API_KEY": "k", "BINANCE_SECRET": "s",
                              "DB_PASSWORD": "p", "GITHUB_TOKEN": "t", "HOME": "/root"})
    assert set(env) >= {"PATH", "HOME"}
    assert not {"MULTIBOT_API_KEY", "BINANCE_SECRET", "DB_PASSWORD", "GITHUB_TOKEN"} & set(env)
    assert env["OMP_NUM_THREADS"] == "1"


def test_a_secret_in_the_environment_appears_nowhere(fleet: FleetCli) -> None:
    env = dict(os.environ, MULTIBOT_API_KEY=SECRET + "-key", MULTIBOT_API_SECRET=SECRET)
    fleet.run("up", "BTCUSDT", "ETHUSDT", "--speed", "50", "-s", "sma_cross:fast=2,slow=5",
              env=env, check=True)
    eventually(lambda: all(w["trades"] > 2 for w in fleet.workers().values()), timeout=30,
               what="some trading")
    for worker in fleet.workers().values():
        environ = psutil.Process(worker["pid"]).environ()
        assert SECRET not in "".join(environ.values())  # workers never hold credentials
    outputs = [fleet.run("status", check=True).stdout,
               fleet.run("status", "--json", check=True).stdout,
               fleet.run("logs", "BTCUSDT", "-n", "1000", check=True).stdout]
    outputs += [" ".join(p.cmdline()) for p in fleet.processes()]  # argv / process titles
    fleet.run("kill", "ETHUSDT", "--flatten", check=True)
    fleet.run("down", check=True)
    outputs += [p.read_text(errors="replace") for p in (fleet.home / "logs").glob("*.log")]
    with sqlite3.connect(fleet.home / "multibot.db") as journal:
        outputs += ["\n".join(journal.iterdump())]
    for text in outputs:
        assert SECRET not in text
    record_figures({"secret_redaction_places_checked": len(outputs) + 2, "secret_leaks": 0})


def _forkserver(fleet: FleetCli) -> psutil.Process | None:
    """The orchestrator's live worker forkserver (found by its title), if any."""
    pid = fleet.orchestrator_pid()
    assert pid is not None, "the fleet runs"
    orchestrator = psutil.Process(pid)
    for child in orchestrator.children():
        with contextlib.suppress(psutil.Error):
            if "multibot-forkserver" in " ".join(child.cmdline()) and child.status() not in (
                    psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                return child
    return None


def _environ(pid: int) -> dict[str, str]:
    """/proc/<pid>/environ, which the process title leaves intact (SPT_NOENV)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (entry.split(b"=", 1) for entry in raw.split(b"\0") if b"=" in entry)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def _assert_scrubbed(pid: int) -> None:
    environ = _environ(pid)
    assert "PATH" in environ  # the environment is readable: the check below means something
    assert "MULTIBOT_BINANCE_API_KEY" not in environ
    assert SECRET not in "".join(environ.values())


def _up_with_a_credential(fleet: FleetCli, *symbols: str) -> dict[str, dict[str, Any]]:
    env = dict(os.environ, MULTIBOT_BINANCE_API_KEY=SECRET)
    fleet.run("up", *symbols, "--speed", "50", env=env, check=True)
    return eventually(lambda: where(fleet.workers(), lambda ws: all(
        w["state"] == "RUNNING" for w in ws.values())), timeout=30, what="workers RUNNING")


def test_a_dead_forkserver_is_replaced_with_the_scrubbed_environment(fleet: FleetCli) -> None:
    before = _up_with_a_credential(fleet, "BTCUSDT", "ETHUSDT")
    forkserver = eventually(lambda: _forkserver(fleet), what="the worker forkserver")
    _assert_scrubbed(forkserver.pid)
    forkserver.send_signal(signal.SIGKILL)
    eventually(lambda: _forkserver(fleet) is None, what="the forkserver gone")
    psutil.Process(before["BTCUSDT"]["pid"]).send_signal(signal.SIGKILL)
    restarted = eventually(lambda: worker_running(fleet, "BTCUSDT", before["BTCUSDT"]["pid"]),
                           timeout=30, what="BTCUSDT restarted")
    _assert_scrubbed(restarted["pid"])  # forked from a new forkserver, started clean too
    _assert_scrubbed(eventually(lambda: _forkserver(fleet), what="a new forkserver").pid)
    # its exit is known (the orchestrator adopted it), not "exited with code 255"
    assert "SIGKILL" in restarted["last_error"]
    # the forkserver's death stopped no worker: ETHUSDT runs on, never restarted
    eth = before["ETHUSDT"]
    trades = eth["trades"]
    eventually(lambda: where(fleet.workers()["ETHUSDT"], lambda w: w["pid"] == eth["pid"]
                             and w["state"] == "RUNNING" and w["trades"] > trades),
               timeout=30, what="ETHUSDT trading on in the same process")
    assert fleet.workers()["ETHUSDT"]["restarts"] == 0


def test_garbage_on_the_forkserver_listener_stops_no_worker(fleet: FleetCli) -> None:
    before = _up_with_a_credential(fleet, "BTCUSDT")
    forkserver = eventually(lambda: _forkserver(fleet), what="the worker forkserver")
    listeners = [c.laddr for c in forkserver.net_connections(kind="unix")
                 if "listener-" in c.laddr]  # multiprocessing's name for it
    assert listeners, "the forkserver listens on a unix socket"
    for payload in (b"", b"garbage\0" * 100):
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(listeners[0])
            sock.sendall(payload)
    eventually(lambda: _forkserver(fleet) is None, what="multiprocessing's server exiting on it")
    btc = before["BTCUSDT"]
    trades = btc["trades"]
    eventually(lambda: where(fleet.workers()["BTCUSDT"], lambda w: w["pid"] == btc["pid"]
                             and w["state"] == "RUNNING" and w["trades"] > trades + 2),
               timeout=30, what="BTCUSDT trading on in the same process")
    fleet.run("kill", "BTCUSDT", check=True)
    fleet.run("up", "BTCUSDT", check=True)  # a forkserver (the same or a new one) still forks
    restarted = eventually(lambda: worker_running(fleet, "BTCUSDT", btc["pid"]), timeout=30,
                           what="BTCUSDT started again")
    _assert_scrubbed(restarted["pid"])
