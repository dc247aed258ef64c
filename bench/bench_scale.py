"""Scale: `multibot up` N synthetic symbols, then memory, idle CPU, `status` and restarts.

For each N, on a fresh temp home, through the real CLI:

- up: wall time of `multibot up S000USDT ... --feed synthetic` (it returns when every worker
  is RUNNING); floor: N fresh interpreters (`python -c pass`) started at once, same run;
  breakdown from the journal's state events (spawn loop, boot of the last worker);
- memory after a settle: worker USS/PSS (median, max) and orchestrator RSS/USS (psutil
  memory_full_info), against an idle bare interpreter measured in the same run;
- idle CPU of the whole fleet (orchestrator + workers, user + system) over a window with a
  slow feed (--speed 0.2), in % of one core, and the workers' voluntary wake-ups per second;
- `multibot status --json`: the whole process (fork to exit), median of K, interleaved with
  `python -c pass`;
- SIGKILL of a worker -> RUNNING again with a new pid: kill time (this process) to the
  journaled RUNNING event; each kill hits another symbol (no restart backoff); peer: a fresh
  interpreter importing the worker (`python -c "import worker.main"`).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

import psutil

from bench.common import (
    MB,
    PYTHON,
    BenchError,
    Figure,
    Fleet,
    Goal,
    Memory,
    Stats,
    Workspace,
    cpu_seconds,
    memory,
    multibot_command,
    parallel_startup,
    python_startup,
    timed_run,
)
from bench.fork_profiles import loaded_after_fork
from bench.profiles import sample, uss_by_mapping

SCENARIO = "scale: up N symbols"
STATUS = "`multibot status --json`"
RESTART = "SIGKILL a worker -> RUNNING"
GOAL_N = 200  # the goals are stated for 200 symbols


@dataclass(frozen=True)
class ScaleConfig:
    sizes: tuple[int, ...] = (10, 50, 100, 200)
    speed: float = 0.2
    settle_s: float = 3.0
    idle_s: float = 10.0
    status_reps: int = 5
    kills: int = 5


@dataclass(frozen=True)
class Floors:
    bare: Memory  # an idle `python -c` that imports nothing
    worker_imports: Memory  # an idle interpreter that imported worker.main


def symbols(n: int) -> list[str]:
    return [f"S{i:03d}USDT" for i in range(n)]


def memory_floors(ws: Workspace) -> Floors:
    bare = ws.idle_process()
    peer = ws.idle_process("worker.main")
    try:
        time.sleep(2.0)  # both are done importing
        return Floors(bare=memory(bare.pid), worker_imports=memory(peer.pid))
    finally:
        for proc in (bare, peer):
            proc.kill()
            proc.wait()


def _goal(n: int, goal: Goal) -> Goal | None:
    return goal if n == GOAL_N else None


def _up(fleet: Fleet, n: int, cfg: ScaleConfig) -> list[Figure]:
    floor = parallel_startup(n)
    since = time.time_ns()
    wait = max(60.0, n * 1.0)
    up_s = fleet.timed("up", *symbols(n), "--feed", "synthetic", "--speed", f"{cfg.speed:g}",
                       "--wait", f"{wait:g}", timeout=wait + 120)
    workers = fleet.status()["workers"]
    running = [w for w in workers if w["state"] == "RUNNING"]
    if len(running) != n:
        raise BenchError(f"up {n}: only {len(running)} RUNNING after `up` returned")
    events = fleet.state_events(since)
    starting = [ts for ts, _, state in events if state == "STARTING"]
    ready = [ts for ts, _, state in events if state == "RUNNING"]
    spawn_loop = (max(starting) - min(starting)) / 1e9
    last_boot = (max(ready) - max(starting)) / 1e9
    key, what = f"scale.{n}", f"up {n}"
    return [
        Figure(f"{key}.up", SCENARIO, f"{what}: all RUNNING (whole `up`)", "s", up_s, floor,
               f"{n} x `python -c pass` at once", _goal(n, Goal("<= 10 s", "value", "<=", 10))),
        Figure(f"{key}.up.before_first_spawn", SCENARIO, f"{what}: CLI + daemon start to first "
               "spawn", "s", (min(starting) - since) / 1e9, detail=True),
        Figure(f"{key}.up.spawn_loop", SCENARIO, f"{what}: first to last spawn", "s",
               spawn_loop, detail=True),
        Figure(f"{key}.up.last_boot", SCENARIO, f"{what}: last spawn to last RUNNING", "s",
               last_boot, detail=True),
    ]


def _memory(fleet: Fleet, n: int, floors: Floors) -> list[Figure]:
    workers = [w["pid"] for w in fleet.status()["workers"] if w["pid"]]
    pid = fleet.orchestrator_pid()
    if pid is None:
        raise BenchError("no orchestrator pid")
    mem = [memory(p) for p in workers]
    orch = memory(pid)
    uss, pss = Stats.of([m.uss / MB for m in mem]), Stats.of([m.pss / MB for m in mem])
    bare = floors.bare
    key, what = f"scale.{n}", f"{n} workers"
    return [
        Figure(f"{key}.worker_uss.max", SCENARIO, f"{what}: worker USS, max", "MB", uss.hi,
               bare.uss / MB, "bare interpreter USS", _goal(n, Goal("<= 8 MB", "value", "<=", 8))),
        Figure(f"{key}.worker_uss.median", SCENARIO, f"{what}: worker USS, median", "MB",
               uss.median, bare.uss / MB, "bare interpreter USS"),
        Figure(f"{key}.worker_pss.median", SCENARIO, f"{what}: worker PSS, median", "MB",
               pss.median, bare.pss / MB, "bare interpreter PSS"),
        Figure(f"{key}.orch_rss", SCENARIO, f"{what}: orchestrator RSS", "MB", orch.rss / MB,
               bare.rss / MB, "bare interpreter RSS",
               _goal(n, Goal("<= 150 MB", "value", "<=", 150))),
        Figure(f"{key}.orch_uss", SCENARIO, f"{what}: orchestrator USS", "MB", orch.uss / MB,
               bare.uss / MB, "bare interpreter USS"),
    ]


def _idle_cpu(fleet: Fleet, n: int, cfg: ScaleConfig) -> list[Figure]:
    pid = fleet.orchestrator_pid()
    workers = [w["pid"] for w in fleet.status()["workers"] if w["pid"]]
    if pid is None:
        raise BenchError("no orchestrator pid")

    def wakeups() -> dict[int, int]:
        out = {}
        for p in workers:
            try:
                out[p] = psutil.Process(p).num_ctx_switches().voluntary
            except psutil.Error:
                continue
        return out

    cpu0, wake0, t0 = cpu_seconds([pid, *workers]), wakeups(), time.monotonic()
    time.sleep(cfg.idle_s)
    cpu1, wake1, elapsed = cpu_seconds([pid, *workers]), wakeups(), time.monotonic() - t0
    used = {p: cpu1[p] - cpu0[p] for p in cpu1 if p in cpu0}
    if len(used) != n + 1:
        raise BenchError(f"idle window: {n + 1 - len(used)} fleet processes vanished")
    total = sum(used.values()) / elapsed * 100
    orch = used[pid] / elapsed * 100
    per_worker = Stats.of([(wake1[p] - wake0[p]) / elapsed for p in wake1 if p in wake0])
    key, what = f"scale.{n}", f"{n} workers"
    return [
        Figure(f"{key}.idle_cpu", SCENARIO, f"{what}: idle CPU of the fleet (speed "
               f"{cfg.speed:g})", "% core", total,
               goal=_goal(n, Goal("<= 5% of one core", "value", "<=", 5))),
        Figure(f"{key}.idle_cpu.orchestrator", SCENARIO, f"{what}: idle CPU, orchestrator "
               "alone", "% core", orch, detail=True),
        Figure(f"{key}.idle_cpu.worker_wakeups", SCENARIO, f"{what}: wake-ups per idle worker "
               "(median)", "/s", per_worker.median, detail=True),
    ]


def _status(fleet: Fleet, n: int, reps: int) -> list[Figure]:
    cmd = [*multibot_command(), "status", "--json", "--home", str(fleet.home)]
    product: list[float] = []
    floor: list[float] = []
    for _ in range(reps):
        floor.append(python_startup() * 1000)
        wall, proc = timed_run(cmd)
        if proc.returncode != 0:
            raise BenchError(f"status failed: {proc.stderr.strip()[-500:]}")
        product.append(wall * 1000)
    return [Figure(f"scale.{n}.status", STATUS, f"{n} symbols: whole process", "ms",
                   Stats.of(product).median, Stats.of(floor).median, "`python -c pass`",
                   _goal(n, Goal("<= 300 ms", "value", "<=", 300)))]


def _restart_once(fleet: Fleet, symbol: str, pid: int) -> tuple[float, float, float, float]:
    """(kill->RUNNING, kill->exit noticed, noticed->respawned, respawned->RUNNING) in ms."""
    killed = time.time_ns()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    seen: dict[str, int] = {}
    while "RUNNING" not in seen:
        if time.monotonic() > deadline:
            raise BenchError(f"{symbol} not RUNNING 60 s after SIGKILL; saw {seen}")
        time.sleep(0.01)
        for ts, sym, state in fleet.state_events(killed):
            if sym == symbol:
                seen.setdefault(state, ts)
    backoff, starting, running = (seen.get(s, killed) for s in ("BACKOFF", "STARTING",
                                                                 "RUNNING"))
    return ((running - killed) / 1e6, (backoff - killed) / 1e6, (starting - backoff) / 1e6,
            (running - starting) / 1e6)


def _restarts(fleet: Fleet, n: int, kills: int) -> list[Figure]:
    names = symbols(n)
    chosen = [names[i * n // kills] for i in range(kills)] if kills <= n else names
    results, floor = [], []
    for symbol in chosen:
        old = {w["symbol"]: w["pid"] for w in fleet.status()["workers"]}[symbol]
        floor.append(timed_run([PYTHON, "-c", "import worker.main"])[0] * 1000)
        results.append(_restart_once(fleet, symbol, old))
        now = {w["symbol"]: w for w in fleet.status()["workers"]}[symbol]
        if now["state"] != "RUNNING" or now["pid"] in (None, old):
            raise BenchError(f"{symbol} after restart: {now['state']} pid {now['pid']}")
    total, detect, respawn, boot = (Stats.of(list(col)).median for col in zip(*results,
                                                                              strict=True))
    key, what = f"scale.{n}.restart", f"{n} symbols"
    return [
        Figure(key, RESTART, f"{what}: kill -> RUNNING (median of {len(chosen)})", "ms", total,
               Stats.of(floor).median, "`python -c 'import worker.main'`",
               _goal(n, Goal("<= 1 s", "value", "<=", 1000))),
        Figure(f"{key}.detect", RESTART, f"{what}: kill -> exit noticed (BACKOFF)", "ms",
               detect, detail=True),
        Figure(f"{key}.respawn", RESTART, f"{what}: BACKOFF -> spawned (STARTING)", "ms",
               respawn, detail=True),
        Figure(f"{key}.boot", RESTART, f"{what}: spawned -> RUNNING", "ms", boot, detail=True),
    ]


def _inspect_worker(fleet: Fleet, n: int, notes: dict[str, str]) -> None:
    """One worker's memory map, and what it loaded that its parent (the forkserver) had not."""
    pid = fleet.status()["workers"][0]["pid"]
    notes["worker_uss_maps"] = f"one worker of {n} (pid {pid}): " + uss_by_mapping(pid)
    late = ", ".join(f"`{name}`" for name in loaded_after_fork(pid)) or "none"
    parent = psutil.Process(pid).parent()
    title = " ".join(parent.cmdline()[:1]) if parent else "?"
    notes["worker_loaded_after_fork"] = (
        f"Shared objects mapped in that worker but not in its parent (`{title}`): {late}.")


def run(ws: Workspace, cfg: ScaleConfig, notes: dict[str, str] | None = None) -> list[Figure]:
    """Every size in turn; ``notes`` gets the memory map of one worker of the largest fleet."""
    floors = memory_floors(ws)
    figures = [Figure("scale.worker_imports_uss", SCENARIO, "idle interpreter after `import "
                      "worker.main` (the exec fallback): USS", "MB",
                      floors.worker_imports.uss / MB, floors.bare.uss / MB,
                      "bare interpreter USS", detail=True)]
    for n in cfg.sizes:
        with Fleet(ws, f"scale-{n}") as fleet:
            figures += _up(fleet, n, cfg)
            time.sleep(cfg.settle_s)  # warm-up done, first heartbeats exchanged
            figures += _memory(fleet, n, floors)
            if notes is not None and n == max(cfg.sizes):
                _inspect_worker(fleet, n, notes)
            figures += _idle_cpu(fleet, n, cfg)
            if notes is not None and n == max(cfg.sizes):
                pid = fleet.orchestrator_pid()
                if pid is not None:  # after the window: the sampler must not skew it
                    notes["orchestrator_idle_profile"] = sample(
                        pid, min(cfg.idle_s, 5.0), fleet.home.with_suffix(".spy"))
            figures += _status(fleet, n, cfg.status_reps)
            figures += _restarts(fleet, n, cfg.kills)
    return figures
