"""The CLI's view of a fleet's process: alive, gone, or a zombie (gone too)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from multibot import client
from multibot.client import FleetNotRunning, pid_alive, request
from multibot.wire.home import Home
from multibot.wire.protocol import Status
from tests.support import FleetCli, eventually


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return stat[stat.rfind(b")") + 2:][:1].decode()


def test_pid_alive_tells_running_from_zombie_and_gone(tmp_path: Path) -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(None) and not pid_alive(0) and not pid_alive(-1)
    # a name with spaces and parentheses (the kernel names a process after the file it ran)
    odd = tmp_path / "odd ) Z (name"
    sleep = shutil.which("sleep")
    assert sleep is not None
    odd.symlink_to(sleep)
    sleeper = subprocess.Popen([str(odd), "30"])
    try:
        assert "odd ) Z (name" in Path(f"/proc/{sleeper.pid}/stat").read_text()
        assert pid_alive(sleeper.pid)
    finally:
        sleeper.kill()
    eventually(lambda: _state(sleeper.pid) == "Z", what="the child to be a zombie")
    assert not pid_alive(sleeper.pid)  # exited, not reaped yet
    sleeper.wait()
    assert not pid_alive(sleeper.pid)


@pytest.mark.process
def test_a_request_to_an_orchestrator_that_dies_fails_at_once(
        fleet: FleetCli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not after the request's timeout: the waiting client watches the orchestrator's pid."""
    assert fleet.up("BTCUSDT", "--speed", "20").returncode == 0
    pid = fleet.orchestrator_pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # it takes the request but can no longer answer
    checks: list[int | None] = []

    def killed_once_waiting(checked: int | None) -> bool:
        checks.append(checked)
        if len(checks) == 2:  # the first check while the sent request waits for its reply
            os.kill(pid, signal.SIGKILL)
            eventually(lambda: not pid_alive(pid), what="the orchestrator to be gone")
        return pid_alive(checked)

    monkeypatch.setattr(client, "pid_alive", killed_once_waiting)
    try:
        with pytest.raises(FleetNotRunning, match=f"pid {pid}.* exited before it answered"):
            request(Home(fleet.home), Status(), timeout=10.0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
