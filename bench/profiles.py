"""Short profiles that explain a missed goal, measured on the spot (same machine, same run).

Each function returns Markdown: a table or a cProfile/importtime extract, with numbers only.
What they mean for the product is written by ``bench.diagnosis``.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import logging
import os
import pstats
import re
import resource
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import zmq

from bench.common import MB, PYTHON, REPO, Workspace, bench_env, memory, multibot_command
from multibot.market.orders import OrderStatus


@dataclass(frozen=True)
class ImportTime:
    total_ms: float
    top: list[tuple[str, float]]  # (module, cumulative ms), top-level imports first


def import_time(args: list[str]) -> ImportTime:
    """`python -X importtime ...`: cumulative import time per top-level module."""
    proc = subprocess.run([PYTHON, "-X", "importtime", *args], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, env=bench_env(), cwd="/")
    rows: list[tuple[str, float, int]] = []
    for line in proc.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue  # the header, or another line on stderr
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip()) - 1) // 2  # one space, then two per level
        rows.append((name.strip(), int(parts[1]) / 1000, depth))
    tops = [(name, ms) for name, ms, depth in rows if depth <= 2]
    total = sum(ms for _, ms, depth in rows if depth == 0)
    return ImportTime(total_ms=total, top=sorted(tops, key=lambda r: -r[1])[:12])


def import_table(result: ImportTime, title: str) -> str:
    lines = [f"{title}: {result.total_ms:.0f} ms of imports in all. Largest (cumulative, "
             "nested ones included in their parent):", "", "| module | ms |", "|---|---|"]
    lines += [f"| `{name}` | {ms:.0f} |" for name, ms in result.top]
    return "\n".join(lines)


def status_imports() -> str:
    """What `multibot status --json` imports (against a home with no fleet: same imports)."""
    script = multibot_command()
    if len(script) == 1:
        args = [script[0], "status", "--json", "--home", "/nonexistent-mbb"]
    else:
        args = ["-m", "multibot.cli.app", "status", "--json", "--home", "/nonexistent-mbb"]
    return import_table(import_time(args), "`multibot status --json`")


def worker_start_cpu(reps: int = 5) -> float:
    """CPU seconds (user + system) a fresh interpreter spends to import the worker."""
    used = []
    for _ in range(reps):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([PYTHON, "-c", "import worker.main"], check=True, env=bench_env(),
                       stdin=subprocess.DEVNULL)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return sorted(used)[len(used) // 2]


def memory_by_import(ws: Workspace) -> str:
    """USS of idle interpreters that import more and more of what a worker imports."""
    steps = ["", "zmq", "msgspec", "zmq, msgspec", "multibot.wire.protocol", "worker.main"]
    procs = [ws.idle_process(imports) for imports in steps]
    try:
        time.sleep(2.5)
        uss = [memory(p.pid).uss / MB for p in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    lines = ["| idle interpreter after | USS MB | + over bare |", "|---|---|---|"]
    for imports, value in zip(steps, uss, strict=True):
        name = f"`import {imports}`" if imports else "nothing (bare)"
        lines.append(f"| {name} | {value:.1f} | {value - uss[0]:+.1f} |")
    return "\n".join(lines)


def _timed_loop(count: int, body: object) -> float:
    started = time.perf_counter()
    for _ in range(count):
        body()  # type: ignore[operator]
    return (time.perf_counter() - started) / count * 1e6


def wire_costs(ws: Workspace, count: int = 50_000) -> str:
    """µs per bar of each step of the fan-out path, one process, PUB -> SUB over ipc."""
    from bench.bench_fanout import _bar
    from multibot.wire.protocol import decode_market, encode_bar

    bar = _bar("S000USDT", 0)
    frame = encode_bar(bar)
    ctx = zmq.Context()
    try:
        pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
        for sock in (pub, sub):
            sock.setsockopt(zmq.LINGER, 0)
        pub.setsockopt(zmq.SNDHWM, 0)
        sub.setsockopt(zmq.RCVHWM, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        pub.bind(ws.endpoint("wire"))
        sub.connect(ws.endpoint("wire"))
        time.sleep(0.3)
        costs = {
            "`encode_bar(bar)` (feed)": _timed_loop(count, lambda: encode_bar(bar)),
            "`send(frame)` (feed)": _timed_loop(count, lambda: pub.send(frame)),
        }
        time.sleep(0.5)
        costs["`recv()` (worker)"] = _timed_loop(count, sub.recv)
        costs["`decode_market(frame)` (worker)"] = _timed_loop(
            count, lambda: decode_market(frame))
    finally:
        ctx.destroy(linger=0)
    lines = ["| step (one process, ipc) | µs per bar |", "|---|---|"]
    lines += [f"| {name} | {us:.2f} |" for name, us in costs.items()]
    return "\n".join(lines)


@dataclass(frozen=True)
class BarPathProfile:
    per_bar_us: float  # without the profiler
    logging_share: float  # of the profiled time, in the logging module
    table: str


def _bar_path(bars: int) -> Callable[[], None]:
    """The worker's work for ``bars`` bars, in this process: decode -> Runner.on_bar ->
    encode, each order answered with a fill (as in bench_latency; the fill is not timed
    there, but it is part of the worker's work per bar)."""
    from bench.bench_latency import _PRICES, _STRATEGY, _T0_MS
    from multibot.market.bar import Bar
    from multibot.market.rules import bundled_rules, fmt
    from multibot.wire.protocol import (
        BarMessage,
        FillView,
        OrderUpdate,
        OrderView,
        PlaceOrder,
        PositionView,
        WorkerConfig,
        decode_market,
        encode,
        encode_bar,
    )
    from strategies.registry import create
    from worker.runner import Runner

    symbol = "BTCUSDT"
    config = WorkerConfig(symbol=symbol, strategies=[_STRATEGY], stake="100")
    runner = Runner(config, bundled_rules()[symbol], [create(_STRATEGY.name, _STRATEGY.params)],
                    PositionView(symbol=symbol), [], 1)
    payloads = []
    for k in range(bars):
        close = _PRICES[symbol] * (1.005 if k % 2 else 1.0)
        t = _T0_MS + k * 60_000
        payloads.append(encode_bar(Bar(
            symbol=symbol, open_time=t, close_time=t + 59_999, open=close, high=close,
            low=close, close=close, volume=1.0)))
    position = Decimal(0)

    def path() -> None:
        nonlocal position
        for payload in payloads:
            _, message = decode_market(payload)
            assert isinstance(message, BarMessage)
            for action in runner.on_bar(message.bar):
                encode(action)
                if isinstance(action, PlaceOrder):
                    qty = Decimal(action.quantity)
                    position += qty if action.side == "BUY" else -qty
                    coid = action.client_order_id
                    runner.on_update(OrderUpdate(
                        order=OrderView(client_order_id=coid, symbol=symbol, side=action.side,
                                        type=action.type, quantity=action.quantity,
                                        status=OrderStatus.FILLED, executed_qty=action.quantity),
                        fills=[FillView(trade_id=1, client_order_id=coid, symbol=symbol,
                                        side=action.side, price="60000", qty=action.quantity,
                                        fee="0", fee_asset="USDT", time_ns=0)],
                        position=PositionView(symbol=symbol, qty=fmt(position))))

    return path


@contextlib.contextmanager
def _worker_logging(path: Path) -> Iterator[None]:
    """Log as a worker does (worker/main.py's format and record options, INFO, to a file)."""
    from worker.main import lean_log_records, log_format

    root = logging.getLogger()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(log_format("BTCUSDT", 1)))
    saved = (logging._srcfile, logging.logThreads, logging.logProcesses,
             logging.logMultiprocessing, root.level)
    lean_log_records()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        (logging._srcfile, logging.logThreads, logging.logProcesses,
         logging.logMultiprocessing, level) = saved
        root.setLevel(level)
        handler.close()


def worker_bar_path(ws: Workspace, bars: int = 5000) -> BarPathProfile:
    """Time the worker's bar path without a profiler, then cProfile a fresh one."""
    with _worker_logging(ws.path / "bar-path.log"):
        path = _bar_path(bars)
        started = time.perf_counter()
        path()
        per_bar = (time.perf_counter() - started) / bars * 1e6
        profiler = cProfile.Profile()
        profiler.runcall(_bar_path(bars))
    stats = pstats.Stats(profiler)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, object]]
    raw = stats.stats  # type: ignore[attr-defined]
    total = sum(row[2] for row in raw.values())
    in_logging = sum(row[2] for (file, _, _), row in raw.items()
                     if f"{os.sep}logging{os.sep}" in file)
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(12)
    text = "\n".join(line.replace(str(REPO) + os.sep, "") for line in out.getvalue().splitlines()
                     if line.strip())
    with contextlib.suppress(ValueError):
        text = text[text.index("   ncalls"):]
    return BarPathProfile(per_bar_us=per_bar, logging_share=in_logging / total if total else 0.0,
                          table="```\n" + text + "\n```")


def uss_by_mapping(pid: int, top: int = 8) -> str:
    """Where one process's private (USS) memory is, by mapping (/proc/PID/smaps)."""
    import psutil

    rows = []
    for region in psutil.Process(pid).memory_maps(grouped=True):
        private = region.private_clean + region.private_dirty
        if private:
            name = region.path or "[anonymous]"
            rows.append((private / MB, region.rss / MB, name))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    lines = [f"USS {total:.1f} MB in all, largest mappings:", "",
             "| mapping | private (USS) MB | RSS MB |", "|---|---|---|"]
    for private, rss, name in rows[:top]:
        short = name if len(name) < 60 else "..." + name[-57:]
        lines.append(f"| `{short}` | {private:.2f} | {rss:.2f} |")
    return "\n".join(lines)


def py_spy() -> str | None:
    import shutil

    beside = Path(PYTHON).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def sample(pid: int, seconds: float, out: Path, top: int = 12) -> str:
    """py-spy samples of a running process (no pause): where its CPU time goes, by function."""
    spy = py_spy()
    if spy is None:
        return "(py-spy is not installed: `pip install py-spy` for this profile)"
    proc = subprocess.run([spy, "record", "-p", str(pid), "-d", str(max(1, round(seconds))),
                           "-r", "250", "-f", "raw", "-o", str(out), "--nonblocking"],
                          capture_output=True, text=True, timeout=seconds + 60)
    if proc.returncode != 0 or not out.exists():
        return f"(py-spy failed: {(proc.stderr or proc.stdout).strip()[-300:]})"
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + int(count)
        own[frames[-1]] = own.get(frames[-1], 0) + int(count)
    if not total:
        return "(py-spy saw no busy sample: the process was idle)"
    lines = [f"{total} busy samples at 250 Hz over {seconds:g} s "
             f"(~{total / 250 / seconds * 100:.1f}% of one core in Python code):", "",
             "| function (file) | inclusive | own |", "|---|---|---|"]
    # the entry point's frames (runpy, asyncio.run, the event loop) hold nearly every sample
    outer = {f for f, n in inclusive.items() if n >= 0.85 * total}
    for frame, hits in sorted(inclusive.items(), key=lambda kv: -kv[1]):
        if frame in outer:
            continue
        lines.append(f"| `{frame.replace(str(REPO) + os.sep, '')[:90]}` | "
                     f"{hits / total:.0%} | {own.get(frame, 0) / total:.0%} |")
        if len(lines) >= top + 4:
            break
    return "\n".join(lines)
