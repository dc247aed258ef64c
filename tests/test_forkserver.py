"""The backtest's own fork server (orchestrator.backtest.forkserver and launcher): children
start from it, report how they ended, and nothing outlives the caller or Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from orchestrator.backtest import launcher
from orchestrator.backtest.pool import BacktestFailed, run_jobs
from orchestrator.backtest.session import Request, prepare
from tests.backtest_support import strategy_file
from tests.support import eventually

REPO = Path(__file__).resolve().parents[1]
RANGE = {"interval": "1m", "start": "2025-01-01", "end": "2025-01-02"}


def _job(strategy: str) -> list:  # type: ignore[type-arg]
    return prepare(Request(symbols=["BTCUSDT"], strategies=[strategy], **RANGE)).jobs


def _alive(pid: int) -> bool:
    """Running, not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _processes() -> Iterator[tuple[int, str, int, int]]:
    """(pid, state, parent pid, session id) of every process."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rpartition(")")[2].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            yield int(entry), fields[0], int(fields[1]), int(fields[3])


def _processes_of_session(sid: int) -> list[int]:
    """The live (not zombie) processes of session ``sid``."""
    return [pid for pid, state, _, session in _processes() if session == sid and state != "Z"]


def _children_of(parent: int) -> list[str]:
    """Each child's state (R, S, Z, ...)."""
    return [state for _, state, ppid, _ in _processes() if ppid == parent]


def _strategy(directory: Path, module: str, on_bar: str, imports: str = "") -> Path:
    """``module``.py with a strategy ``Test`` (no warm-up) whose on_bar runs ``on_bar``."""
    return strategy_file(directory, module, f"""\
{imports}

class Test(Strategy):
    name = {module!r}

    @property
    def warmup(self):
        return 0

    def on_bar(self, bar):
        {on_bar}
""")


@pytest.fixture
def linux() -> Iterator[None]:
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")
    yield


def test_a_killed_fork_server_is_started_again_and_the_run_is_the_same(linux: None) -> None:
    jobs = _job("sma_cross:fast=5,slow=20")
    [before] = run_jobs(jobs)
    server = launcher._server
    assert server is not None
    os.kill(server.process.pid, signal.SIGKILL)
    eventually(lambda: server.process.poll() is not None, what="the fork server gone")
    [after] = run_jobs(jobs)
    assert launcher._server is not server and launcher._server is not None
    before.run.seconds = after.run.seconds = 0.0
    assert msgspec.msgpack.encode(before) == msgspec.msgpack.encode(after)


def test_the_fork_server_reaps_every_child(linux: None) -> None:
    """Children that sent their results are not waited for by the caller: the server reaps
    them, so none is left, not even as a zombie."""
    jobs = prepare(Request(symbols=["BTCUSDT", "ETHUSDT", "XRPUSDT"],
                           strategies=["sma_cross"], **RANGE)).jobs
    run_jobs(jobs)
    server = launcher._server
    assert server is not None
    eventually(lambda: not _children_of(server.process.pid),
               what="the server's children reaped")


def test_the_fork_server_exits_with_its_caller(linux: None) -> None:
    code = textwrap.dedent("""
        from orchestrator.backtest import launcher
        from orchestrator.backtest.pool import run_jobs
        from orchestrator.backtest.session import Request, prepare
        jobs = prepare(Request(symbols=["BTCUSDT"], strategies=["sma_cross"], interval="1m",
                               start="2025-01-01", end="2025-01-02")).jobs
        run_jobs(jobs)
        print(launcher._server.process.pid, flush=True)
        import os
        os._exit(0)  # no atexit: the server must notice that its caller is gone
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=REPO, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    server = int(done.stdout.split()[-1])
    try:
        eventually(lambda: not _alive(server), what="the fork server exited")
    finally:
        if _alive(server):
            os.kill(server, signal.SIGKILL)


def test_a_child_killed_by_a_signal_fails_its_run_with_the_signal(tmp_path: Path) -> None:
    path = _strategy(tmp_path, "suicide", "os.kill(os.getpid(), signal.SIGKILL)",
                     "import os, signal")
    with pytest.raises(BacktestFailed, match=r"BTCUSDT: the backtest process died \(exit code -9"):
        run_jobs(_job(f"{path}:Test"))


def test_a_strategy_module_on_the_callers_path_imports_in_the_child(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A child imports ``module:Class`` as the caller would: with its sys.path and cwd."""
    _strategy(tmp_path, "my_far_strategy", "return Signal.LONG")
    monkeypatch.syspath_prepend(str(tmp_path))
    jobs = _job("my_far_strategy:Test")
    [isolated] = run_jobs(jobs)
    [here] = run_jobs(jobs, isolate=False)
    assert isolated.run.fills and isolated.run.fills == here.run.fills


@contextlib.contextmanager
def _cli_session(*args: str) -> Iterator[subprocess.Popen[str]]:
    """``multibot`` with ``args`` in a session of its own; whatever of the session is still
    running at the end is killed."""
    cli = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args], cwd=REPO,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        yield cli
    finally:
        for pid in _processes_of_session(cli.pid):
            os.kill(pid, signal.SIGKILL)
        if cli.poll() is None:
            cli.kill()
        cli.communicate(timeout=30)


def test_ctrl_c_stops_the_backtest_and_every_process_it_started(linux: None,
                                                               tmp_path: Path) -> None:
    path = _strategy(tmp_path, "slow", "time.sleep(0.01)", "import time")
    with _cli_session("backtest", "BTCUSDT", "ETHUSDT", "-s", f"{path}:Test", "--interval",
                      "1m", "--from", "2025-01-01", "--to", "2025-01-05") as cli:
        # the CLI, its fork server and a child per symbol
        eventually(lambda: len(_processes_of_session(cli.pid)) >= 4, timeout=60,
                   what="the backtest children running")
        os.killpg(cli.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        cli.wait(30)
        eventually(lambda: not _processes_of_session(cli.pid), what="no process left")
    assert cli.returncode != 0


def test_without_memfds_the_bars_go_with_the_assignment(monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = _job("sma_cross:fast=5,slow=20")
    [shared] = run_jobs(jobs)
    monkeypatch.setattr("orchestrator.backtest.pool.shareable", lambda: False)
    [carried] = run_jobs(jobs)
    shared.run.seconds = carried.run.seconds = 0.0
    assert carried.run.fills
    assert msgspec.msgpack.encode(shared) == msgspec.msgpack.encode(carried)


def test_a_rejected_command_leaves_no_fork_server_behind(linux: None) -> None:
    """The command starts the fork server before it checks its input (to overlap their
    start-ups); a usage error must still leave no process."""
    with _cli_session("backtest", "BTCUSTD") as cli:
        _, err = cli.communicate(timeout=60)
        assert cli.returncode == 2 and "BTCUSTD" in err
        eventually(lambda: not _processes_of_session(cli.pid), what="no process left")
