"""Helpers for tests that drive real fleets: the CLI as a subprocess, deadlines, cleanup."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psutil

T = TypeVar("T")


def record_figures(figures: dict[str, Any]) -> None:
    """Print a suite's figures; merge them into $MULTIBOT_RELIABILITY_FIGURES when set."""
    print(f"\nreliability figures: {json.dumps(figures)}")
    target = os.environ.get("MULTIBOT_RELIABILITY_FIGURES")
    if target:
        path = Path(target)
        merged = json.loads(path.read_text()) if path.exists() else {}
        merged.update(figures)
        path.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")


def eventually(probe: Callable[[], T | None], timeout: float = 15.0, interval: float = 0.05,
               what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy; fail with the last value seen.

    What is returned is truthy, so never None: a probe typed ``X | None`` gives an ``X``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def where(value: T, condition: Callable[[T], bool]) -> T | None:
    """``value`` if ``condition(value)`` holds, else None: a probe for ``eventually`` that
    returns the value it checked (``where(fleet.workers(), lambda ws: ...)``)."""
    return value if condition(value) else None


class FleetCli:
    """Runs `multibot ... --home HOME` as a real subprocess and cleans up after itself."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def run(self, *args: str, timeout: float = 60.0, check: bool = False,
            env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "multibot.cli.app", *args, "--home", str(self.home)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=env, cwd=cwd)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def up(self, *args: str, timeout: float = 60.0,
           cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return self.run("up", *args, timeout=timeout, check=True, cwd=cwd)

    def status(self) -> dict[str, Any]:
        proc = self.run("status", "--json", check=True)
        data: dict[str, Any] = json.loads(proc.stdout)
        return data

    def workers(self) -> dict[str, dict[str, Any]]:
        return {w["symbol"]: w for w in self.status()["workers"]}

    def orchestrator_pid(self) -> int | None:
        try:
            return int((self.home / "run" / "orchestrator.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def processes(self) -> list[psutil.Process]:
        """Every live process started for this home (orchestrator and workers)."""
        found = []
        for proc in psutil.process_iter(["cmdline", "status"]):
            cmdline = proc.info["cmdline"] or []
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            ours = str(self.home) in " ".join(cmdline) and proc.pid != os.getpid()
            roles = ("orchestrator", "worker", "forkserver")
            if ours and any(role in c for c in cmdline for role in roles):
                found.append(proc)
        return found

    def journal(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.home / "multibot.db", timeout=5)
        conn.row_factory = sqlite3.Row
        return conn

    def cleanup(self) -> None:
        """Best effort orderly `down`, then SIGKILL whatever is left of this home."""
        if self.orchestrator_pid() is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.run("down", timeout=60)
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGKILL)


def worker_running(cli: FleetCli, symbol: str, not_pid: int | None = None
                   ) -> dict[str, Any] | None:
    worker = cli.workers().get(symbol)
    if worker and worker["state"] == "RUNNING" and worker["pid"] != not_pid:
        return worker
    return None
