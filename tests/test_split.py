"""One symbol's run cut at rest into parts on several cores, and stitched back: the same run,
exactly, as in one piece; where a cut was not at rest, the symbol runs again in one piece."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from multibot.backtest.engine import SymbolJob, SymbolRun, run_symbol
from multibot.backtest.pool import MIN_PART_BARS, run_jobs
from multibot.backtest.session import Request, prepare
from multibot.backtest.split import bounds, stances_before
from multibot.backtest.stitch import stitch
from tests.backtest_support import strategy_file

# Everything a run is made of (not its wall time, nor how many processes ran it)
FIELDS = ("symbol", "bars", "change_bar", "qty", "avg_entry", "realized", "fills", "decisions",
          "rejected_orders", "strategy_errors", "last_error", "warnings")


def same(a: SymbolRun, b: SymbolRun) -> None:
    for name in FIELDS:
        assert msgspec.msgpack.encode(getattr(a, name)) == msgspec.msgpack.encode(
            getattr(b, name)), name


def job(symbol: str, *strategies: str, days: int = 30, **options: Any) -> SymbolJob:
    request = Request(symbols=[symbol], strategies=list(strategies), interval="1m",
                      end=f"2025-{1 + days // 31:02d}-{1 + days % 31:02d}", **options)
    return prepare(request).jobs[0]


# --- where to cut ----------------------------------------------------------------------------


def test_cuts_fall_just_after_the_bars_whose_target_turned_flat() -> None:
    codes = np.zeros((1, 20), dtype=np.int8)
    codes[0, [2, 6, 9, 14]] = 1  # LONG
    codes[0, [4, 8, 12, 17]] = -1  # FLAT; the one on 8 ends the LONG of 6, not of 9
    assert bounds(codes, 1) == [0, 20]
    cuts = bounds(codes, 2)
    assert len(cuts) == 3 and cuts[1] in (5, 9, 13, 18)
    for cut in bounds(codes, 4)[1:-1]:
        assert codes[0, cut - 1] == -1  # the target turned FLAT on the bar before
    assert stances_before(codes, 10) == [1] and stances_before(codes, 9) == [-1]
    assert stances_before(codes, 2) == [0]  # not spoken yet


def test_two_strategies_are_cut_where_their_majority_turned_flat() -> None:
    codes = np.zeros((2, 12), dtype=np.int8)
    codes[0, 1], codes[1, 3] = 1, 1  # both LONG from bar 3: the majority is LONG
    codes[0, 6] = -1  # one FLAT: a tie is FLAT, so the target turned FLAT on bar 6
    codes[1, 9] = -1
    assert bounds(codes, 2) == [0, 7, 12]


def test_a_run_that_never_turns_flat_is_not_cut() -> None:
    codes = np.zeros((1, 50), dtype=np.int8)
    codes[0, 3] = 1
    assert bounds(codes, 3) == [0, 50]
    assert bounds(np.zeros((1, 50), dtype=np.int8), 3) == [0, 50]


# --- the stitched run is the run --------------------------------------------------------------


@pytest.mark.parametrize(("symbol", "strategies"), [
    ("BTCUSDT", ("sma_cross:fast=10,slow=30",)),
    ("ETHUSDT", ("sma_cross:fast=3,slow=5",)),  # thousands of orders
    ("XRPUSDT", ("ema_cross", "sma_cross:fast=7,slow=25")),  # a majority of two
])
def test_parts_stitched_equal_the_run_in_one_piece(symbol: str, strategies: tuple[str, ...]
                                                   ) -> None:
    whole_job = job(symbol, *strategies)
    whole = run_symbol(whole_job)
    assert len(whole.fills) > 40
    for count in (2, 3, 5):
        parts = [run_symbol(whole_job, part=(i, count)) for i in range(count)]
        assert len([p for p in parts if p.bars]) == count, "the run should be cut"
        assert all(p.settled for p in parts)
        stitched = stitch(parts)
        assert stitched is not None
        same(stitched, whole)
        assert stitched.parts == count


def test_a_run_without_vector_signals_is_one_part(tmp_path: Path) -> None:
    ref = f"{strategy_file(tmp_path, 'flip', FLIP)}:Flip"
    whole_job = job("BTCUSDT", ref, days=3)
    parts = [run_symbol(whole_job, part=(i, 2)) for i in range(2)]
    assert [p.bars for p in parts] == [len(whole_job.bars), 0]
    stitched = stitch(parts)
    assert stitched is not None
    same(stitched, run_symbol(whole_job))


def test_a_part_that_did_not_end_at_rest_is_not_stitched() -> None:
    whole_job = job("BTCUSDT", "sma_cross:fast=10,slow=30")
    parts = [run_symbol(whole_job, part=(i, 2)) for i in range(2)]
    assert stitch(parts) is not None
    assert stitch([dataclasses.replace(parts[0], settled=False), parts[1]]) is None
    # a later part's rejections and errors name its own order ids: not stitched either
    assert stitch([parts[0], dataclasses.replace(parts[1], rejected_orders=1)]) is None
    assert stitch([parts[0], dataclasses.replace(parts[1], strategy_errors=1)]) is None
    # parts whose own signals cut elsewhere (signals that differ from run to run)
    assert stitch([parts[0], dataclasses.replace(parts[1], first_bar=parts[1].first_bar + 1)]
                  ) is None
    assert stitch([parts[1]]) is None  # the start is missing


# --- in the pool -----------------------------------------------------------------------------


def test_the_pool_cuts_a_lone_symbol_over_the_cores_and_the_result_is_the_same() -> None:
    whole_job = job("BTCUSDT", "sma_cross:fast=10,slow=30", days=40)
    assert len(whole_job.bars) >= 2 * MIN_PART_BARS
    [cut] = run_jobs([whole_job], workers=2)
    [whole] = run_jobs([whole_job], isolate=False)
    assert cut.run.parts == 2
    same(cut.run, whole.run)
    # the round trips, worked out part by part, are the whole run's too
    assert cut.trips == whole.trips  # Decimal values (their exponents may differ)
    assert cut.trades == whole.trades and len(cut.trades) > 100
    limit = dataclasses.replace(whole_job, config=msgspec.structs.replace(
        whole_job.config, order_type="LIMIT"))
    assert run_jobs([limit], workers=2)[0].run.parts == 1  # resting orders: never cut


def test_when_a_cut_was_not_at_rest_the_symbol_runs_again_in_one_piece(tmp_path: Path) -> None:
    """A strategy whose on_fill fails: the parts cannot be trusted (a strategy may have been
    disabled), so the pool runs the symbol whole, and gets what one piece gets."""
    ref = f"{strategy_file(tmp_path, 'touchy', TOUCHY)}:Touchy"
    whole_job = job("BTCUSDT", ref, days=40)
    [isolated] = (done.run for done in run_jobs([whole_job], workers=2))
    assert isolated.parts == 1
    assert isolated.strategy_errors > 0
    same(isolated, run_symbol(whole_job))


FLIP = """\
class Flip(Strategy):
    '''LONG and FLAT in turn every 10 bars, bar by bar only (no signals()).'''

    name = "flip"
    warmup = 0

    def on_bar(self, bar: Bar) -> Signal | None:
        step = bar.open_time // 60_000 % 20
        return Signal.LONG if step == 0 else Signal.FLAT if step == 10 else None
"""

TOUCHY = """\
from strategies.sma_cross import SmaCross


class Touchy(SmaCross):
    '''sma_cross (with its vector signals) whose on_fill fails on every fill.'''

    name = "touchy"

    def on_fill(self, side: str, qty: float, price: float) -> None:
        raise RuntimeError("touchy")
"""


SLOW_START = """\
import time

from strategies.sma_cross import SmaCross


class SlowStart(SmaCross):
    '''sma_cross whose on_fill fails on every fill, and takes 0.1 s on each in the part that
    begins with the run's first fill: the other part is done long before.'''

    name = "slow_start"
    first_fill_price = None

    def on_fill(self, side: str, qty: float, price: float) -> None:
        if self.first_fill_price is None:
            self.first_fill_price = price
        if self.first_fill_price == {price!r}:
            time.sleep(0.1)
        raise RuntimeError("slow_start")
"""


def test_round_trips_of_a_part_thrown_away_do_not_count(tmp_path: Path) -> None:
    """The second part sends its run and its round trips while the first still runs; the
    first's strategy failed, so the symbol runs again in one piece: only that run counts."""
    first = float(run_symbol(job("BTCUSDT", "sma_cross", days=40)).fills[0].price)
    source = SLOW_START.replace("{price!r}", repr(first))
    ref = f"{strategy_file(tmp_path, 'slow_start', source)}:SlowStart"
    whole_job = job("BTCUSDT", ref, days=40)
    [isolated] = run_jobs([whole_job], workers=2)
    [here] = run_jobs([whole_job], isolate=False)
    assert isolated.run.parts == 1 and isolated.run.strategy_errors > 0
    same(isolated.run, here.run)
    assert msgspec.msgpack.encode([isolated.trips, isolated.trades, isolated.fees]) == (
        msgspec.msgpack.encode([here.trips, here.trades, here.fees]))
