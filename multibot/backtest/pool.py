"""Run symbol jobs: each in a fresh child process (isolated, on every core) or in-process.

A child is forked from multiprocessing's forkserver, which imported the engine and strategies
(see preload) and never runs a strategy: class attributes, module globals or monkey-patches of
a strategy cannot leak between symbols, runs or the caller. A child runs one job, one per core
at a time; spares are started ahead for the next. It gets its job with the caller's sys.path
and working directory (a strategy module imports as it did here) and sends back its progress
and result as msgpack: nothing a child sends is unpickled. On an error or Ctrl-C the children
still running are terminated; a child whose caller has gone exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import multiprocessing.forkserver
import os
import sys
import threading
from collections.abc import Callable, Sequence
from decimal import Decimal
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

import msgspec
import numpy as np

from multibot.backtest.engine import SymbolJob, SymbolRun, run_symbol
from multibot.backtest.metrics import RoundTrip, round_trips, total_fees
from multibot.backtest.report import trip_json
from multibot.errors import ErrorCode, MultibotError
from multibot.market.bundled import KLINE_DTYPE

__all__ = ["BacktestFailed", "Finished", "finish", "run_jobs", "start_forkserver"]

_POLL_S, _STOP_S = 0.1, 5.0  # progress polled; a child terminated but alive then is killed
_CONTEXT = multiprocessing.get_context("forkserver")
# The caller's main module runs once in the forkserver, not again in every child.
_PRELOAD = ["__main__", "multibot.backtest.preload"]


class BacktestFailed(MultibotError):
    """A symbol's run raised or its process died; the message names the symbol."""

    CODE = ErrorCode.INTERNAL


class Finished(msgspec.Struct, kw_only=True):
    """A job's run, its round trips and fees: worked out where the run was (in parallel)."""

    run: SymbolRun
    trips: list[RoundTrip]
    trades: list[dict[str, Any]]  # report.trip_json of each trip
    fees: Decimal


class _Task(msgspec.Struct, array_like=True):
    """A child's job (its bars follow as raw bytes), the caller's sys.path and working
    directory (as os.fsencode has them: any path goes)."""

    job: SymbolJob
    sys_path: list[bytes]
    cwd: bytes


_TASK_ENCODER = msgspec.msgpack.Encoder(enc_hook=lambda bars: None)
_TASK_DECODER = msgspec.msgpack.Decoder(_Task, dec_hook=lambda kind, _: np.empty(0, KLINE_DTYPE))
# a child's replies: bars done so far (int), then its Finished, or what its run raised (str)
_REPLY_DECODER = msgspec.msgpack.Decoder(int | Finished | str)
_spares: list[tuple[BaseProcess, Connection]] = []  # fresh children waiting for a job


def finish(job: SymbolJob, run: SymbolRun) -> Finished:
    trips = round_trips(run.fills)
    times = job.bars["open_time"]
    return Finished(run=run, trips=trips, trades=[trip_json(t, times) for t in trips],
                    fees=total_fees(run.fills))


def start_forkserver() -> None:
    """Start the forkserver now if it is not running (its imports can overlap the caller's)."""
    _CONTEXT.set_forkserver_preload(_PRELOAD)
    with contextlib.suppress(FileNotFoundError):  # no working directory: _hand_over says so
        multiprocessing.forkserver.ensure_running()


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
    start_forkserver()
    cores = max(1, workers or os.cpu_count() or 1)
    waiting = list(range(len(jobs)))
    running: dict[Connection, tuple[int, BaseProcess]] = {}
    done = [0] * len(jobs)
    results: dict[int, Finished] = {}
    try:
        while waiting or running:
            while waiting and len(running) < cores:
                index = waiting.pop(0)
                process, connection = _hand_over(jobs[index], cores)
                running[connection] = (index, process)
            for ready in wait(list(running), timeout=_POLL_S):
                assert isinstance(ready, Connection)
                index, process = running[ready]
                reply = _receive(jobs[index].symbol, ready, process)
                if isinstance(reply, int):
                    done[index] = reply
                else:
                    del running[ready]
                    ready.close()
                    results[index] = reply
            if on_progress is not None:
                on_progress(sum(done))
    finally:  # an error or Ctrl-C: stop every child still running, all at once
        for _, process in running.values():
            process.terminate()
        for connection, (_, process) in running.items():
            connection.close()
            process.join(_STOP_S)
            if process.exitcode is None:
                process.kill()
                process.join()
    return [results[i] for i in range(len(jobs))]


def _spawn() -> tuple[BaseProcess, Connection]:
    ours, theirs = _CONTEXT.Pipe()
    process = _CONTEXT.Process(target=_child, args=(theirs,), name="multibot-backtest",
                               daemon=True)
    try:
        process.start()
    finally:
        theirs.close()  # the child holds the only other end: EOF = it died
    return process, ours


def _hand_over(job: SymbolJob, spares: int) -> tuple[BaseProcess, Connection]:
    """A fresh child running ``job``: a spare, or a new one; then ``spares`` are ready again."""
    try:
        cwd = os.fsencode(os.getcwd())
    except FileNotFoundError:  # multiprocessing needs it too
        raise BacktestFailed(f"{job.symbol}: the working directory no longer exists") from None
    paths = [os.fsencode(p) for p in sys.path if isinstance(p, str)]
    task = _TASK_ENCODER.encode(_Task(job, paths, cwd))
    bars = np.ascontiguousarray(job.bars, dtype=KLINE_DTYPE).view(np.uint8).data
    while _spares and not _spares[0][0].is_alive():  # killed while it waited
        _spares.pop(0)[1].close()
    process, connection = _spares.pop(0) if _spares else _spawn()
    try:
        connection.send_bytes(task)
        connection.send_bytes(bars)
    except OSError as exc:
        connection.close()
        raise BacktestFailed(f"{job.symbol}: the backtest process died at once") from exc
    while len(_spares) < spares:
        _spares.append(_spawn())
    return process, connection


def _receive(symbol: str, connection: Connection, process: BaseProcess) -> int | Finished:
    """The child's next message: its progress, or its result. A child that sent its result
    is not waited for: the forkserver, its parent, reaps it."""
    try:
        reply: int | Finished | str | None = _REPLY_DECODER.decode(connection.recv_bytes())
    except EOFError:
        reply = None
    if isinstance(reply, int | Finished):
        return reply
    if isinstance(reply, str):
        raise BacktestFailed(f"{symbol}: {reply}")
    process.join(_STOP_S)
    raise BacktestFailed(f"{symbol}: the backtest process died (exit code "
                         f"{process.exitcode}: killed, out of memory, or the strategy exited)")


def _child(connection: Connection) -> None:
    """A child: wait for its job, run it, send its progress, then its result or error."""
    threading.Thread(target=_exit_with_caller, daemon=True).start()

    def progress(done: int) -> None:
        connection.send_bytes(msgspec.msgpack.encode(done))

    try:
        task = _TASK_DECODER.decode(connection.recv_bytes())
        job = dataclasses.replace(task.job, bars=np.frombuffer(connection.recv_bytes(),
                                                               dtype=KLINE_DTYPE))
        sys.path[:] = [os.fsdecode(p) for p in task.sys_path]
        os.chdir(os.fsdecode(task.cwd))
        reply = msgspec.msgpack.encode(finish(job, run_symbol(job, progress)))
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        return  # Ctrl-C reached the whole process group, or the caller has gone
    except BaseException as exc:
        reason = f"{type(exc).__name__}: {exc}".encode(errors="backslashreplace").decode()
        reply = msgspec.msgpack.encode(reason)
    with contextlib.suppress(BrokenPipeError):
        connection.send_bytes(reply)


def _exit_with_caller() -> None:
    caller = multiprocessing.parent_process()
    if caller is not None:
        caller.join()
        os._exit(1)


def _in_process(jobs: Sequence[SymbolJob],
                on_progress: Callable[[int], None] | None) -> list[Finished]:
    """Same results in this process, one job after the other (no isolation: tests, profiling)."""
    results: list[Finished] = []
    before = 0  # bars of the jobs done

    def progress(done: int) -> None:
        if on_progress is not None:
            on_progress(before + done)

    for job in jobs:
        try:
            results.append(finish(job, run_symbol(job, progress)))
        except Exception as exc:
            raise BacktestFailed(f"{job.symbol}: {type(exc).__name__}: {exc}") from exc
        before += len(job.bars)
    return results
