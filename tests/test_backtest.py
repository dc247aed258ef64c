"""Backtest engine: the live Runner and PaperBroker over history; metrics, isolation, look-ahead."""

from __future__ import annotations

import gzip
import json
import math
import multiprocessing
import os
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

import multibot.backtest.engine as engine
from multibot.backtest.data import load_csv
from multibot.backtest.engine import SymbolJob
from multibot.backtest.pool import BacktestFailed, run_jobs
from multibot.backtest.progress import ProgressBar
from multibot.backtest.session import Request, Result, prepare, run_backtest
from multibot.market.bar import Bar
from strategies.registry import builtins, load_strategy_class
from tests.backtest_support import (
    BUY_SELL,
    HOUR,
    LEAKY,
    PEEKER,
    RECORDER,
    T0,
    own_session,
    processes_of_session,
    strategy_file,
    strategy_running,
    write_binance_csv,
    write_bundled_csv,
)
from tests.support import eventually

HOURLY = {"interval": "1h", "start": "2021-06-01", "end": "2021-06-10T04:00"}  # 221 bars
REPO = Path(__file__).resolve().parents[1]
CLOSES = [100.0, 100.0, 90.0, 120.0, 120.0]


def backtest(symbols: list[str], **options: Any) -> Result:
    options.setdefault("isolate", False)
    return run_backtest(Request(symbols=symbols, **options))


def symbol_report(result: Result, symbol: str) -> dict[str, Any]:
    report: dict[str, Any] = result.report["symbols"][symbol]
    return report


# --- metrics on a series where the right answer is known ---------------------------------------


def test_one_round_trip_with_known_fees_drawdown_and_metrics(tmp_path: Path) -> None:
    data = write_bundled_csv(tmp_path / "k.csv", CLOSES)
    ref = f"{strategy_file(tmp_path, 'buysell', BUY_SELL)}:BuySell"
    result = backtest(["BTCUSDT"], data=[data], strategies=[ref], slippage_bps="0")
    [out] = result.outcomes
    # buy 1 BTC at the 2nd close (100, fee 0.1), sell it at the 4th (120, fee 0.12)
    equity = [100.0, 99.9, 89.9, 119.78, 119.78]
    assert out.curve.equity.tolist() == pytest.approx(equity)
    m = out.metrics
    assert m.return_pct == pytest.approx(19.78)
    assert m.max_drawdown_pct == pytest.approx(10.1)  # peak 100 -> 89.9
    assert (m.trades, m.wins, m.win_rate_pct) == (1, 1, 100.0)
    assert m.exposure_pct == pytest.approx(40.0)  # held after bars 2 and 3 of 5
    assert m.buy_hold_return_pct == pytest.approx(20.0)
    assert m.fees == pytest.approx(0.22)
    returns = np.diff(equity) / np.array(equity[:-1])
    sharpe = returns.mean() / returns.std(ddof=1) * math.sqrt(365 * 24)
    assert m.sharpe == pytest.approx(sharpe)
    [trade] = symbol_report(result, "BTCUSDT")["trades"]
    assert trade == {
        "entry_time": "2025-01-01T01:00Z", "exit_time": "2025-01-01T03:00Z", "bars": 2,
        "qty": "1", "entry_price": "100", "exit_price": "120", "fees": "0.22",
        "pnl": "19.78", "return_pct": 19.78,
    }


def test_market_fills_take_the_paper_brokers_slippage_and_tick(tmp_path: Path) -> None:
    data = write_bundled_csv(tmp_path / "k.csv", CLOSES)
    ref = f"{strategy_file(tmp_path, 'buysell', BUY_SELL)}:BuySell"
    result = backtest(["BTCUSDT"], data=[data], strategies=[ref])  # default 2 bps
    fills = result.outcomes[0].run.fills
    # 100 * 1.0002 = 100.02 (up to the tick); 120 * 0.9998 = 119.976 -> down to 119.97
    assert [(f.side, f.price, f.fee) for f in fills] == [
        ("BUY", "100.02", "0.10002"), ("SELL", "119.97", "0.11997")]
    assert result.outcomes[0].trips[0].pnl == Decimal("19.95") - Decimal("0.10002") - Decimal(
        "0.11997")


def test_binance_12_column_files_equal_the_bundled_format(tmp_path: Path) -> None:
    ref = f"{strategy_file(tmp_path, 'buysell', BUY_SELL)}:BuySell"
    bundled = write_bundled_csv(tmp_path / "bundled.csv", CLOSES)
    millis = write_binance_csv(tmp_path / "BTCUSDT-1h-2025-01.csv", CLOSES)
    micros = write_binance_csv(tmp_path / "micros.csv", CLOSES, micros=True)
    zipped = tmp_path / "BTCUSDT-1h-2025-01.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.write(millis, millis.name)
    gzipped = tmp_path / "bundled.csv.gz"
    gzipped.write_bytes(gzip.compress(bundled.read_bytes()))
    reports = [
        backtest(["BTCUSDT"], data=[path], strategies=[ref]).report["symbols"]["BTCUSDT"]
        for path in (bundled, millis, micros, zipped, gzipped)
    ]
    for report in reports:
        report.pop("data")
    assert all(r == reports[0] for r in reports)
    assert reports[0]["first_bar"] == "2025-01-01T00:00Z" and reports[0]["metrics"]["bars"] == 5


def test_unknown_symbols_of_a_data_file_trade_with_synthetic_rules(tmp_path: Path) -> None:
    data = write_binance_csv(tmp_path / "k.csv", [0.5, 0.5, 0.45, 0.6, 0.6])
    ref = f"{strategy_file(tmp_path, 'buysell', BUY_SELL)}:BuySell"
    result = backtest(["NEWCOINUSDT"], data=[data], strategies=[ref], slippage_bps="0")
    fills = result.outcomes[0].run.fills
    assert [(f.side, f.price, f.qty) for f in fills] == [("BUY", "0.5", "200"),
                                                         ("SELL", "0.6", "200")]


# --- isolation -------------------------------------------------------------------------------


def test_a_leaky_class_attribute_cannot_mix_state_across_symbols(tmp_path: Path) -> None:
    ref = f"{strategy_file(tmp_path, 'leaky', LEAKY)}:Leaky"
    options = {**HOURLY, "strategies": [ref], "isolate": True}
    both = backtest(["BTCUSDT", "ETHUSDT"], **options)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        alone = backtest([symbol], **options)
        assert symbol_report(both, symbol) == symbol_report(alone, symbol)
        assert symbol_report(both, symbol)["trades"], "the strategy should trade"
    # the same strategy in ONE process does leak: ETHUSDT starts 221 bars into BTCUSDT's list
    shared = backtest(["BTCUSDT", "ETHUSDT"], **{**options, "isolate": False})
    assert symbol_report(shared, "ETHUSDT") != symbol_report(both, "ETHUSDT")


def _jobs(strategy: str, symbols: tuple[str, ...] = ("BTCUSDT",)) -> list[SymbolJob]:
    return prepare(Request(symbols=list(symbols), strategies=[strategy], interval="1m",
                           start="2025-01-01", end="2025-01-02")).jobs  # 2,880 bars


def _children_settled() -> bool:
    """No child is alive but the spares, one per core (the others have exited)."""
    return len(multiprocessing.active_children()) <= (os.cpu_count() or 1)


def test_isolated_runs_equal_in_process_runs_and_hold_no_descriptors() -> None:
    """Each symbol's child gives what the same job gives in this process; once its children
    have exited, a run has left no descriptor open (pipes, sentinels)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("/proc/self/fd: Linux")
    jobs = _jobs("sma_cross:fast=5,slow=20", ("BTCUSDT", "ETHUSDT"))
    run_jobs(jobs)  # starts the forkserver and a spare child, which stay
    eventually(_children_settled, what="the run's children gone")
    held = len(os.listdir("/proc/self/fd"))
    isolated = run_jobs(jobs)
    for child, here in zip(isolated, run_jobs(jobs, isolate=False), strict=True):
        assert msgspec.msgpack.encode(child) == msgspec.msgpack.encode(here)
        assert child.run.fills and child.trades
    eventually(lambda: _children_settled() and len(os.listdir("/proc/self/fd")) <= held,
               what="the descriptors of the run's children closed")


def test_a_strategy_module_on_the_callers_path_imports_in_the_child(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A child imports ``module:Class`` as the caller would: with its sys.path and cwd."""
    strategy_running(tmp_path, "my_far_strategy", "return Signal.LONG")
    monkeypatch.syspath_prepend(str(tmp_path))
    jobs = _jobs("my_far_strategy:Test")
    [isolated] = run_jobs(jobs)
    [here] = run_jobs(jobs, isolate=False)
    assert isolated.run.fills and isolated.run.fills == here.run.fills


def test_a_deleted_working_directory_fails_the_run_clearly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = _jobs("sma_cross")
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    with pytest.raises(BacktestFailed, match="BTCUSDT: the working directory no longer exists"):
        run_jobs(jobs)


def test_a_child_killed_by_a_signal_fails_its_run_naming_the_symbol(tmp_path: Path) -> None:
    path = strategy_running(tmp_path, "suicide", "os.kill(os.getpid(), signal.SIGKILL)",
                            "import os, signal")
    with pytest.raises(BacktestFailed, match=r"BTCUSDT: the backtest process died \(exit code -9"):
        run_jobs(_jobs(f"{path}:Test"))


def test_a_failed_run_stops_the_other_symbols_children(tmp_path: Path) -> None:
    """One symbol's strategy fails: the run fails at once, and the other symbol's child (a
    slow one, that would run for minutes) is stopped, not left running."""
    failing = strategy_running(tmp_path, "failing", "raise SystemExit('boom')")
    slow = strategy_running(tmp_path, "slower", "time.sleep(0.05)", "import time")
    jobs = _jobs(f"{failing}:Test") + _jobs(f"{slow}:Test", ("ETHUSDT",))
    with pytest.raises(BacktestFailed, match="BTCUSDT: SystemExit: boom"):
        run_jobs(jobs, workers=2)
    eventually(_children_settled, timeout=10, what="the slow child stopped")


def test_children_do_not_outlive_a_killed_caller(tmp_path: Path) -> None:
    """SIGKILL of the caller (an OOM kill, `timeout -s KILL`): its children exit too."""
    path = strategy_running(tmp_path, "slowest", "time.sleep(0.05)", "import time")
    code = textwrap.dedent(f"""
        from multibot.backtest.pool import run_jobs
        from multibot.backtest.session import Request, prepare
        jobs = prepare(Request(symbols=["BTCUSDT", "ETHUSDT"], strategies=["{path}:Test"],
                               interval="1m", start="2025-01-01", end="2025-01-02")).jobs
        run_jobs(jobs, workers=2)
    """)
    with own_session(sys.executable, "-c", code, cwd=REPO) as caller:
        eventually(lambda: len(processes_of_session(caller.pid)) >= 4, timeout=60,
                   what="the caller, its forkserver and two children")
        caller.kill()
        caller.wait(30)
        eventually(lambda: not processes_of_session(caller.pid), what="no process left")


# --- determinism -----------------------------------------------------------------------------


def test_same_input_gives_the_same_report(tmp_path: Path) -> None:
    options = {**HOURLY, "strategies": ["sma_cross:fast=5,slow=20", "ema_cross:fast=8,slow=21"],
               "isolate": True, "check_lookahead": True}
    first = backtest(["BTCUSDT", "ETHUSDT"], **options)
    second = backtest(["BTCUSDT", "ETHUSDT"], **options)
    assert json.dumps(first.report) == json.dumps(second.report)
    assert first.report["symbols"]["BTCUSDT"]["trades"]


# --- look-ahead ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(builtins()))
def test_builtin_strategies_pass_the_lookahead_check(name: str) -> None:
    result = backtest(["BTCUSDT"], interval="1h", start="2021-06-01", end="2021-07-15",
                      strategies=[name], check_lookahead=True)
    assert result.leaks == []
    assert result.report["lookahead_check"] == {"passed": True, "problems": []}


@pytest.fixture
def leaking_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An engine that (wrongly) hands the peeking strategy the next bar through its hook."""
    path = strategy_file(tmp_path, "peeker", PEEKER)
    ref = f"{path}:Peeker"
    module = sys.modules[load_strategy_class(ref).__module__]
    honest = engine.iter_bars

    def leaky_iter_bars(symbol: str, rows: np.ndarray, step_ms: int) -> Iterator[Bar]:
        bars = list(honest(symbol, rows, step_ms))
        for i, bar in enumerate(bars):
            setattr(module, "NEXT", bars[i + 1] if i + 1 < len(bars) else None)  # noqa: B010
            yield bar

    monkeypatch.setattr(engine, "iter_bars", leaky_iter_bars)
    yield ref


def test_a_strategy_that_peeks_at_the_next_bar_is_detected(leaking_engine: str) -> None:
    result = backtest(["BTCUSDT"], **HOURLY, strategies=[leaking_engine], check_lookahead=True)
    metrics = result.outcomes[0].metrics  # what look-ahead looks like:
    assert metrics.return_pct > 50 > metrics.max_drawdown_pct and metrics.buy_hold_return_pct < 0
    assert result.leaks
    problem = result.report["lookahead_check"]["problems"][0]
    assert "BTCUSDT" in problem and "used bars after" in problem


def test_the_honest_engine_gives_the_peeker_nothing(tmp_path: Path) -> None:
    ref = f"{strategy_file(tmp_path, 'peeker', PEEKER)}:Peeker"
    result = backtest(["BTCUSDT"], **HOURLY, strategies=[ref], check_lookahead=True)
    assert result.leaks == [] and result.outcomes[0].metrics.trades == 0


def test_strategies_get_each_closed_bar_once_in_order_and_nothing_else(tmp_path: Path) -> None:
    ref = f"{strategy_file(tmp_path, 'recorder', RECORDER)}:Recorder"
    data = write_bundled_csv(tmp_path / "k.csv", CLOSES)
    backtest(["BTCUSDT"], data=[data], strategies=[ref])
    calls = sys.modules[load_strategy_class(ref).__module__].CALLS
    assert [args for args in calls] == [(Bar,)] * len(CLOSES)
    seen = sys.modules[load_strategy_class(ref).__module__].SEEN
    assert [(b.open_time, b.close_time, b.close) for b in seen] == [
        (T0 + i * HOUR, T0 + (i + 1) * HOUR - 1, close) for i, close in enumerate(CLOSES)]


# --- small pieces ----------------------------------------------------------------------------


class _Tty:
    def __init__(self) -> None:
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


def test_progress_bar_draws_only_on_a_terminal_and_erases_itself() -> None:
    tty = _Tty()
    bar = ProgressBar(1000, stream=tty, delay=0)  # type: ignore[arg-type]
    bar.update(500)
    assert "50%" in tty.text and "500/1,000 bars" in tty.text
    bar.close()
    assert tty.text.endswith("\r\033[K")
    quiet = _Tty()
    silent = ProgressBar(1000, stream=quiet, delay=0, enabled=False)  # type: ignore[arg-type]
    silent.update(500)
    silent.close()
    assert quiet.text == ""


def test_unsorted_and_overlapping_rows_are_sorted_and_deduplicated(tmp_path: Path) -> None:
    ref = f"{strategy_file(tmp_path, 'buysell', BUY_SELL)}:BuySell"
    clean = write_binance_csv(tmp_path / "clean.csv", CLOSES)
    rows = clean.read_text().splitlines()
    messy = tmp_path / "messy.csv"
    messy.write_text("\n".join([rows[3], *rows, rows[0]]) + "\n")  # as if files overlapped
    reports = [backtest(["BTCUSDT"], data=[p], strategies=[ref]).report["symbols"]["BTCUSDT"]
               for p in (clean, messy)]
    assert reports[0]["metrics"] == reports[1]["metrics"]
    assert reports[1]["metrics"]["bars"] == len(CLOSES)


def test_config_gives_each_symbol_its_strategies_and_stake(tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(
        '[defaults]\nstrategies = ["sma_cross:fast=5,slow=20"]\n\n'
        '[symbol.ETHUSDT]\nstake = "250"\nstrategies = ["ema_cross:fast=8,slow=21"]\n')
    result = backtest(["BTCUSDT", "ETHUSDT"], **HOURLY, config=config)
    btc, eth = (symbol_report(result, s) for s in ("BTCUSDT", "ETHUSDT"))
    assert btc["strategies"] == [{"name": "sma_cross", "params": {"fast": 5, "slow": 20}}]
    assert eth["strategies"] == [{"name": "ema_cross", "params": {"fast": 8, "slow": 21}}]
    assert (btc["stake"], eth["stake"]) == ("100", "250")
    assert result.report["parameters"]["capital"] == {"BTCUSDT": 100.0, "ETHUSDT": 250.0}


def test_a_file_mixing_milliseconds_and_microseconds_reads_as_one_series(tmp_path: Path) -> None:
    old = write_binance_csv(tmp_path / "old.csv", CLOSES).read_text().splitlines()
    new = write_binance_csv(tmp_path / "new.csv", CLOSES, micros=True).read_text().splitlines()
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("\n".join(old[:3] + new[3:]) + "\n")  # Binance switched to µs in 2025
    series = load_csv(mixed, "BTCUSDT")
    assert series.bars["open_time"].tolist() == [T0 + i * HOUR for i in range(len(CLOSES))]
    assert series.interval == "1h"
