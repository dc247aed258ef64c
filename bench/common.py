"""Shared pieces of the benchmarks: machine facts, statistics, result records, a workspace
whose path marks every process a benchmark starts, and `Fleet` (the real CLI on a temp home).

Every process a benchmark starts names the workspace path on its command line (a socket, a
home, or a marker argument), so `Workspace.close` can find and SIGKILL anything left over
even when a fleet's daemon was re-parented away from us.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import psutil

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
MB = 1_000_000  # memory figures are in MB = 10^6 bytes (stricter than MiB for the goals)


class BenchError(Exception):
    """A scenario could not be measured; the message says why."""


# --- machine facts ----------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _virtualized() -> bool:
    with contextlib.suppress(OSError):
        return " hypervisor" in Path("/proc/cpuinfo").read_text()
    return False


def code_version() -> str:
    """The commit measured, and whether the working tree differed from it."""
    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO,
                              timeout=10)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    commit = git("log", "-1", "--format=%h %s")
    changed = [line for line in git("status", "--porcelain").splitlines()
               if not line[3:].startswith(("bench/", "BENCHMARKS", "tests/test_bench"))]
    if not commit:
        return "unknown (not a git checkout)"
    return commit + (f" + uncommitted changes in {len(changed)} file(s) outside bench/"
                     if changed else "")


def machine_facts() -> dict[str, str]:
    """What the figures depend on: CPU, cores, RAM, kernel and the versions on the wire path."""
    import msgspec
    import zmq

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "CPU": _cpu_model() + (" (virtual machine)" if _virtualized() else ""),
        "cores": f"{psutil.cpu_count(logical=False)} physical, {psutil.cpu_count()} logical",
        "RAM": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "pyzmq / libzmq": f"{zmq.pyzmq_version()} / {zmq.zmq_version()}",
        "msgspec / psutil": f"{msgspec.__version__} / {psutil.__version__}",
        "load average at start (1, 5, 15 min)": load,
        "code measured": code_version(),
    }


# --- statistics -------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation between the closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Stats:
    n: int
    median: float
    p99: float
    lo: float
    hi: float
    q1: float
    q3: float

    @classmethod
    def of(cls, values: list[float]) -> Stats:
        return cls(n=len(values), median=percentile(values, 50), p99=percentile(values, 99),
                   lo=min(values), hi=max(values), q1=percentile(values, 25),
                   q3=percentile(values, 75))


def timed_run(args: list[str],
              timeout: float = 60.0) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Wall time of a whole process, from fork to exit; the process's output is kept."""
    started = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=bench_env())
    return time.perf_counter() - started, proc


def python_startup() -> float:
    """The floor of every command-line tool written in Python: `python -c pass`."""
    wall, _ = timed_run([PYTHON, "-c", "pass"])
    return wall


def parallel_startup(count: int, code: str = "pass") -> float:
    """Wall time for `count` fresh interpreters started at once to run `code` and exit."""
    started = time.perf_counter()
    procs = [subprocess.Popen([PYTHON, "-c", code], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=bench_env()) for _ in range(count)]
    for proc in procs:
        proc.wait(timeout=300)
    return time.perf_counter() - started


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    """A goal from the issue: on the figure itself or on its ratio to the floor."""

    text: str
    on: Literal["value", "ratio"]
    op: Literal["<=", ">="]
    limit: float

    def met(self, value: float) -> bool:
        return value <= self.limit if self.op == "<=" else value >= self.limit


@dataclass(frozen=True)
class Figure:
    """One measured figure of one run, with the floor (or peer) measured in the same run."""

    key: str  # stable id, e.g. "latency.p50"
    scenario: str
    metric: str
    unit: str
    value: float
    floor: float | None = None
    floor_name: str = ""
    goal: Goal | None = None
    detail: bool = False  # a breakdown that explains a headline figure, not a headline itself

    @property
    def ratio(self) -> float | None:
        if self.floor is None or self.floor == 0:
            return None
        return self.value / self.floor


# --- processes --------------------------------------------------------------------------------


def bench_env() -> dict[str, str]:
    """Child processes import `bench.*` from the repo and never hold credentials."""
    env = {k: v for k, v in os.environ.items() if "KEY" not in k and "SECRET" not in k}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def mentions(cmdline: list[str], path: Path) -> bool:
    """Does a command line name ``path`` or something under it (e.g. ``ipc://<path>/x``)?"""
    needle = str(path) + "/"
    return any(needle in token + "/" for token in " ".join(cmdline).split())


def processes_mentioning(path: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if mentions(proc.info["cmdline"] or [], path):
                found.append(proc)
    return found


def kill_all(procs: list[psutil.Process]) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs, timeout=10)


@dataclass(frozen=True)
class Memory:
    uss: int
    pss: int
    rss: int


def memory(pid: int) -> Memory:
    info = psutil.Process(pid).memory_full_info()
    return Memory(uss=info.uss, pss=info.pss, rss=info.rss)


def thread_cpu_seconds(pids: list[int]) -> tuple[float, float, float]:
    """(main threads user, main threads system, other threads) CPU seconds of these
    processes; the other threads of a worker are ZeroMQ's (I/O thread, reaper)."""
    user = system = other = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            for thread in psutil.Process(pid).threads():
                if thread.id == pid:
                    user += thread.user_time
                    system += thread.system_time
                else:
                    other += thread.user_time + thread.system_time
    return user, system, other


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """CPU seconds (user + system, all threads) of each live process.

    From the scheduler's own run time (/proc/<pid>/task/*/schedstat, nanoseconds) where the
    kernel has it: an idle worker uses a few ms in a window, and the 10 ms ticks of
    /proc/<pid>/stat (psutil's cpu_times) would blur that. psutil otherwise."""
    out = {}
    for pid in pids:
        try:
            out[pid] = sum(int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
                           for task in os.listdir(f"/proc/{pid}/task")) / 1e9
        except (OSError, ValueError, IndexError):
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(pid).cpu_times()
                out[pid] = times.user + times.system
    return out


class Workspace:
    """A private temp dir under /tmp (short enough for ipc:// paths) and the processes that
    name it; `close` stops every one of them and removes the dir."""

    def __init__(self, parent: Path | None = None) -> None:
        base = parent or Path(tempfile.gettempdir())
        base.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix="mbb-", dir=base))
        self._spawned: list[subprocess.Popen[bytes]] = []

    def endpoint(self, name: str) -> str:
        return f"ipc://{self.path / name}.sock"

    def spawn(self, args: list[str], log: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    env=env or bench_env(), cwd=REPO)
        finally:
            if log is not None:
                out.close()  # type: ignore[union-attr]
        self._spawned.append(proc)
        return proc

    def idle_process(self, imports: str = "") -> subprocess.Popen[bytes]:
        """An interpreter that imports ``imports`` (comma-separated) and sleeps: a memory
        floor (nothing imported) or peer (the worker's imports)."""
        code = (f"import {imports}\n" if imports else "") + "import time\ntime.sleep(120)"
        return self.spawn([PYTHON, "-c", code, str(self.path / "idle")])

    def leftovers(self) -> list[psutil.Process]:
        return processes_mentioning(self.path)

    def close(self) -> list[int]:
        """Stop everything; returns the pids that had to be killed."""
        for proc in self._spawned:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        left = self.leftovers()
        kill_all(left)
        shutil.rmtree(self.path, ignore_errors=True)
        return [p.pid for p in left]

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def multibot_command() -> list[str]:
    """The console script users run (so its whole start-up is measured), else the module."""
    script = Path(PYTHON).with_name("multibot")
    return [str(script)] if script.exists() else [PYTHON, "-m", "multibot.cli.app"]


class Fleet:
    """The real `multibot` CLI driving one fleet on a temporary home.

    Leaving the block always runs `multibot down`, then SIGKILLs whatever process still names
    the home (orchestrator or worker), pass or fail.
    """

    def __init__(self, ws: Workspace, name: str) -> None:
        self.home = ws.path / name
        self._cmd = multibot_command()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def cli(self, *args: str, timeout: float = 120.0,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*self._cmd, *args, "--home", str(self.home)], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              env=bench_env())
        if check and proc.returncode != 0:
            raise BenchError(f"multibot {' '.join(args[:1])} failed ({proc.returncode}): "
                             f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
        return proc

    def timed(self, *args: str, timeout: float = 120.0) -> float:
        started = time.perf_counter()
        self.cli(*args, timeout=timeout)
        return time.perf_counter() - started

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.cli("status", "--json").stdout)
        return data

    def orchestrator_pid(self) -> int | None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int((self.home / "run" / "orchestrator.pid").read_text())
        return None

    def journal(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.home / 'multibot.db'}?mode=ro", uri=True, timeout=5)

    def state_events(self, since_ns: int = 0) -> list[tuple[int, str, str]]:
        """(ts_ns, symbol, state) of every journaled state change since ``since_ns``."""
        with contextlib.closing(self.journal()) as conn:
            rows = conn.execute("SELECT ts_ns, symbol, detail FROM events WHERE kind='state' "
                                "AND ts_ns > ? ORDER BY id", (since_ns,)).fetchall()
        return [(int(ts), str(sym), str(detail).split(":")[0]) for ts, sym, detail in rows]

    def processes(self) -> list[psutil.Process]:
        return processes_mentioning(self.home)

    def close(self) -> None:
        if self.orchestrator_pid() is not None and (self.home / "run").exists():
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.cli("down", timeout=120, check=False)
        kill_all(self.processes())
