"""Profiles of forked workers: what a fork of the preloaded forkserver costs, what a worker
loads after the fork, and what multiprocessing's main-module fix-up costs each child."""

from __future__ import annotations

import os
import subprocess
import time

from bench.common import MB, PYTHON, Workspace, bench_env, memory

_FORK_FLOOR = """
import os, sys, time
try:
    import orchestrator.preload  # what the orchestrator's forkserver preloads, then gc.freeze()
except ImportError:  # an older layout: the same imports by hand
    import gc
    import worker.main
    gc.freeze()
if os.fork() == 0:
    if sys.argv[1] == "mpmain":  # what multiprocessing's spawn.prepare() does in the child
        import runpy
        runpy.run_module("orchestrator.daemon", run_name="__mp_main__", alter_sys=True)
    if sys.argv[1] in ("zmq", "mpmain"):  # what every worker creates first
        import zmq
        ctx = zmq.Context()
        dealer, sub = ctx.socket(zmq.DEALER), ctx.socket(zmq.SUB)
        dealer.connect(sys.argv[2] + "-broker.sock")
        sub.connect(sys.argv[2] + "-market.sock")
    time.sleep(120)
    os._exit(0)
time.sleep(120)
"""


def fork_floor(ws: Workspace) -> str:
    """USS of a child forked from a process preloaded as the forkserver is, before it runs any
    worker code: the floor of a forked worker's private memory."""
    import psutil

    rows = []
    for variant, what in (
            ("idle", "fork of the preloaded process, idle"),
            ("zmq", "... plus a ZeroMQ context and two connected sockets"),
            ("mpmain", "... plus re-running `orchestrator.daemon` as `__mp_main__` first (as "
             "multiprocessing's `spawn.prepare` does in a forkserver child)")):
        marker = ws.path / f"forkfloor-{variant}"
        env = {**bench_env(), "MULTIBOT_FORKSERVER_TITLE": f"mbb-forkfloor {marker}"}
        parent = ws.spawn([PYTHON, "-c", _FORK_FLOOR, variant, f"ipc://{marker}", str(marker)],
                          env=env)
        try:
            time.sleep(2.0)
            children = psutil.Process(parent.pid).children()
            if not children:
                return "(the fork floor process did not fork)"
            rows.append((what, memory(children[0].pid).uss / MB))
        finally:
            for child in psutil.Process(parent.pid).children():
                child.kill()
            parent.kill()
            parent.wait()
    lines = ["| process | USS MB |", "|---|---|"]
    lines += [f"| {what} | {uss:.1f} |" for what, uss in rows]
    return "\n".join(lines)


def loaded_after_fork(pid: int) -> list[str]:
    """Shared objects mapped in a process but not in its parent (for a forked worker: what it
    loaded after the fork, i.e. modules imported in every worker instead of once)."""
    import psutil

    def libraries(p: int) -> set[str]:
        return {m.path for m in psutil.Process(p).memory_maps() if ".so" in m.path}

    parent = psutil.Process(pid).ppid()
    return sorted(os.path.basename(p) for p in libraries(pid) - libraries(parent))


_MP_MAIN = """
import time
try:
    import orchestrator.preload
except ImportError:
    import worker.main
import runpy
started = time.perf_counter()
runpy.run_module("orchestrator.daemon", run_name="__mp_main__", alter_sys=True)
print(time.perf_counter() - started)
"""


def mp_main_seconds() -> float:
    """Time a forkserver child spends re-running the orchestrator's main module
    (``orchestrator.daemon``) as ``__mp_main__`` before the worker code starts."""
    proc = subprocess.run([PYTHON, "-c", _MP_MAIN], capture_output=True, text=True, timeout=60,
                          env=bench_env(), stdin=subprocess.DEVNULL, check=True)
    return float(proc.stdout.strip().splitlines()[-1])
