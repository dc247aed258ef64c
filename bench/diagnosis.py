"""For each missed goal: by how much, a profile taken on the spot, why, and what would fix it.

The text is built from the measured figures and profiles of this run, so it stays true when
the numbers move; a section appears only for a missed goal (or for every topic with
``always``, as in the smoke run, so this code is exercised).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable

from bench import backtest_figures, fork_profiles, profiles
from bench.common import PYTHON, REPO, Workspace, bench_env
from bench.report import Row, fmt
from multibot.wire.protocol import HEARTBEAT_S

Section = Callable[["Facts"], str]


class Facts:
    """Row lookup by key; ``largest(pattern)`` finds the row of the largest size measured."""

    def __init__(self, rows: list[Row], ws: Workspace, smoke: bool,
                 notes: dict[str, str]) -> None:
        self.rows = {r.key: r for r in rows}
        self.ws = ws
        self.smoke = smoke
        self.notes = notes
        self._mp_main_ms: float | None = None

    @property
    def mp_main_ms(self) -> float:
        """Measured once per report (bench.fork_profiles.mp_main_seconds)."""
        if self._mp_main_ms is None:
            self._mp_main_ms = fork_profiles.mp_main_seconds() * 1000
        return self._mp_main_ms

    def get(self, key: str | None) -> Row | None:
        return self.rows.get(key) if key else None

    def median(self, key: str | None, default: float = float("nan")) -> float:
        row = self.get(key)
        return row.value.median if row else default

    def floor(self, key: str | None, default: float = float("nan")) -> float:
        row = self.get(key)
        return row.floor.median if row and row.floor else default

    def pick(self, goal_key: str, template: str) -> str | None:
        """The goal's own row when measured, else the largest size's (smoke sizes)."""
        return goal_key if goal_key in self.rows else self.largest(template)

    def largest(self, template: str) -> str | None:
        """The key for the largest N among keys matching ``template`` ("{n}" = a number)."""
        pattern = re.compile("^" + re.escape(template).replace(r"\{n\}", r"(\d+)") + "$")
        sizes = [int(m[1]) for key in self.rows if (m := pattern.match(key))]
        return template.replace("{n}", str(max(sizes))) if sizes else None


def _latency(f: Facts) -> str:
    prof = profiles.worker_bar_path(f.ws, bars=300 if f.smoke else 5000)
    single, floor = f.median("latency.single.p50"), f.floor("latency.single.p50")
    burst, cpu = f.median("latency.p50"), f.median("latency.worker_cpu")
    user, kernel = f.median("latency.worker_cpu.main_user"), f.median(
        "latency.worker_cpu.main_system")
    logging = (f"""{prof.logging_share:.0%} of the profiled time is in `logging`: the worker logs
every order and every fill at INFO (a LogRecord, the asctime format, a flush to the log file),
after the order is sent but on the same core.""" if prof.logging_share > 0.1 else
               "its largest items are in the profile below.")
    hot = f.median("latency.hot.p50")
    return f"""One bar at a time, an intent comes {fmt(single, "µs")} µs after its bar, against a
raw round trip of {fmt(floor, "µs")} µs after the same pause ({fmt(hot, "µs")} µs back to
back: waking idle processes and cores is the difference); in a burst of three bars (the feed
publishes every symbol's bar at once) the p50 is {fmt(burst, "µs")} µs. The workers used
{fmt(cpu, "µs")} µs of CPU per bar (a bar in, an order out, its fill in): their Python
thread {fmt(user, "µs")} µs in user mode and {fmt(kernel, "µs")} µs in the kernel (poll, the
sends and receives, the log writes), ZeroMQ's I/O threads the rest (every message wakes one
in each process it crosses; the floor pays the same per message). With three workers and the
stand-in on {os.cpu_count()} cores, a burst's last intent waits for a core behind the other
two, which is why the burst is slower than one bar at a time.

The Python part, in this process without sockets (decode -> `Runner.on_bar` -> `encode`, each
order answered with a fill), takes {prof.per_bar_us:.0f} µs per bar here; {logging}

**Done.** Intents go out before anything is logged; a bar is one frame taken with one plain
`recv()`; log records skip the caller lookup and thread/process names. **Next (worker/).**
Less CPU per bar is what shortens the burst (the cores are the queue): keep `Decimal`
arithmetic off the per-bar path (quantities as integer multiples of the step) and log fills
in a batch per wake-up instead of one flushed line each.

cProfile of that path, {300 if f.smoke else 5000} bars, by own time:

{prof.table}"""


def _fanout(f: Facts) -> str:
    costs = profiles.wire_costs(f.ws, count=2000 if f.smoke else 50_000)
    key = f.pick("fanout.10.rate", "fanout.{n}.rate")
    n = key.split(".")[1] if key else "?"
    lost = [r for r in f.rows.values() if r.key.endswith(".hwm.lost") and r.value.median > 0]
    text = f"""At {n} workers the product delivers {fmt(f.median(key), "bars/s")} bars/s against
{fmt(f.floor(key), "bars/s")} raw. Per bar, on this machine (one process, ipc, no contention):

{costs}

The feed is one Python thread: `encode_bar` plus one `send` per bar bound the rate before
any worker has done anything, and each worker pays one `recv` plus `decode_market`. A market
message is a single frame that starts with its topic (one zmq call per bar on each side, not
two, and no pyzmq `*_multipart` wrappers), and a bar's envelope carries no random id (nobody
replies to a bar). **Next**, if more is needed: publish from a thread that does nothing else,
and encode each bar's body once in a compact form."""
    if lost:
        worst = max(lost, key=lambda r: r.value.median)
        text += f"""

**Also:** with the product's own socket options ({worst.metric}) a burst lost
{fmt(worst.value.median, "bars")} bars: the market PUB and the workers' SUB both queue 100,000
messages; a burst larger than that per subscriber is dropped by ZeroMQ (PUB/SUB is lossy by
design; orders and fills never travel on it)."""
    return text


def _mp_main_note(f: Facts) -> str:
    ms = f.mp_main_ms
    late = f.notes.get("worker_loaded_after_fork", "")
    return f"""Every worker is a forkserver child, and multiprocessing's `spawn.prepare()` re-runs
the parent's main module in each child as `__mp_main__` before the target starts: for the
daemon that is `orchestrator.daemon` (for `up --foreground`, the `multibot` script), whose
imports (asyncio and, through it, ssl) the preload does not have, so each worker imports them
on its own: {ms:.0f} ms of CPU per worker here, and private memory. {late}"""


def _up(f: Facts) -> str:
    key = f.pick("scale.200.up", "scale.{n}.up")
    if key is None:
        return "(no up figure measured)"
    n = int(key.split(".")[1])
    before, loop = f.median(f"{key}.before_first_spawn"), f.median(f"{key}.spawn_loop")
    boot = f.median(f"{key}.last_boot")
    return f"""`up {n}` took {fmt(f.median(key), "s")} s; {n} fresh interpreters started at once
take {fmt(f.floor(key), "s")} s on this machine. From the journal's state events: {before:.2f} s
pass before the first worker is spawned (the CLI, the daemon's start-up, the forkserver),
{loop:.2f} s between the first and the last spawn ({loop / n * 1000:.0f} ms per worker; the
spawns are sequential and compete for the cores with the workers already booting), and
{boot:.2f} s from the last spawn to the last RUNNING.

{_mp_main_note(f)}

**Fix.** Preload what the children would re-import (or make the forkserver children skip the
main-module fix-up), then spawn concurrently."""


def _memory(f: Facts) -> str:
    key = f.pick("scale.200.worker_uss.max", "scale.{n}.worker_uss.max")
    maps = f.notes.get("worker_uss_maps", "(no worker memory map recorded)")
    return f"""The largest worker USS is {fmt(f.median(key), "MB")} MB; a bare interpreter's is
{fmt(f.floor(key), "MB")} MB. Workers fork from the preloaded forkserver, so what they
imported there stays shared until written. How much a fork costs before any worker code runs
(a process preloaded like the forkserver, `gc.freeze()`d, then forked), measured now:

{fork_profiles.fork_floor(f.ws)}

{_mp_main_note(f)}

Where one live worker's private memory is:

{maps}

**Fix.** Make the forkserver children skip the main-module fix-up (e.g. start the forkserver
from a module without a `__main__` of its own, or preload `orchestrator.daemon`'s imports,
asyncio among them, in `worker/preload.py`): the table above puts a fork with its ZeroMQ
context at a few MB."""


def _status(f: Facts) -> str:
    key = f.pick("scale.200.status", "scale.{n}.status")
    imports = profiles.status_imports()
    return f"""`multibot status --json` took {fmt(f.median(key), "ms")} ms (whole process);
`python -c pass` takes {fmt(f.floor(key), "ms")} ms here. Most of the rest is imports, before
any request is sent:

{imports}

**Fix.** A fast path for `status` that does not import typer, and lazy imports in
`multibot/cli/app.py` and `multibot/client.py`."""


def _idle(f: Facts) -> str:
    key = f.pick("scale.200.idle_cpu", "scale.{n}.idle_cpu")
    n = key.split(".")[1] if key else "?"
    total, orch = f.median(key), f.median(f"{key}.orchestrator")
    wake = f.median(f"{key}.worker_wakeups")
    workers = int(n) if n.isdigit() else 1
    spy = f.notes.get("orchestrator_idle_profile", "(no orchestrator profile recorded)")
    return f"""The idle fleet of {n} workers used {fmt(total, "%")}% of one core: the orchestrator
{orch:.1f}%, the workers together {total - orch:.1f}% ({(total - orch) / workers:.3f}% each,
with {wake:.1f} voluntary context switches per second, ZeroMQ's I/O thread included). Both
heartbeats come every {HEARTBEAT_S:g} s: the orchestrator's is one broadcast on the market PUB
(every worker subscribes to its topic), and each worker answers it with its own, which the
orchestrator takes in batches from its broker socket (one asyncio wake-up, then plain
non-blocking receives). What is left is per message and per process: every message wakes
ZeroMQ's I/O thread and then the receiving thread, in each of {n} processes. Where the idle
orchestrator's CPU goes (py-spy, after the measured window):

{spy}

**Next.** Fewer messages, not cheaper ones: a longer heartbeat period (failure detection
then takes longer: a hung worker is killed after 2.5 periods), or liveness without messages
(a per-worker counter in shared memory that the orchestrator reads, with the status facts
fetched only when `status` asks)."""


def _restart(f: Facts) -> str:
    key = f.pick("scale.200.restart", "scale.{n}.restart")
    detect, respawn = f.median(f"{key}.detect"), f.median(f"{key}.respawn")
    boot = f.median(f"{key}.boot")
    return f"""SIGKILL -> RUNNING took {fmt(f.median(key), "ms")} ms: {detect:.0f} ms until the
orchestrator saw the exit, {respawn:.0f} ms to spawn the replacement, {boot:.0f} ms from spawn
to RUNNING (fork, connect, register, Welcome, first heartbeat).

{_mp_main_note(f)}"""


def _backtest(f: Facts) -> str:
    if not backtest_figures.SCRIPT.exists():
        return "(bench/bench_backtest.py does not exist)"
    if f.smoke:
        return "(not profiled in a smoke run: `python -m bench.bench_backtest --profile`)"
    args = [PYTHON, str(backtest_figures.SCRIPT), "--runs", "1", "--no-multi", "--profile"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900, env=bench_env(),
                          cwd=REPO, stdin=subprocess.DEVNULL)
    out = proc.stdout.strip()
    profile = out[out.find("where multibot"):] if "where multibot" in out else out[-3000:]
    return f"""This scenario is bench/bench_backtest.py's (maintained with the backtest engine).
A lone symbol runs in one fresh process, so its figure is the in-process one plus what a fresh
process adds: the job and its bars sent to a spare child, first-touch page faults there (its
loop runs slower than a warm process's), and the result sent back and decoded (bench/README,
"Process per symbol"). Several symbols share the cores, so that row gains from them. What
would move the one-symbol figure: a cheaper order path than exact Decimals through the real
broker and runner (a flat profile of ~120 Python calls an order). The engine's own profile
(in-process, `--profile`):

```
{profile}
```"""


TOPICS: list[tuple[str, str, Section]] = [
    ("latency", r"^latency\.", _latency),
    ("fan-out", r"^fanout\.", _fanout),
    ("up N symbols", r"^scale\.\d+\.up$", _up),
    ("worker memory", r"^scale\.\d+\.worker_uss", _memory),
    ("`status`", r"^scale\.\d+\.status$", _status),
    ("idle CPU", r"^scale\.\d+\.idle_cpu$", _idle),
    ("restart after SIGKILL", r"^scale\.\d+\.restart$", _restart),
    ("backtest", r"^backtest\.", _backtest),
]


def diagnose(rows: list[Row], ws: Workspace, always: bool, smoke: bool,
             notes: dict[str, str]) -> str:
    facts = Facts(rows, ws, smoke, notes)
    parts = ["## Goals not met: by how much, why, what would fix it", ""]
    for title, pattern, section in TOPICS:
        matching = [r for r in rows if re.search(pattern, r.key)]
        missed = [r for r in matching if r.met is False]
        if not missed and not (always and matching):
            continue
        verdicts = "; ".join(f"{r.metric}: {r.verdict()}" for r in missed) or "no goal missed"
        try:
            body = section(facts)
        except Exception as exc:  # a profile that fails must not lose the benchmark
            body = f"(profile failed: {type(exc).__name__}: {exc})"
        parts += [f"### {title}: {verdicts}", "", body, ""]
    if len(parts) == 2:
        parts.append("Every goal was met.")
    return "\n".join(parts).rstrip()
