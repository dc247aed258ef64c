"""What a backtest child process does, and what it sends back to the pool (see pool).

A child runs one job (or one part of a job's run, see split), then sends two messages down
its pipe: the run as soon as its loop is done, so that the parent can stitch the parts while
the children work out their round trips, and then those round trips. Or ("error", text).
Payloads are msgpack, several times faster than pickle both ways for thousands of fills;
pickled objects in the odd case msgpack cannot carry them (e.g. a lone surrogate in text).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from decimal import Decimal, localcontext
from multiprocessing.connection import Connection
from typing import Any, TypeVar

import msgspec
import numpy as np

from multibot.backtest.engine import SymbolJob, SymbolRun, run_symbol
from multibot.backtest.metrics import RoundTrip, round_trips, total_fees
from multibot.backtest.report import trip_json
from multibot.backtest.shared import attach_bars, attach_counters
from multibot.market.bundled import KLINE_DTYPE
from multibot.market.position import EXACT
from multibot.wire.protocol import SymbolRules, WorkerConfig

__all__ = ["MESSAGE_KINDS", "Assignment", "Finished", "Trips", "assign", "finish", "joined",
           "main", "serve", "trips_of", "unpack"]


class Trips(msgspec.Struct, kw_only=True):
    """A run's round trips as the metrics and the report want them, and its fees: worked out
    where the run was, so several symbols' (or parts') are worked out at once."""

    trips: list[RoundTrip]
    trades: list[dict[str, Any]]  # report.trip_json of each trip
    fees: Decimal  # every fee of the run, summed exactly


class Finished(msgspec.Struct, kw_only=True):
    """A job's run and its ``Trips``: what ``pool.run_jobs`` returns for each job."""

    run: SymbolRun
    trips: list[RoundTrip]
    trades: list[dict[str, Any]]
    fees: Decimal


def trips_of(job: SymbolJob, run: SymbolRun) -> Trips:
    trips = round_trips(run.fills)
    times = job.bars["open_time"]
    return Trips(trips=trips, trades=[trip_json(t, times) for t in trips],
                 fees=total_fees(run.fills))


def finish(job: SymbolJob, run: SymbolRun) -> Finished:
    return joined(run, [trips_of(job, run)])


def joined(run: SymbolRun, parts: Sequence[Trips]) -> Finished:
    """``run`` (whole, or stitched from parts) with the ``Trips`` of its parts, in bar order.
    No round trip spans a cut: a run is flat there."""
    with localcontext(EXACT):
        fees = sum((p.fees for p in parts), Decimal(0))
    return Finished(run=run, trips=[t for p in parts for t in p.trips],
                    trades=[t for p in parts for t in p.trades], fees=fees)


class Assignment(msgspec.Struct, frozen=True, array_like=True):
    """What the pool gives a child (msgpack, with the descriptors of its results pipe, the
    progress counters and maybe the job's SharedBars): its job, and where it runs."""

    slot: int  # its progress counter
    config: WorkerConfig
    rules: SymbolRules
    step_ms: int
    fee_rate: Decimal
    slippage_bps: Decimal
    part: tuple[int, int] | None
    bars: int | bytes  # how many bars the SharedBars given hold, or the bars themselves
    # the caller's (os.fsencode: any path the OS takes), so that a strategy module imports
    # as it did there; no cwd when the caller's was deleted
    sys_path: list[bytes]
    cwd: bytes | None


# Made when the fork server imports this module, so that no child builds its type information
# again (~100 page faults a child).
_ASSIGNMENT = msgspec.msgpack.Decoder(Assignment)


def assign(slot: int, job: SymbolJob, part: tuple[int, int] | None, *,
           shared: bool) -> Assignment:
    """``job`` (part ``part`` of it) for the child with counter ``slot``; its bars ``shared``
    (see SharedBars) or carried along."""
    try:
        cwd: bytes | None = os.fsencode(os.getcwd())
    except OSError:
        cwd = None
    return Assignment(slot, job.config, job.rules, job.step_ms, job.fee_rate,
                      job.slippage_bps, part, len(job.bars) if shared else
                      np.ascontiguousarray(job.bars, dtype=KLINE_DTYPE).tobytes(),
                      [os.fsencode(p) for p in sys.path if isinstance(p, str)], cwd)


def serve(payload: bytes, fds: list[int]) -> None:
    """The child's entry point in the fork server (see forkserver): an Assignment and the
    descriptors of its results pipe, the counters, and maybe the bars."""
    task = _ASSIGNMENT.decode(payload)
    results, counters, *shared = fds
    sys.path[:] = [os.fsdecode(p) for p in task.sys_path]
    if task.cwd is not None:
        os.chdir(os.fsdecode(task.cwd))
    if isinstance(task.bars, bytes):
        bars = np.frombuffer(task.bars, dtype=KLINE_DTYPE)
    else:
        bars = attach_bars(shared[0], task.bars)
    job = SymbolJob(task.config, task.rules, bars, task.step_ms, task.fee_rate,
                    task.slippage_bps)
    main(task.slot, job, task.part, attach_counters(counters),
         Connection(results, readable=False))


def main(slot: int, job: SymbolJob, part: tuple[int, int] | None, counters: Any,
         results: Connection) -> None:
    """Run ``job`` (or part of it) and send the run, then its round trips, down ``results``;
    ``counters[slot]`` its progress in bars."""

    def progress(done: int) -> None:
        counters[slot] = done

    try:
        run = run_symbol(job, progress, part=part)
        _send(results, run)
        _send(results, trips_of(job, run))
    except KeyboardInterrupt:
        return  # Ctrl-C reached the whole process group; the parent stops everything
    except BrokenPipeError:
        return  # the parent no longer wants it (it stopped, or threw this part away)
    except BaseException as exc:
        with contextlib.suppress(BrokenPipeError):
            results.send(("error", f"{type(exc).__name__}: {exc}"))
    results.close()


T = TypeVar("T", SymbolRun, Trips)
#: the name each of a child's two messages goes by, in the order they are sent
MESSAGE_KINDS: dict[type, str] = {SymbolRun: "run", Trips: "trips"}


def _send(results: Connection, value: SymbolRun | Trips) -> None:
    try:
        payload: bytes | SymbolRun | Trips = msgspec.msgpack.encode(value)
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        payload = value
    results.send((MESSAGE_KINDS[type(value)], payload))
_DECODERS: dict[type, msgspec.msgpack.Decoder[Any]] = {
    kind: msgspec.msgpack.Decoder(kind) for kind in (SymbolRun, Trips)}


def unpack(payload: object, kind: type[T]) -> T:
    if isinstance(payload, bytes):
        value: T = _DECODERS[kind].decode(payload)
        return value
    assert isinstance(payload, kind)
    return payload
