"""Run symbol jobs: each in a fresh child process (isolated, on every core) or in-process.

Each job gets a new process from a "forkserver" context: forked from a clean server that never
ran a strategy, so a strategy's class attributes, module globals or monkey-patches can never
leak from one symbol (or one run) into another, nor from the parent. At most one child per
core runs at a time; each sends its result (or its error) back through a pipe and progress
through a shared array of per-job bar counters. On an error or Ctrl-C the children still
running are terminated at once.
"""

from __future__ import annotations

import dataclasses
import gc
import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

import msgspec

from orchestrator.backtest.engine import SymbolJob, SymbolRun, run_symbol
from orchestrator.backtest.shared import SharedBars, shareable

__all__ = ["BacktestFailed", "run_jobs"]

# Imported once by the fork server, so a child starts warm; none of it runs a strategy. Like
# "spawn", a forkserver child first re-imports the calling script (its `if __name__ ==
# "__main__":` block does not run), so that script must be importable without side effects;
# orchestrator.cli is here so that re-importing the `multibot` script costs nothing, and this
# module because the child's entry point (_child) lives here.
# The rest is what every child would otherwise import for itself (seen with strace): runpy's
# pkgutil to re-run the script, the shared progress array's modules, and the Popen classes
# the pickled Process refers to; a few ms per symbol.
_PRELOAD = ["orchestrator.backtest.engine", "orchestrator.backtest.pool",
            "orchestrator.backtest.session", "orchestrator.cli",
            "pkgutil", "multiprocessing.sharedctypes", "multiprocessing.popen_forkserver"]
_POLL_S = 0.1
_RUN_DECODER = msgspec.msgpack.Decoder(SymbolRun)


class BacktestFailed(RuntimeError):
    """A symbol's run raised or its process died; the message names the symbol."""


def _child(slot: int, job: SymbolJob, bars: Any, counters: Any, results: Connection) -> None:
    # What the fork server imported stays out of this process's garbage collections: they
    # would visit (and so copy, page by page) all of it, for nothing.
    gc.freeze()
    if bars is not None:  # mapped from the parent's SharedBars
        job = dataclasses.replace(job, bars=bars)

    def progress(done: int) -> None:
        counters[slot] = done

    try:
        outcome: tuple[str, Any] = ("ok", _pack(run_symbol(job, progress)))
    except KeyboardInterrupt:
        return  # Ctrl-C reached the whole process group; the parent stops everything
    except BaseException as exc:
        outcome = ("error", f"{type(exc).__name__}: {exc}")
    results.send(outcome)
    results.close()


def _pack(run: SymbolRun) -> bytes | SymbolRun:
    """msgpack, several times faster than pickle both ways for thousands of fills; the run
    itself (pickled) in the odd case msgpack cannot carry it (e.g. a lone surrogate in an
    error message)."""
    try:
        return msgspec.msgpack.encode(run)
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        return run


def _unpack(payload: object) -> SymbolRun:
    if isinstance(payload, bytes):
        return _RUN_DECODER.decode(payload)
    assert isinstance(payload, SymbolRun)
    return payload


def run_jobs(
    jobs: Sequence[SymbolJob],
    *,
    isolate: bool = True,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> list[SymbolRun]:
    """Results in the order of ``jobs``; ``on_progress(bars done over all jobs)``."""
    if not isolate:
        return _in_process(jobs, on_progress)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    counters = ctx.RawArray("q", len(jobs))
    limit = max(1, min(len(jobs), workers or os.cpu_count() or 1))
    results: dict[int, SymbolRun] = {}
    running: dict[int, tuple[BaseProcess, Connection]] = {}
    waiting = list(range(len(jobs)))
    try:
        while waiting or running:
            while waiting and len(running) < limit:
                slot = waiting.pop(0)
                receiver, sender = ctx.Pipe(duplex=False)
                job, shared = _shipped(jobs[slot])
                process = ctx.Process(target=_child, args=(slot, job, shared, counters, sender),
                                      name=f"backtest-{job.symbol}", daemon=True)
                try:
                    process.start()
                finally:
                    if shared is not None:
                        shared.close()  # the child has its own descriptor
                sender.close()  # the child holds the only writer: EOF = it died
                running[slot] = (process, receiver)
            ready = wait([receiver for _, receiver in running.values()], timeout=_POLL_S)
            for slot, (child, receiver) in list(running.items()):
                if receiver in ready:
                    del running[slot]
                    results[slot] = _collect(jobs[slot], child, receiver)
            if on_progress is not None:
                on_progress(sum(counters))
    finally:  # an error or Ctrl-C: leave no child behind
        for child, receiver in running.values():
            child.terminate()
            child.join(5)
            receiver.close()
    return [results[slot] for slot in range(len(jobs))]


def _shipped(job: SymbolJob) -> tuple[SymbolJob, SharedBars | None]:
    """``job`` without its bars and the bars in shared memory, or ``job`` as it is where
    that is not possible (no memfds, or the system refuses one)."""
    if not shareable():
        return job, None
    try:
        shared = SharedBars(job.bars)
    except OSError:
        return job, None
    return dataclasses.replace(job, bars=job.bars[:0]), shared


def _collect(job: SymbolJob, child: BaseProcess, receiver: Connection) -> SymbolRun:
    try:
        status, payload = receiver.recv()
    except EOFError:
        status, payload = "died", None
    finally:
        receiver.close()
        child.join()
    if status == "ok":
        return _unpack(payload)
    if status == "error":
        raise BacktestFailed(f"{job.symbol}: {payload}")
    raise BacktestFailed(f"{job.symbol}: the backtest process died (exit code "
                         f"{child.exitcode}: killed, out of memory, or the strategy exited)")


def _in_process(jobs: Sequence[SymbolJob],
                on_progress: Callable[[int], None] | None) -> list[SymbolRun]:
    """Same results in this process, one job after the other (no isolation: tests, profiling)."""
    results: list[SymbolRun] = []
    finished = 0
    for job in jobs:
        base = finished

        def progress(done: int, base: int = base) -> None:
            if on_progress is not None:
                on_progress(base + done)

        try:
            results.append(run_symbol(job, progress))
        except Exception as exc:
            raise BacktestFailed(f"{job.symbol}: {type(exc).__name__}: {exc}") from exc
        finished += len(job.bars)
    return results
