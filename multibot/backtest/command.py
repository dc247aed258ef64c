"""`multibot backtest`: the typer command. ``register(app)`` adds it to a Typer app.

Only typer, the standard library and the settings' declaration are imported at module level;
numpy, matplotlib and the engine load when the command runs, so `multibot --help` stays fast.
"""

# No `from __future__ import annotations`: typer reads the commands' annotations on each
# run, and as strings they would be compiled and evaluated each time (see multibot/cli/app.py).

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from multibot.errors import ErrorCode, MultibotError
from multibot.exits import reported
from multibot.wire.settings import DEFAULT_PLAN, DEFAULTS

__all__ = ["register"]


def backtest(
    symbols: Annotated[list[str], typer.Argument(
        help="Symbols, e.g. BTCUSDT ETHUSDT (with --data: one per file)", show_default=False)],
    strategy: Annotated[list[str] | None, typer.Option(
        "--strategy", "-s", help="NAME[:k=v,...], repeatable (default "
        f"{', '.join(spec.name for spec in DEFAULT_PLAN.strategies)}, or the config's)")] = None,
    config: Annotated[Path | None, typer.Option(
        help="TOML config: per-symbol strategies, stake, order type")] = None,
    start: Annotated[str | None, typer.Option(
        "--from", help="first bar: ISO date or datetime, UTC (e.g. 2025-01-05)")] = None,
    end: Annotated[str | None, typer.Option(
        "--to", help="last bar: ISO date (whole day included) or datetime, UTC")] = None,
    data: Annotated[list[Path] | None, typer.Option(
        help="kline CSV (.csv/.gz/.zip): Binance's 12 columns or the bundled format; "
             "repeatable, one per symbol")] = None,
    interval: Annotated[str | None, typer.Option(
        help=f"bundled bar interval (default {DEFAULTS.interval}); with --data, checked against "
             "the file")] = None,
    stake: Annotated[str | None, typer.Option(
        help=f"quote amount per entry (default {DEFAULT_PLAN.stake}, or the config's)")] = None,
    capital: Annotated[str | None, typer.Option(
        help="starting equity per symbol for the metrics (default: the stake)")] = None,
    fee_rate: Annotated[str | None, typer.Option(  # "\\[": a bracket, not rich markup
        help=f"fee per fill, fraction of notional \\[default: {DEFAULTS.fee_rate}]")] = None,
    slippage_bps: Annotated[str | None, typer.Option(
        help=f"MARKET order slippage, bps \\[default: {DEFAULTS.slippage_bps}]")] = None,
    order_type: Annotated[str | None, typer.Option(
        help="MARKET (default) | LIMIT")] = None,
    out: Annotated[Path | None, typer.Option(
        help="output directory (default ./backtest-<UTC time>)", show_default=False)] = None,
    check_lookahead: Annotated[bool, typer.Option(
        "--check-lookahead", help="also run 50%/75% prefixes (no future, mirrored future): "
        "every decision must match the full run's")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Replay history through the live strategy code and the paper fill model."""
    from multibot.backtest.pool import BacktestFailed, start_forkserver

    start_forkserver()  # the children's forkserver: its imports overlap the loading of the data
    from multibot.backtest.progress import ProgressBar
    from multibot.backtest.report import table
    from multibot.backtest.session import (
        Request,
        planned_bars,
        prepare,
        run_backtest,
        write_outputs,
    )
    from worker.runner import MAX_STRATEGY_ERRORS

    request = Request(
        symbols=symbols, strategies=strategy or [], config=config, start=start, end=end,
        data=data or [], interval=interval, stake=stake, capital=capital, fee_rate=fee_rate,
        slippage_bps=slippage_bps, order_type=order_type, check_lookahead=check_lookahead)
    prepared = prepare(request)
    bar = ProgressBar(planned_bars(request, prepared), enabled=not quiet)
    try:
        result = run_backtest(request, bar.update, prepared)
    except BacktestFailed as exc:
        raise BacktestFailed(f"backtest failed: {exc}") from None
    finally:
        bar.close()
    typer.echo(table(result.outcomes, result.combined))
    for outcome in result.outcomes:
        run = outcome.run
        if run.strategy_errors or run.rejected_orders:
            typer.echo(f"warning: {run.symbol}: {run.strategy_errors} strategy error(s), "
                       f"{run.rejected_orders} rejected order(s); last: {run.last_error}",
                       err=True)
    directory = out or Path(time.strftime("backtest-%Y%m%d-%H%M%S", time.gmtime()))
    try:
        json_path, png_path = write_outputs(result, directory)
    except OSError as exc:
        raise MultibotError(f"cannot write the report to {directory}: {exc.strerror or exc}",
                            ErrorCode.NOT_AVAILABLE) from None
    typer.echo(f"report  {json_path}\nchart   {png_path}")
    disabled = [f"{o.run.symbol} ({', '.join(o.run.disabled)})" for o in result.outcomes
                if o.run.disabled]
    if disabled:  # its results assume the strategy held FLAT from then on: not a real run
        raise BacktestFailed(
            f"strategy disabled after {MAX_STRATEGY_ERRORS} errors: {'; '.join(disabled)}; "
            "the results above count it as FLAT from then on (see the warnings above and "
            "report.json's last_error)")
    if result.leaks is not None:
        if result.leaks:
            for leak in result.leaks:
                typer.echo(f"look-ahead: {leak.describe()}", err=True)
            raise BacktestFailed("look-ahead check FAILED")
        shares = "/".join(f"{f:.0%}" for f in request.fractions)
        typer.echo(f"look-ahead check passed: runs cut after {shares} of the bars (with no "
                   "future, and with a mirrored one) made exactly the full run's decisions")
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    """Add the ``backtest`` command to ``app``."""
    app.command("backtest")(reported(backtest))
