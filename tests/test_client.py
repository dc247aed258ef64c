"""The CLI's view of a fleet's process: alive, gone, or a zombie (gone too)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from multibot.client import pid_alive
from tests.support import eventually


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
