"""The backtest's own fork server (multibot.backtest.forkserver and launcher): children
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
from typing import TypedDict

import msgspec
import psutil
import pytest

from multibot.backtest import launcher
from multibot.backtest.engine import SymbolJob
from multibot.backtest.pool import BacktestFailed, run_jobs
from multibot.backtest.session import Request, prepare
from tests.backtest_support import strategy_file
from tests.support import eventually

REPO = Path(__file__).resolve().parents[1]


class _Range(TypedDict):
    interval: str
    start: str
    end: str


RANGE: _Range = {"interval": "1m", "start": "2025-01-01", "end": "2025-01-02"}


def _job(strategy: str) -> list[SymbolJob]:
    return prepare(Request(symbols=["BTCUSDT"], strategies=[strategy], **RANGE)).jobs


def _processes() -> Iterator[tuple[int, str, int, int]]:
    """(pid, psutil status, parent pid, session id) of every process."""
    for proc in psutil.process_iter(["status", "ppid"]):
        try:
            session = os.getsid(proc.pid)
        except (ProcessLookupError, PermissionError):
            continue  # gone meanwhile
        yield proc.pid, proc.info["status"], proc.info["ppid"], session


def _alive(pid: int) -> bool:
    """Running, not a zombie."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _processes_of_session(sid: int) -> list[int]:
    """The live (not zombie) processes of session ``sid``."""
    return [pid for pid, status, _, session in _processes()
            if session == sid and status != psutil.STATUS_ZOMBIE]


def _children_of(parent: int) -> list[str]:
    """Each child's status (running, sleeping, zombie, ...)."""
    return [status for _, status, ppid, _ in _processes() if ppid == parent]


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
        pytest.skip("memfds, close-on-exec descriptors: the fork server is Linux's")
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
    assert server.sock.fileno() == -1  # the dead server's socket is closed, not leaked
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
        from multibot.backtest import launcher
        from multibot.backtest.pool import run_jobs
        from multibot.backtest.session import Request, prepare
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
def _session(*argv: str) -> Iterator[subprocess.Popen[str]]:
    """``argv`` in a session of its own; whatever of the session is still running at the
    end is killed."""
    process = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        yield process
    finally:
        for pid in _processes_of_session(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def _cli_session(*args: str) -> contextlib.AbstractContextManager[subprocess.Popen[str]]:
    return _session(sys.executable, "-m", "multibot.cli.app", *args)


def test_ctrl_c_stops_the_backtest_and_every_process_it_started(linux: None,
                                                               tmp_path: Path) -> None:
    path = _strategy(tmp_path, "slow", "time.sleep(0.01)", "import time")
    with _cli_session("backtest", "BTCUSDT", "ETHUSDT", "-s", f"{path}:Test", "--interval",
                      "1m", "--from", "2025-01-01", "--to", "2025-01-05") as cli:
        eventually(lambda: len(_processes_of_session(cli.pid)) >= 3, timeout=60,
                   what="the CLI, its fork server and a child running")
        os.killpg(cli.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        cli.wait(30)
        eventually(lambda: not _processes_of_session(cli.pid), what="no process left")
    assert cli.returncode != 0


def test_without_memfds_the_bars_go_with_the_assignment(monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = _job("sma_cross:fast=5,slow=20")
    [shared] = run_jobs(jobs)
    monkeypatch.setattr("multibot.backtest.pool.shareable", lambda: False)
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


def test_a_failed_run_stops_the_other_children_through_the_server(linux: None,
                                                                  tmp_path: Path) -> None:
    """One symbol's strategy fails: the run fails at once, and the other symbol's child (a
    slow one, that would run for a minute) is stopped by the fork server, not left running."""
    failing = _strategy(tmp_path, "failing", "raise SystemExit('boom')")
    slow = _strategy(tmp_path, "slower", "time.sleep(0.05)", "import time")
    jobs = _job(f"{failing}:Test") + prepare(Request(
        symbols=["ETHUSDT"], strategies=[f"{slow}:Test"], **RANGE)).jobs
    with pytest.raises(BacktestFailed, match="BTCUSDT: SystemExit: boom"):
        run_jobs(jobs, workers=2)
    server = launcher._server
    assert server is not None
    eventually(lambda: not _children_of(server.process.pid), timeout=10,
               what="the slow child stopped")


def test_children_do_not_outlive_a_killed_caller(linux: None, tmp_path: Path) -> None:
    """SIGKILL of the caller (an OOM kill, `timeout -s KILL`): the fork server sees its
    socket close and stops the children still running, then exits."""
    path = _strategy(tmp_path, "slowest", "time.sleep(0.05)", "import time")
    code = textwrap.dedent(f"""
        from multibot.backtest.pool import run_jobs
        from multibot.backtest.session import Request, prepare
        jobs = prepare(Request(symbols=["BTCUSDT", "ETHUSDT"], strategies=["{path}:Test"],
                               interval="1m", start="2025-01-01", end="2025-01-02")).jobs
        run_jobs(jobs, workers=2)
    """)
    with _session(sys.executable, "-c", code) as caller:
        eventually(lambda: len(_processes_of_session(caller.pid)) >= 3, timeout=60,
                   what="the caller, its fork server and a child")
        caller.kill()
        caller.wait(30)
        eventually(lambda: not _processes_of_session(caller.pid), what="no process left")


def test_the_fork_server_imports_this_checkout_whatever_the_working_directory(
        linux: None, tmp_path: Path) -> None:
    """Run from a directory with a `strategies` package and a `msgspec.py` of its own (a
    trading user's), the command and its fork server still import multibot's and the
    installed ones."""
    shadow = tmp_path / "strategies"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('the wrong strategies package')\n")
    (tmp_path / "msgspec.py").write_text("raise ImportError('the wrong msgspec')\n")
    script = Path(sys.executable).parent / "multibot"
    if not script.exists():
        pytest.skip("no multibot script next to this interpreter")
    done = subprocess.run([str(script), "backtest", "BTCUSDT", "--from", "2025-01-01", "--to",
                           "2025-01-02", "--out", str(tmp_path / "out"), "-q"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "report.json").exists()
