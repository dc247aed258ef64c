"""Credentials never leak: not to workers, argv, logs, status, events or the journal."""

from __future__ import annotations

import os
import sqlite3

import psutil
import pytest

from orchestrator.supervisor import worker_environment
from tests.support import FleetCli, eventually, record_figures

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
