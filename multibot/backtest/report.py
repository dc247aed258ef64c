"""The backtest's outputs in text: the JSON report (stable, deterministic) and the table.

The report holds no wall-clock time and nothing about the machine, so the same input always
gives a byte-identical file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from multibot.backtest.data import iso
from multibot.backtest.engine import SymbolJob, SymbolRun
from multibot.backtest.lookahead import Leak
from multibot.backtest.metrics import Curve, Metrics, RoundTrip
from multibot.market.rules import fmt
from multibot.wire.protocol import StrategySpec

__all__ = ["REPORT_VERSION", "SymbolOutcome", "build_report", "strategy_label", "table",
           "trip_json", "write_json"]

REPORT_VERSION = 1
_DIGITS = 6
_PRICE_QUANTUM = Decimal("1e-8")  # trip prices are averages: shown to 8 decimals


@dataclass(frozen=True)
class SymbolOutcome:
    """One symbol's job, what happened, and what it amounts to."""

    job: SymbolJob
    source: str
    run: SymbolRun
    curve: Curve
    trips: list[RoundTrip]
    trades: list[dict[str, Any]]  # trip_json of each trip
    metrics: Metrics


def strategy_label(specs: list[StrategySpec]) -> str:
    """``sma_cross(fast=5,slow=20) + ema_cross``"""
    parts = []
    for spec in specs:
        params = ",".join(f"{k}={v}" for k, v in spec.params.items())
        parts.append(f"{spec.name}({params})" if params else spec.name)
    return " + ".join(parts)


def _num(value: float | None) -> float | None:
    return None if value is None else round(value, _DIGITS)


def metrics_json(m: Metrics) -> dict[str, Any]:
    return {
        "bars": m.bars,
        "capital": _num(m.capital),
        "final_equity": _num(m.final_equity),
        "return_pct": _num(m.return_pct),
        "max_drawdown_pct": _num(m.max_drawdown_pct),
        "trades": m.trades,
        "wins": m.wins,
        "win_rate_pct": _num(m.win_rate_pct),
        "sharpe": _num(m.sharpe),
        "exposure_pct": _num(m.exposure_pct),
        "buy_hold_return_pct": _num(m.buy_hold_return_pct),
        "fees": _num(m.fees),
    }


def trip_json(trip: RoundTrip, times: Any) -> dict[str, Any]:
    """A round trip in the report; ``times``: the bars' open times (int64 array)."""
    return {
        "entry_time": iso(times.item(trip.entry_bar)),  # item(): a Python int, at once
        "exit_time": iso(times.item(trip.exit_bar)),
        "bars": trip.exit_bar - trip.entry_bar,
        "qty": fmt(trip.qty),
        "entry_price": fmt(trip.entry_price.quantize(_PRICE_QUANTUM)),
        "exit_price": fmt(trip.exit_price.quantize(_PRICE_QUANTUM)),
        "fees": fmt(trip.fees),
        "pnl": fmt(trip.pnl),
        "return_pct": _num(trip.return_pct),
    }


def _symbol_json(out: SymbolOutcome) -> dict[str, Any]:
    job, run, times = out.job, out.run, out.curve.times
    held = run.fills[-1].position if run.fills else "0"
    return {
        "data": out.source,
        "first_bar": iso(int(times[0])),
        "last_bar": iso(int(times[-1])),
        "strategies": [{"name": s.name, "params": dict(s.params)} for s in job.config.strategies],
        "stake": job.config.stake,
        "order_type": job.config.order_type,
        "metrics": metrics_json(out.metrics),
        "orders": {"placed": sum(d.action == "PLACE" for d in run.decisions),
                   "cancelled": sum(d.action == "CANCEL" for d in run.decisions),
                   "rejected": run.rejected_orders, "fills": len(run.fills)},
        "position_at_end": held,
        "strategy_errors": run.strategy_errors,
        "last_error": run.last_error,
        "warnings": run.warnings,
        "trades": out.trades,
    }


def build_report(parameters: dict[str, Any], outcomes: list[SymbolOutcome], combined: Metrics,
                 leaks: list[Leak] | None) -> dict[str, Any]:
    """``leaks`` None = the look-ahead check did not run; [] = it ran and passed."""
    return {
        "report_version": REPORT_VERSION,
        "parameters": parameters,
        "combined": metrics_json(combined),
        "symbols": {out.run.symbol: _symbol_json(out) for out in outcomes},
        "lookahead_check": None if leaks is None else {
            "passed": not leaks, "problems": [leak.describe() for leak in leaks]},
    }


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --- the table -------------------------------------------------------------------------------

_HEADER = ("symbol", "bars", "return %", "max DD %", "trades", "win %", "Sharpe", "exposure %",
           "B&H %")


def _pct(value: float | None, sign: bool = True) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}" if sign else f"{value:.2f}"


def _row(name: str, m: Metrics) -> tuple[str, ...]:
    return (name, f"{m.bars:,}", _pct(m.return_pct), _pct(m.max_drawdown_pct, sign=False),
            str(m.trades), _pct(m.win_rate_pct, sign=False),
            "-" if m.sharpe is None else f"{m.sharpe:.2f}", _pct(m.exposure_pct, sign=False),
            _pct(m.buy_hold_return_pct))


def table(outcomes: list[SymbolOutcome], combined: Metrics) -> str:
    rows = [_row(out.run.symbol, out.metrics) for out in outcomes]
    if len(outcomes) > 1:
        rows.append(_row("combined", combined))
    widths = [max(len(r[i]) for r in [_HEADER, *rows]) for i in range(len(_HEADER))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    lines = [line(_HEADER), *(line(r) for r in rows)]
    if len(outcomes) > 1:
        lines.insert(-1, "-" * len(lines[0]))
    return "\n".join(lines)
