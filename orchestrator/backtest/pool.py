"""Run symbol jobs: each in a fresh child process (isolated, on every core) or in-process.

Each job gets a new process from a "forkserver" context: forked from a clean server that never
ran a strategy, so a strategy's class attributes, module globals or monkey-patches can never
leak from one symbol (or one run) into another, nor from the parent. At most one child per
core runs at a time; each sends its result (or its error) back through a pipe and progress
through a shared array of per-child bar counters. On an error or Ctrl-C the children still
running are terminated at once.

With fewer symbols than cores, a symbol's run is cut at rest into parts that run at once, one
child each, and stitched back exactly (see split and stitch); the result is the same as in
one piece, on any number of cores.
"""

from __future__ import annotations

import dataclasses
import gc
import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, NamedTuple

import msgspec

from orchestrator.backtest.engine import SymbolJob, SymbolRun, run_symbol
from orchestrator.backtest.metrics import RoundTrip, round_trips
from orchestrator.backtest.report import trip_json
from orchestrator.backtest.shared import SharedBars, shareable
from orchestrator.backtest.stitch import stitch

__all__ = ["BacktestFailed", "Finished", "run_jobs"]

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
# Bars a part of one symbol's run needs at least: a part costs a process (~5 ms, as much as
# ~10,000 quiet bars or ~100 orders), so short runs stay whole.
MIN_PART_BARS = 10_000


class Finished(msgspec.Struct, kw_only=True):
    """A job's run, and its round trips as the metrics and the report want them: worked out
    where the run was, so several symbols' (or parts') are worked out at once."""

    run: SymbolRun
    trips: list[RoundTrip]
    trades: list[dict[str, Any]]  # report.trip_json of each trip


_DECODER = msgspec.msgpack.Decoder(Finished)


class BacktestFailed(RuntimeError):
    """A symbol's run raised or its process died; the message names the symbol."""


def _child(slot: int, job: SymbolJob, bars: Any, part: tuple[int, int] | None, counters: Any,
           results: Connection) -> None:
    # What the fork server imported stays out of this process's garbage collections: they
    # would visit (and so copy, page by page) all of it, for nothing.
    gc.freeze()
    if bars is not None:  # mapped from the parent's SharedBars
        job = dataclasses.replace(job, bars=bars)

    def progress(done: int) -> None:
        counters[slot] = done

    try:
        outcome: tuple[str, Any] = ("ok", _pack(_finish(job, run_symbol(job, progress,
                                                                         part=part))))
    except KeyboardInterrupt:
        return  # Ctrl-C reached the whole process group; the parent stops everything
    except BaseException as exc:
        outcome = ("error", f"{type(exc).__name__}: {exc}")
    results.send(outcome)
    results.close()


def _finish(job: SymbolJob, run: SymbolRun) -> Finished:
    trips = round_trips(run.fills)
    times = job.bars["open_time"]
    return Finished(run=run, trips=trips, trades=[trip_json(t, times) for t in trips])


def _joined(parts: list[Finished]) -> Finished | None:
    """The parts of one run stitched (see stitch), or None where they cannot be."""
    run = stitch([p.run for p in parts])
    if run is None:
        return None
    parts = sorted(parts, key=lambda p: p.run.first_bar)  # no trip spans a cut: it is flat
    return Finished(run=run, trips=[t for p in parts for t in p.trips],
                    trades=[t for p in parts for t in p.trades])


def _pack(finished: Finished) -> bytes | Finished:
    """msgpack, several times faster than pickle both ways for thousands of fills; the result
    itself (pickled) in the odd case msgpack cannot carry it (e.g. a lone surrogate in an
    error message)."""
    try:
        return msgspec.msgpack.encode(finished)
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        return finished


def _unpack(payload: object) -> Finished:
    if isinstance(payload, bytes):
        return _DECODER.decode(payload)
    assert isinstance(payload, Finished)
    return payload


def run_jobs(
    jobs: Sequence[SymbolJob],
    *,
    isolate: bool = True,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> list[Finished]:
    """Results in the order of ``jobs``; ``on_progress(bars done over all jobs)``."""
    if not isolate:
        return _in_process(jobs, on_progress)
    cores = max(1, workers or os.cpu_count() or 1)
    tasks = [_Task(i, part, total) for i, job in enumerate(jobs)
             for total in [_parts(job, cores // max(1, len(jobs)))] for part in range(total)]
    with _Children(jobs, len(tasks)) as children:
        return children.run(tasks, cores, on_progress)


class _Task(NamedTuple):
    job: int  # index in the jobs
    part: int
    total: int  # parts the job's run is cut into (1: whole)


def _parts(job: SymbolJob, cores: int) -> int:
    """Parts to cut ``job`` into, given ``cores`` for it alone: only MARKET orders leave a run
    at rest at its cuts (see split), and a part must be worth its process."""
    if job.config.order_type != "MARKET":
        return 1
    return max(1, min(cores, len(job.bars) // MIN_PART_BARS))


class _Children:
    """The child processes of one ``run_jobs``: started, collected, none left running."""

    def __init__(self, jobs: Sequence[SymbolJob], tasks: int) -> None:
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(_PRELOAD)
        self.jobs = jobs
        # a bar counter per task, and one for each job that may have to run again whole
        self.counters = self.ctx.RawArray("q", tasks + len(jobs))
        self._slots = iter(range(tasks + len(jobs)))
        self._slots_of: dict[int, list[int]] = {}  # job -> the counters its tasks used
        self._shared: dict[int, tuple[SymbolJob, SharedBars | None]] = {}
        self.running: dict[int, tuple[_Task, BaseProcess, Connection]] = {}

    def __enter__(self) -> _Children:
        mp.active_children()  # reaps the children of earlier runs
        return self

    def __exit__(self, *exc: object) -> None:
        for _, child, receiver in self.running.values():  # an error or Ctrl-C
            child.terminate()
            child.join(5)
            receiver.close()
        for _, shared in self._shared.values():
            if shared is not None:
                shared.close()

    def run(self, waiting: list[_Task], cores: int,
            on_progress: Callable[[int], None] | None) -> list[Finished]:
        limit = min(len(waiting), cores)
        done: dict[int, list[Finished]] = {}
        results: dict[int, Finished] = {}
        while waiting or self.running:
            while waiting and len(self.running) < limit:
                self._start(waiting.pop(0))
            ready = wait([receiver for _, _, receiver in self.running.values()],
                         timeout=_POLL_S)
            for slot, (task, child, receiver) in list(self.running.items()):
                if receiver not in ready:
                    continue
                del self.running[slot]
                parts = done.setdefault(task.job, [])
                parts.append(_collect(self.jobs[task.job], child, receiver))
                if len(parts) < task.total:
                    continue
                whole = parts[0] if task.total == 1 else _joined(parts)
                if whole is None:  # a cut was not at rest after all: run it in one piece
                    del done[task.job]
                    for used in self._slots_of.pop(task.job):
                        self.counters[used] = 0
                    waiting.insert(0, _Task(task.job, 0, 1))
                    continue
                results[task.job] = whole
            if on_progress is not None:
                on_progress(sum(self.counters))
        return [results[i] for i in range(len(self.jobs))]

    def _start(self, task: _Task) -> None:
        slot = next(self._slots)
        self._slots_of.setdefault(task.job, []).append(slot)
        job, shared = self._shipped(task.job)
        receiver, sender = self.ctx.Pipe(duplex=False)
        part = (task.part, task.total) if task.total > 1 else None
        process = self.ctx.Process(
            target=_child, args=(slot, job, shared, part, self.counters, sender),
            name=f"backtest-{job.symbol}", daemon=True)
        try:
            process.start()
        finally:
            sender.close()  # the child holds the only writer: EOF = it died
        self.running[slot] = (task, process, receiver)

    def _shipped(self, index: int) -> tuple[SymbolJob, SharedBars | None]:
        """Job ``index`` without its bars and the bars in shared memory (one copy for all its
        parts), or the job as it is where that is not possible (no memfds, or refused)."""
        if index not in self._shared:
            job, shared = self.jobs[index], None
            if shareable():
                try:
                    shared = SharedBars(job.bars)
                    job = dataclasses.replace(job, bars=job.bars[:0])
                except OSError:
                    pass
            self._shared[index] = job, shared
        return self._shared[index]


def _collect(job: SymbolJob, child: BaseProcess, receiver: Connection) -> Finished:
    """The result ``child`` sent. A child that sent one is not waited for: the kernel takes a
    few ms to tear its memory down, and the next ``run_jobs`` (or the exit) reaps it."""
    try:
        status, payload = receiver.recv()
    except EOFError:
        status, payload = "died", None
    finally:
        receiver.close()
    if status == "ok":
        return _unpack(payload)
    child.join()
    if status == "error":
        raise BacktestFailed(f"{job.symbol}: {payload}")
    raise BacktestFailed(f"{job.symbol}: the backtest process died (exit code "
                         f"{child.exitcode}: killed, out of memory, or the strategy exited)")


def _in_process(jobs: Sequence[SymbolJob],
                on_progress: Callable[[int], None] | None) -> list[Finished]:
    """Same results in this process, one job after the other (no isolation: tests, profiling)."""
    results: list[Finished] = []
    finished = 0
    for job in jobs:
        base = finished

        def progress(done: int, base: int = base) -> None:
            if on_progress is not None:
                on_progress(base + done)

        try:
            results.append(_finish(job, run_symbol(job, progress)))
        except Exception as exc:
            raise BacktestFailed(f"{job.symbol}: {type(exc).__name__}: {exc}") from exc
        finished += len(job.bars)
    return results
