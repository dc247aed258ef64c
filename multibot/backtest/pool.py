"""Run symbol jobs: each in a fresh child process (isolated, on every core) or in-process.

Each job gets a new process from the backtest's fork server (see forkserver and launcher):
forked from a clean server that never ran a strategy, so a strategy's class attributes, module
globals or monkey-patches can never leak from one symbol (or one run) into another, nor from
the parent. At most one child per core runs at a time; each sends its run, then its round trips
(or its error) back through a pipe (see child), and progress through shared per-child bar
counters. On an error or Ctrl-C the children still running are terminated at once.

With fewer symbols than cores, a symbol's run is cut at rest into parts that run at once, one
child each, and stitched back exactly (see split and stitch); the result is the same as in
one piece, on any number of cores.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import NamedTuple

import msgspec

from multibot.backtest import child
from multibot.backtest.child import Finished, Trips, assign, finish, joined, unpack
from multibot.backtest.engine import SymbolJob, SymbolRun, run_symbol
from multibot.backtest.launcher import Child, ServerGone, launch
from multibot.backtest.shared import Counters, SharedBars, shareable
from multibot.backtest.stitch import stitch
from multibot.errors import ErrorCode, MultibotError

__all__ = ["BacktestFailed", "Finished", "run_jobs"]

_POLL_S = 0.1
# Bars a part of one symbol's run needs at least: a part costs a process (it starts ~2 ms after
# the first one and pays ~8-11 ms of page faults on its core), so short runs stay whole.
MIN_PART_BARS = 10_000


class BacktestFailed(MultibotError):
    """A symbol's run raised or its process died; the message names the symbol."""

    CODE = ErrorCode.INTERNAL


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


@dataclasses.dataclass
class _Running:
    task: _Task
    process: Child
    receiver: Connection
    run: SymbolRun | None = None  # its first message, once received


def _parts(job: SymbolJob, cores: int) -> int:
    """Parts to cut ``job`` into, given ``cores`` for it alone: only MARKET orders leave a run
    at rest at its cuts (see split), and a part must be worth its process."""
    if job.config.order_type != "MARKET":
        return 1
    return max(1, min(cores, len(job.bars) // MIN_PART_BARS))


class _Children:
    """The child processes of one ``run_jobs``: started, collected, none left running."""

    def __init__(self, jobs: Sequence[SymbolJob], tasks: int) -> None:
        self.jobs = jobs
        # a bar counter per task, and one for each job that may have to run again whole
        self.counters = Counters(tasks + len(jobs))
        self._slots = iter(range(tasks + len(jobs)))
        self._slots_of: dict[int, list[int]] = {}  # job -> the counters its tasks used
        self._shared: dict[int, SharedBars | None] = {}
        self.running: dict[int, _Running] = {}  # by slot

    def __enter__(self) -> _Children:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            for running in self.running.values():  # an error or Ctrl-C: all at once
                running.process.terminate()
            for running in self.running.values():
                running.process.wait(5)
        finally:
            for running in self.running.values():
                running.process.close()
                running.receiver.close()
            for shared in self._shared.values():
                if shared is not None:
                    shared.close()
            self.counters.close()

    def run(self, waiting: list[_Task], cores: int,
            on_progress: Callable[[int], None] | None) -> list[Finished]:
        limit = min(len(waiting), cores)
        runs: dict[int, dict[int, SymbolRun]] = {}  # job -> part -> its run
        trips: dict[int, dict[int, Trips]] = {}
        stitched: dict[int, SymbolRun] = {}
        results: dict[int, Finished] = {}
        while waiting or self.running:
            while waiting and len(self.running) < limit:
                self._start(waiting.pop(0))
            ready = wait([r.receiver for r in self.running.values()], timeout=_POLL_S)
            for slot, running in list(self.running.items()):
                if running.receiver not in ready or slot not in self.running:
                    continue
                task = running.task
                if running.run is None:  # the first message: the run
                    running.run = self._receive(running, SymbolRun)
                    got = runs.setdefault(task.job, {})
                    got[task.part] = running.run
                    if len(got) < task.total:
                        continue
                    # stitched now, while the children work out their round trips
                    whole = got.pop(0) if task.total == 1 else stitch(list(got.values()))
                    del runs[task.job]
                    if whole is None:  # a cut was not at rest after all: run it whole
                        self._drop(task.job)
                        trips.pop(task.job, None)  # of parts that were done already
                        waiting.insert(0, _Task(task.job, 0, 1))
                    else:
                        stitched[task.job] = whole
                    continue
                done = self._receive(running, Trips)
                del self.running[slot]
                got_trips = trips.setdefault(task.job, {})
                got_trips[task.part] = done
                if len(got_trips) == task.total:
                    results[task.job] = joined(stitched.pop(task.job),
                                               [got_trips[p] for p in sorted(got_trips)])
            if on_progress is not None:
                on_progress(self.counters.total())
        return [results[i] for i in range(len(self.jobs))]

    def _drop(self, job: int) -> None:
        """Forget the parts of ``job``'s run: its children still working out round trips
        are stopped (and reaped later), its progress counters cleared."""
        for slot, running in list(self.running.items()):
            if running.task.job == job:
                running.process.terminate()
                running.process.close()
                running.receiver.close()
                del self.running[slot]
        for used in self._slots_of.pop(job):
            self.counters.values[used] = 0

    def _receive(self, running: _Running, kind: type[child.T]) -> child.T:
        """The next message of ``running``: its run, then its round trips (after which its
        pipe is closed). A child that sent both is not waited for: the kernel takes a few ms
        to tear its memory down, and the fork server reaps it."""
        symbol = self.jobs[running.task.job].symbol
        try:
            status, payload = running.receiver.recv()
        except EOFError:
            status, payload = "died", None
        if status == child.MESSAGE_KINDS[kind]:
            if kind is Trips:
                running.receiver.close()
                running.process.close()
            return unpack(payload, kind)
        running.receiver.close()
        exitcode = running.process.wait(5)
        running.process.close()
        if status == "error":
            raise BacktestFailed(f"{symbol}: {payload}")
        if exitcode is None:
            raise BacktestFailed(f"{symbol}: the backtest process died, or never started (the "
                                 "fork server is gone: killed, or out of memory)")
        raise BacktestFailed(f"{symbol}: the backtest process died (exit code "
                             f"{exitcode}: killed, out of memory, or the strategy exited)")

    def _start(self, task: _Task) -> None:
        slot = next(self._slots)
        self._slots_of.setdefault(task.job, []).append(slot)
        job, shared = self.jobs[task.job], self._shared_bars(task.job)
        part = (task.part, task.total) if task.total > 1 else None
        payload = msgspec.msgpack.encode(assign(slot, job, part, shared=shared is not None))
        receiver, sender = os.pipe()
        fds = [sender, self.counters.fd] + ([] if shared is None else [shared.fd])
        try:
            process = launch(payload, fds)
        except BaseException as exc:
            os.close(receiver)
            if isinstance(exc, ServerGone):
                raise BacktestFailed(f"{job.symbol}: {exc}") from exc
            raise
        finally:
            os.close(sender)  # the child holds the only writer: EOF = it died
            if task.part == task.total - 1 and shared is not None:
                # every part has its copy; a run again in one piece makes a new one
                shared.close()
                del self._shared[task.job]
        self.running[slot] = _Running(task, process, Connection(receiver, writable=False))

    def _shared_bars(self, index: int) -> SharedBars | None:
        """Job ``index``'s bars in shared memory (one copy for all its parts), or None where
        that is not possible (no memfds, or refused): then they go with the assignment."""
        if index not in self._shared:
            shared = None
            if shareable():
                with contextlib.suppress(OSError):
                    shared = SharedBars(self.jobs[index].bars)
            self._shared[index] = shared
        return self._shared[index]


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
            results.append(finish(job, run_symbol(job, progress)))
        except Exception as exc:
            raise BacktestFailed(f"{job.symbol}: {type(exc).__name__}: {exc}") from exc
        finished += len(job.bars)
    return results
