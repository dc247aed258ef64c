"""One backtest from start to finish: options -> symbol jobs -> runs -> metrics -> outputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multibot.backtest.data import (
    DataError,
    Series,
    bundled_series,
    interval_ms,
    iso,
    load_csv,
    parse_when,
    select,
)
from multibot.backtest.engine import SymbolJob
from multibot.backtest.lookahead import FRACTIONS, Leak, Probe, compare, probes
from multibot.backtest.metrics import Curve, Metrics, combine, curve_of, metrics_of
from multibot.backtest.pool import run_jobs
from multibot.backtest.report import SymbolOutcome, build_report, strategy_label
from multibot.config import ConfigError, configure
from multibot.errors import ErrorCode, MultibotError
from multibot.market.rules import bundled_rules, fmt, price_decimal, synthetic_rules
from multibot.wire.protocol import WorkerConfig
from multibot.wire.settings import ORDER_TYPES, SettingsError, normalize_symbols, parse_decimal
from orchestrator.plans import check_stake
from strategies.base import StrategyError
from strategies.registry import create

__all__ = ["Request", "Result", "UsageError", "planned_bars", "prepare", "run_backtest",
           "write_outputs"]


class UsageError(MultibotError, ValueError):
    """Bad input (symbol, option, file, range); the CLI exits with code 2."""

    CODE = ErrorCode.BAD_CONFIG


@dataclass(frozen=True)
class Request:
    """The command's options, as typed (strings are parsed and checked by ``prepare``);
    None = not given: the config file or the declared default decides."""

    symbols: list[str]
    strategies: list[str] = field(default_factory=list)
    config: Path | None = None
    start: str | None = None
    end: str | None = None
    data: list[Path] = field(default_factory=list)
    interval: str | None = None
    stake: str | None = None
    capital: str | None = None
    fee_rate: str | None = None
    slippage_bps: str | None = None
    order_type: str | None = None
    check_lookahead: bool = False
    fractions: tuple[float, ...] = FRACTIONS
    isolate: bool = True  # one process per run; False runs everything in this process


@dataclass(frozen=True)
class Prepared:
    jobs: list[SymbolJob]
    sources: list[str]
    capitals: list[float]
    parameters: dict[str, Any]


@dataclass(frozen=True)
class Result:
    outcomes: list[SymbolOutcome]
    combined_curve: Curve
    combined: Metrics
    leaks: list[Leak] | None
    report: dict[str, Any]
    title: str


def _series(req: Request, symbols: list[str], interval: str) -> list[Series]:
    if req.data and len(req.data) != len(symbols):
        raise UsageError(f"--data given {len(req.data)} time(s) for {len(symbols)} symbol(s); "
                         "give one file per symbol, in the same order")
    start = parse_when(req.start, "--from") if req.start else None
    end = parse_when(req.end, "--to", end=True) if req.end else None
    if start is not None and end is not None and start > end:
        raise UsageError(f"--from {req.start} is after --to {req.end}")
    out = []
    for i, symbol in enumerate(symbols):
        if req.data:
            step = interval_ms(req.interval) if req.interval else None
            series = load_csv(req.data[i], symbol, step)
        else:
            series = bundled_series(symbol, interval)
        out.append(select(series, start, end))
    if len({s.step_ms for s in out}) > 1:
        found = ", ".join(f"{s.symbol} {s.interval}" for s in out)
        raise UsageError(f"all symbols need the same bar interval ({found})")
    return out


def prepare(req: Request) -> Prepared:
    """Check every input and build the symbol jobs; UsageError says what is wrong."""
    try:
        symbols = normalize_symbols(req.symbols)
        configuration = configure(
            {"interval": req.interval, "fee_rate": req.fee_rate,
             "slippage_bps": req.slippage_bps, "strategies": req.strategies,
             "stake": req.stake, "order_type": req.order_type}, req.config)
        settings = configuration.fleet_settings()
        fee = parse_decimal(settings.fee_rate, "--fee-rate")
        slippage = parse_decimal(settings.slippage_bps, "--slippage-bps")
        capital = parse_decimal(req.capital, "--capital", positive=True) if req.capital else None
        series = _series(req, symbols, settings.interval)
        jobs, capitals = [], []
        for s in series:
            plan = configuration.plan(s.symbol)
            for spec in plan.strategies:
                create(spec.name, spec.params)  # fail here, with the registry's message
            stake = parse_decimal(plan.stake, f"stake of {s.symbol}", positive=True)
            if plan.order_type not in ORDER_TYPES:
                raise UsageError(f"order type of {s.symbol} must be {' or '.join(ORDER_TYPES)}, "
                                 f"not {plan.order_type!r}")
            rules = bundled_rules().get(s.symbol) or synthetic_rules(
                s.symbol, float(s.bars["close"][0]))
            check_stake(s.symbol, stake, rules, price_decimal(float(s.bars["close"][0])))
            worker = WorkerConfig(symbol=s.symbol, strategies=plan.strategies,
                                  stake=fmt(stake), order_type=plan.order_type)
            jobs.append(SymbolJob(worker, rules, s.bars, s.step_ms, fee, slippage))
            capitals.append(float(capital if capital is not None else stake))
    except (ConfigError, DataError, SettingsError, StrategyError) as exc:
        raise UsageError(str(exc)) from None
    parameters = {
        "symbols": symbols,
        "interval": series[0].interval,
        "from": iso(parse_when(req.start, "--from")) if req.start else None,
        "to": iso(parse_when(req.end, "--to", end=True)) if req.end else None,
        "config": str(req.config) if req.config else None,
        "fee_rate": fmt(fee),
        "slippage_bps": fmt(slippage),
        "capital": {s.symbol: c for s, c in zip(series, capitals, strict=True)},
    }
    return Prepared(jobs, [s.source for s in series], capitals, parameters)


def _probes(req: Request, prep: Prepared) -> list[tuple[int, Probe]]:
    if not req.check_lookahead:
        return []
    return [(i, probe) for i, job in enumerate(prep.jobs) for probe in probes(job, req.fractions)]


def planned_bars(req: Request, prep: Prepared) -> int:
    """Bars the run will process in all, look-ahead probes included (for a progress bar)."""
    return sum(len(j.bars) for j in prep.jobs) + sum(len(p.job.bars) for _, p in _probes(
        req, prep))


def run_backtest(req: Request, on_progress: Callable[[int], None] | None = None,
                 prepared: Prepared | None = None) -> Result:
    prep = prepared or prepare(req)
    jobs = list(prep.jobs)
    checks = _probes(req, prep)
    runs = run_jobs(jobs + [probe.job for _, probe in checks], isolate=req.isolate,
                    on_progress=on_progress)
    full = runs[: len(jobs)]
    leaks: list[Leak] | None = None
    if req.check_lookahead:
        leaks = []
        for (i, probe), done in zip(checks, runs[len(jobs):], strict=True):
            leak = compare(full[i].run, probe, done.run)
            if leak is not None and all(x.symbol != leak.symbol for x in leaks):
                leaks.append(leak)  # the first problem of each symbol
    outcomes = []
    for job, done, source, capital in zip(jobs, full, prep.sources, prep.capitals, strict=True):
        curve = curve_of(done.run, job.bars, capital)
        outcomes.append(SymbolOutcome(job, source, done.run, curve, done.trips, done.trades,
                                      metrics_of(curve, done.trips, job.step_ms,
                                                 float(done.fees))))
    combined_curve = combine([o.curve for o in outcomes])
    # one symbol: the same curve, trips and fees, so the same metrics
    combined = outcomes[0].metrics if len(outcomes) == 1 else metrics_of(
        combined_curve, [t for o in outcomes for t in o.trips], jobs[0].step_ms,
        sum(o.metrics.fees for o in outcomes))
    report = build_report(prep.parameters, outcomes, combined, leaks)
    return Result(outcomes, combined_curve, combined, leaks, report, _title(prep, outcomes))


def _title(prep: Prepared, outcomes: list[SymbolOutcome]) -> str:
    labels = {strategy_label(job.config.strategies) for job in prep.jobs}
    what = labels.pop() if len(labels) == 1 else "per-symbol strategies"
    first = min(int(o.curve.times[0]) for o in outcomes)
    last = max(int(o.curve.times[-1]) for o in outcomes)
    return (f"multibot backtest · {what} · {prep.parameters['interval']} · "
            f"{iso(first)} … {iso(last)}")


def write_outputs(result: Result, out_dir: Path) -> tuple[Path, Path]:
    """Write report.json and equity.png into ``out_dir`` (created); OSError if impossible."""
    from multibot.backtest.plot import write_png
    from multibot.backtest.report import write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / "report.json", out_dir / "equity.png"
    write_json(json_path, result.report)
    curves = {o.run.symbol: o.curve for o in result.outcomes}
    write_png(png_path, result.title, curves, result.combined_curve, result.combined)
    return json_path, png_path
