"""One symbol's backtest: the live worker's Runner and the paper broker, fed bar by bar.

Nothing here trades or decides: per bar, exactly as the fleet does it, ``PaperBroker.on_bar``
fills resting orders, then ``Runner.on_bar`` asks the strategies and its PlaceOrder/CancelOrder
go to the broker, whose OrderUpdates go back to the runner. So a MARKET order fills at the
signal bar's close plus slippage, with the exchange filters and fees of paper trading. The
strategies only ever see the current closed ``Bar``; the engine never hands them the series.
The journal is a ``MemoryJournal`` (the SQLite journal's semantics in dicts: nothing of a
backtest has to survive it) and the broker's clock is the bar's close time, so a run is
deterministic.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal

import msgspec
import numpy as np

from multibot.market.bar import Bar, Signal
from multibot.market.orders import OrderStatus
from multibot.wire.protocol import (
    CancelOrder,
    Message,
    OrderUpdate,
    PlaceOrder,
    PositionView,
    ProtocolError,
    SymbolRules,
    WorkerConfig,
)
from multibot.wire.settings import DEFAULTS
from orchestrator.broker.memory_journal import MemoryJournal
from orchestrator.broker.paper import PaperBroker
from strategies.base import Strategy
from strategies.registry import create
from strategies.vector import BarColumns
from worker.runner import MAX_STRATEGY_ERRORS, Runner

__all__ = ["BacktestRunner", "Decision", "FillRecord", "SymbolJob", "SymbolRun", "iter_bars",
           "run_symbol"]

CHUNK = 4096  # bars converted (and progress reported) at a time
MAX_WARNINGS = 20


@dataclass(frozen=True)
class SymbolJob:
    """Everything one symbol's run needs (msgpack-encoded for a child process, see pool)."""

    config: WorkerConfig
    rules: SymbolRules
    bars: np.ndarray  # KLINE_DTYPE
    step_ms: int
    fee_rate: Decimal = Decimal(DEFAULTS.fee_rate)
    slippage_bps: Decimal = Decimal(DEFAULTS.slippage_bps)

    @property
    def symbol(self) -> str:
        return self.config.symbol


# Decision and FillRecord are msgspec structs, not dataclasses: a frozen dataclass is slow to
# build (object.__setattr__ per field).


class Decision(msgspec.Struct, frozen=True, array_like=True):
    """An order request the runner made, and the open time of the bar it made it on."""

    bar_time: int
    action: str  # PLACE | CANCEL
    client_order_id: str
    side: str = ""
    type: str = ""
    quantity: str = ""
    price: str | None = None


class FillRecord(msgspec.Struct, frozen=True, array_like=True):
    bar: int  # index of the bar it filled on
    side: str
    price: str
    qty: str
    fee: str
    position: str  # quantity held after the fill
    realized_pnl: str  # the position's realized PnL after the fill (net of all fees)


@dataclass
class SymbolRun:
    """What happened: position snapshots, fills and decisions; metrics are computed from it."""

    symbol: str
    bars: int
    # position after the last update of a bar, at every bar where it changed
    change_bar: list[int] = field(default_factory=list)
    qty: list[float] = field(default_factory=list)
    avg_entry: list[float] = field(default_factory=list)
    realized: list[float] = field(default_factory=list)
    fills: list[FillRecord] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    rejected_orders: int = 0
    strategy_errors: int = 0
    disabled: list[str] = field(default_factory=list)  # strategies disabled for their errors
    last_error: str = ""
    warnings: list[str] = field(default_factory=list)

    def record(self, index: int, update: OrderUpdate) -> None:
        """Note the fills of ``update`` and the position after it, made on bar ``index``."""
        position = update.position
        for fill in update.fills:
            self.fills.append(FillRecord(index, fill.side, fill.price, fill.qty, fill.fee,
                                         position.qty, position.realized_pnl))
        if update.order.status == OrderStatus.REJECTED:
            self.rejected_orders += 1
        if self.change_bar and self.change_bar[-1] == index:
            self.change_bar.pop()
            self.qty.pop()
            self.avg_entry.pop()
            self.realized.pop()
        self.change_bar.append(index)
        self.qty.append(float(position.qty))
        self.avg_entry.append(float(position.avg_entry))
        self.realized.append(float(position.realized_pnl))


class BacktestRunner(Runner):
    """The live worker's Runner, plus what the event-driven path asks of it."""

    def on_signals(self, bar: Bar, signals: Sequence[Signal | None]) -> list[Message]:
        """``on_bar`` when the strategies' answers for ``bar`` are already known, in the
        strategies' order (see ``Strategy.signals``)."""
        if not self._advance(bar):
            return []
        for i, signal in enumerate(signals):
            if signal is not None and self._errors[i] < MAX_STRATEGY_ERRORS:  # not disabled
                self._combiner.update(i, signal)
                self._stale_target = True
        return self._act()

    def skip(self, bars: int, last_open_time: int, last_close: float) -> None:
        """Count ``bars`` bars on which no strategy spoke, no order was in flight and no exit
        was to be tried again: ``on_bar`` would have done nothing on them but this."""
        assert self.idle, "skip() with orders in flight or an exit to retry"
        self.bars += bars
        self.last_bar_time = self._last_live_time = last_open_time
        self._last_close = last_close


def iter_bars(symbol: str, rows: np.ndarray, step_ms: int) -> Iterator[Bar]:
    """The closed bars of ``rows``, one at a time, in order (a chunk is converted at once)."""
    return itertools.chain.from_iterable(_chunks(symbol, rows, step_ms))


def _chunks(symbol: str, rows: np.ndarray, step_ms: int) -> Iterator[list[Bar]]:
    # Bars built a chunk at a time in a list: iterating a list costs less than a generator
    last = step_ms - 1
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        opened = chunk["open_time"]
        columns = [opened.tolist(), (opened + last).tolist()]
        columns += [chunk[name].tolist() for name in ("open", "high", "low", "close", "volume")]
        yield [Bar(symbol=symbol, open_time=t, close_time=tc, open=o, high=h, low=lo, close=c,
                   volume=v) for t, tc, o, h, lo, c, v in zip(*columns, strict=True)]


class _Capture(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.sink) < MAX_WARNINGS:
            self.sink.append(record.getMessage())


@contextmanager
def _captured_warnings(sink: list[str]) -> Iterator[None]:
    """The runner's warnings go into the result (and the report), not onto the terminal."""
    logger = logging.getLogger("worker.runner")
    saved = logger.level, logger.propagate
    handler = _Capture(sink)
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def run_symbol(job: SymbolJob, progress: Callable[[int], None] | None = None, *,
               bar_by_bar: bool = False) -> SymbolRun:
    """Backtest one symbol in this process; ``progress(bars_done)`` every CHUNK bars.

    Event-driven when every strategy has ``signals``, unless ``bar_by_bar`` (the reference
    the event-driven run must equal exactly)."""
    symbol, rows = job.symbol, job.bars
    result = SymbolRun(symbol=symbol, bars=len(rows))
    bar: Bar | None = None  # the bar being processed; the loops assign it through ``step``

    def clock() -> int:  # the broker's time (ns): just after the current bar closed
        return 0 if bar is None else (bar.close_time + 1) * 1_000_000

    journal = MemoryJournal()
    broker = PaperBroker(journal, {symbol: job.rules}, fee_rate=job.fee_rate,
                         slippage_bps=job.slippage_bps, clock=clock)
    strategies = [create(spec.name, spec.params) for spec in job.config.strategies]
    # the runner's waits between exit tries run on the bars' time too: a run is deterministic
    runner = BacktestRunner(job.config, job.rules, strategies, PositionView(symbol=symbol), [], 1,
                            clock=lambda: clock() / 1e9)

    def step(index: int, current: Bar, signals: Sequence[Signal | None] | None) -> None:
        """One bar, as the fleet does it: the broker fills, then the runner decides."""
        nonlocal bar
        bar = current
        updates = broker.on_bar(current)
        if updates:
            for update in updates:
                runner.on_update(update)
                result.record(index, update)
        actions = runner.on_bar(current) if signals is None else runner.on_signals(current,
                                                                                     signals)
        if actions:
            for action in actions:
                _execute(broker, runner, result, index, current.open_time, action)
            # what the answers allow at once, as the worker's timer does: the exit after a
            # cancelled entry, the entry after a cancelled exit
            for action in runner.on_timer():
                _execute(broker, runner, result, index, current.open_time, action)

    with journal, _captured_warnings(result.warnings):
        for strategy in strategies:
            strategy.on_start()
        codes = None if bar_by_bar else _signal_codes(strategies, rows, result.warnings)
        if codes is None:
            _bar_by_bar(job, step, progress)
        else:
            _event_driven(job, codes, step, runner, broker, progress)
        for strategy in strategies:
            strategy.on_stop()
    result.strategy_errors, result.last_error = runner.strategy_errors, runner.last_error
    result.disabled = runner.disabled
    if progress is not None:
        progress(result.bars)
    return result


Step = Callable[[int, Bar, "Sequence[Signal | None] | None"], None]


def _bar_by_bar(job: SymbolJob, step: Step, progress: Callable[[int], None] | None) -> None:
    """Every bar through ``Strategy.on_bar``: any strategy."""
    mask = CHUNK - 1  # CHUNK is 2**k
    for index, bar in enumerate(iter_bars(job.symbol, job.bars, job.step_ms)):
        step(index, bar, None)
        if progress is not None and index & mask == mask:
            progress(index + 1)


def _signal_codes(strategies: list[Strategy], rows: np.ndarray,
                  warnings: list[str]) -> np.ndarray | None:
    """(strategies x bars) signal codes when every strategy has ``signals`` (and the bars are
    sound), else None: then the run goes bar by bar, which is always right, only slower."""
    if not strategies or len(rows) == 0:
        return None
    for name in ("low", "high", "close"):  # > 0 is False for NaN; isinf catches the rest
        column = rows[name]
        if not (column > 0).all() or np.isinf(column).any():
            return None  # the broker skips corrupt bars one by one: leave them to it
    columns = BarColumns(rows["open_time"], rows["open"], rows["high"], rows["low"],
                         rows["close"], rows["volume"])
    codes = []
    for strategy in strategies:
        try:
            answer = strategy.signals(columns)
        except Exception as exc:  # user code: say so, and fall back to on_bar
            warnings.append(f"{strategy.name}.signals() raised {type(exc).__name__}: {exc}; "
                            "ran bar by bar instead")
            return None
        if answer is None:
            return None
        answer = np.asarray(answer)
        if answer.shape != (len(rows),) or not _codes_only(answer):
            warnings.append(f"{strategy.name}.signals() returned a {answer.dtype} array of "
                            f"shape {answer.shape}, not {len(rows)} codes in -1, 0, 1; ran bar "
                            "by bar instead")
            return None
        codes.append(answer.astype(np.int8))
    return np.stack(codes)


def _codes_only(answer: np.ndarray) -> bool:
    """Every value -1, 0 or 1 (np.isin, without its sorted copies of the series)."""
    if answer.dtype.kind not in "biuf":
        return False
    with np.errstate(invalid="ignore"):
        return bool(((answer == -1) | (answer == 0) | (answer == 1)).all())


def _event_driven(job: SymbolJob, codes: np.ndarray, step: Step, runner: BacktestRunner,
                  broker: PaperBroker, progress: Callable[[int], None] | None) -> None:
    """Only the bars where a strategy speaks, or an order is open, go through ``step``; the
    quiet bars in between are counted (``BacktestRunner.skip``): on them the per-bar loop
    would only note the close, which the next stepped bar overwrites."""
    symbol, rows, last = job.symbol, job.bars, job.step_ms - 1
    # item(): a row's Python numbers at once, for the few bars that are stepped (or skipped to);
    # cheaper than whole columns as lists (MBs of fresh pages in a new child)
    row = rows[["open_time", "open", "high", "low", "close", "volume"]].item
    events = np.flatnonzero(codes.any(axis=0)).tolist()
    signals_at = dict(zip(events, ([_SIGNALS[c] for c in column]
                                   for column in codes[:, events].T.tolist()), strict=True))
    silent = [None] * len(codes)
    count, index, next_event = len(rows), 0, 0
    next_report = CHUNK
    while index < count:
        if runner.idle and not broker.has_open(symbol):
            while next_event < len(events) and events[next_event] < index:
                next_event += 1
            target = events[next_event] if next_event < len(events) else count
            if target > index:
                last_open, _, _, _, last_close, _ = row(target - 1)  # the last quiet bar
                runner.skip(target - index, last_open, last_close)
                index = target
                if index == count:
                    break
        open_time, open_, high, low, close, volume = row(index)
        bar = Bar(symbol=symbol, open_time=open_time, close_time=open_time + last,
                  open=open_, high=high, low=low, close=close, volume=volume)
        step(index, bar, signals_at.get(index, silent))
        index += 1
        if progress is not None and index >= next_report:
            progress(index)
            next_report = index + CHUNK


_SIGNALS: dict[int, Signal | None] = {1: Signal.LONG, -1: Signal.FLAT, 0: None}


def _execute(broker: PaperBroker, runner: BacktestRunner, result: SymbolRun, index: int,
             bar_time: int, action: object) -> None:
    try:
        if isinstance(action, PlaceOrder):
            result.decisions.append(Decision(bar_time, "PLACE", action.client_order_id,
                                             action.side, action.type, action.quantity,
                                             action.price))
            update = broker.place_now(runner.symbol, action)
        elif isinstance(action, CancelOrder):
            result.decisions.append(Decision(bar_time, "CANCEL", action.client_order_id))
            update = broker.cancel_now(runner.symbol, action.client_order_id)
        else:
            raise TypeError(f"the runner asked for {action!r}")
    except ProtocolError as exc:  # the fleet answers these with an Error message
        runner.last_error = f"broker: {exc.code.value}: {exc.reason}"
        return
    runner.on_update(update)
    result.record(index, update)
