"""`multibot`: start, inspect and stop a fleet of per-symbol trading processes."""

# No `from __future__ import annotations`: typer reads every command's annotations on each
# run, and as strings they would be compiled and evaluated each time.

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from multibot.backtest.command import register as register_backtest
from multibot.cli.keys import register as register_keys
from multibot.cli.logs import register as register_logs
from multibot.client import FleetNotRunning, request, start_daemon
from multibot.errors import EXIT_FAILED, ErrorCode, MultibotError
from multibot.exits import reported
from multibot.wire.home import Home
from multibot.wire.protocol import (
    Down,
    Kill,
    KillResult,
    Ping,
    Pong,
    Status,
    StatusReport,
    SymbolResult,
    Up,
    UpResult,
)
from multibot.wire.settings import (
    DEFAULT_PLAN,
    DEFAULTS,
    Feed,
    FleetSettings,
    SettingsError,
    normalize_symbols,
)

if TYPE_CHECKING:
    from multibot.remote import RemoteTarget

app = typer.Typer(
    help="Trade many Binance spot symbols at once, one supervised OS process per symbol.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text is plain: "[fleet]" is a word, not a style tag
)

register_keys(app)
_connect: tuple[str, str | None, str | None] | None = None  # --connect, --key, --server-key

HomeOption = Annotated[
    Path | None,
    typer.Option("--home", help="Fleet state directory [env MULTIBOT_HOME; default "
                 "~/.local/state/multibot]", show_default=False),
]
_DEFAULT_STRATEGIES = ", ".join(spec.name for spec in DEFAULT_PLAN.strategies)
SymbolsArg = Annotated[list[str], typer.Argument(help="Symbols, e.g. BTCUSDT ETHUSDT",
                                                 show_default=False)]


@app.callback()
def _global_options(
    connect: Annotated[str | None, typer.Option(
        envvar="MULTIBOT_CONNECT", help="command a remote fleet at tcp://HOST:PORT (CURVE "
        "encrypted and key-authenticated; see `multibot keys`)", show_default=False)] = None,
    key: Annotated[str | None, typer.Option(
        envvar="MULTIBOT_KEY", help="with --connect: your client key (a name from `multibot "
        "keys generate` or a .key_secret file)", show_default=False)] = None,
    server_key: Annotated[str | None, typer.Option(
        envvar="MULTIBOT_SERVER_KEY", help="with --connect: the fleet's public key (`multibot "
        "keys server` on its machine) or a file holding it", show_default=False)] = None,
) -> None:
    global _connect
    _connect = (connect, key, server_key) if connect else None


def _remote_target(home: Home) -> "RemoteTarget":
    from multibot.remote import RemoteTarget

    assert _connect is not None
    connect, key, server_key = _connect
    if not key or not server_key:
        raise SettingsError("--connect needs --key and --server-key")
    return RemoteTarget.resolve(home, connect, key, server_key)


def _remote_pong(home: Home) -> Pong:
    reply = _request(home, Ping(), timeout=5.0)
    assert isinstance(reply, Pong)
    return reply


def _request(home: Home, message: object, timeout: float = 10.0) -> object:
    try:
        if _connect is not None:
            return _remote_target(home).request(message, timeout)  # type: ignore[arg-type]
        return request(home, message, timeout)  # type: ignore[arg-type]
    except FleetNotRunning as exc:
        raise FleetNotRunning(f"{exc}; start one with `multibot up SYMBOL`") from None


def _print_results(results: list[SymbolResult]) -> bool:
    ok = True
    for r in results:
        line = f"{r.symbol:<12} {r.state:<9} pid {r.pid or '-'}"
        if r.error:
            line += f"  ({r.error})"
        typer.echo(line)
        ok = ok and r.state in ("RUNNING", "STOPPED")
    return ok


@app.command()
@reported
def up(
    symbols: Annotated[list[str] | None, typer.Argument(
        help="Symbols, e.g. BTCUSDT ETHUSDT (default: the config's [symbol.X] sections)",
        show_default=False)] = None,
    home: HomeOption = None,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="TOML file: [fleet], [defaults], [symbol.X] sections")] = None,
    mode: Annotated[str | None, typer.Option(
        help="paper (default: simulated fills) | testnet | live (real orders on Binance)")
    ] = None,
    feed: Annotated[str | None, typer.Option(
        help="replay (paper default: bundled real klines) | synthetic (any symbol) | binance "
             "(live klines; the default with testnet/live)")] = None,
    interval: Annotated[str | None, typer.Option(
        help=f"bar interval (default {DEFAULTS.interval})")] = None,
    speed: Annotated[float | None, typer.Option(
        help=f"bars per second (default {DEFAULTS.speed:g})")] = None,
    strategy: Annotated[list[str] | None, typer.Option(
        "--strategy", "-s", help=f"NAME[:k=v,...], repeatable (default {_DEFAULT_STRATEGIES}); "
        "see `multibot strategies`")] = None,
    stake: Annotated[str | None, typer.Option(
        help=f"quote amount per entry (default {DEFAULT_PLAN.stake})")] = None,
    order_type: Annotated[str | None, typer.Option(help="MARKET (default) | LIMIT")] = None,
    seed: Annotated[int | None, typer.Option(
        help=f"synthetic feed seed (default {DEFAULTS.seed})")] = None,
    foreground: Annotated[bool, typer.Option(
        help="run the orchestrator in this terminal; Ctrl-C stops the fleet")] = False,
    live: Annotated[bool | None, typer.Option(
        help="with --foreground: redraw status and events every second (default: on a "
             "terminal)")] = None,
    wait: Annotated[float, typer.Option(help="seconds to wait for RUNNING")] = 30.0,
    max_restarts: Annotated[int | None, typer.Option(
        help="a symbol whose worker exits more often than this within --restart-window "
             f"is marked FAILED (default {DEFAULTS.max_restarts})")] = None,
    restart_window: Annotated[float | None, typer.Option(
        help=f"seconds (default {DEFAULTS.restart_window_s:g})")] = None,
    control_tcp: Annotated[str | None, typer.Option(
        help="also accept remote control on tcp://HOST:PORT: CURVE only, keys authorized "
             "with `multibot keys`")] = None,
    rest_url: Annotated[str | None, typer.Option(
        help="Binance REST endpoint, e.g. http://127.0.0.1:9000/api [env "
             "MULTIBOT_BINANCE_REST_URL; default: the network's own]", show_default=False)
    ] = None,
    stream_url: Annotated[str | None, typer.Option(
        help="Binance stream endpoint [env MULTIBOT_BINANCE_STREAM_URL]", show_default=False)
    ] = None,
    key_file: Annotated[str | None, typer.Option(
        help="TOML file (mode 0600) with network, api_key, and api_secret or private_key "
             "(an Ed25519/RSA PEM or its path; private_key_pass if encrypted) [default: env "
             "MULTIBOT_BINANCE[_TESTNET]_API_KEY with _API_SECRET or _PRIVATE_KEY]",
        show_default=False)] = None,
    confirm_live: Annotated[bool, typer.Option(
        "--confirm-live", help="required with --mode live: real orders, real money")] = False,
) -> None:
    """Start symbols (starting the fleet if needed, else hot-adding them)."""
    from multibot.client import ping
    from multibot.config import configure
    from multibot.launch import prepare_up
    from multibot.wire.settings import check_seconds

    check_seconds(wait, "--wait")
    fleet_home = Home.at(home)
    given = {"mode": mode, "feed": feed, "interval": interval, "speed": speed, "seed": seed,
             "max_restarts": max_restarts, "restart_window": restart_window,
             "control_tcp": control_tcp, "rest_url": rest_url, "stream_url": stream_url,
             "key_file": key_file, "confirm_live": confirm_live or None,
             "strategies": strategy, "stake": stake, "order_type": order_type}
    settings, message = prepare_up(symbols or [], configure(given, config), wait)
    if _connect is not None and foreground:
        raise SettingsError("--foreground runs a fleet on this machine; drop --connect")
    running = ping(fleet_home) if _connect is None else _remote_pong(fleet_home)  # hot-add
    if running is None:
        _validate_symbols(settings, message.symbols)
        if foreground:
            _run_foreground(fleet_home, settings, message,
                            sys.stdout.isatty() if live is None else live)
            return
        daemon = start_daemon(fleet_home, settings)
        started = daemon.ours
        if started:
            described = _describe(settings.mode, settings.feed, settings.interval,
                                  settings.speed)
            typer.echo(f"started orchestrator pid {daemon.pid} ({described}) "
                       f"home {fleet_home.root}")
        else:  # a concurrent command started the fleet first: its settings hold, not ours
            _report_running_fleet(fleet_home)
    elif foreground:
        raise SettingsError(f"a fleet already runs on {fleet_home.root} (pid {running.pid})",
                            ErrorCode.CONFLICT)
    else:
        started = False
    try:
        reply = _request(fleet_home, message, timeout=wait + 15)
    except MultibotError:
        if started:  # we started it for this request only: do not leave it behind
            with contextlib.suppress(MultibotError):
                _request(fleet_home, Down(flatten=False), timeout=60.0)
        raise
    assert isinstance(reply, UpResult)
    if not _print_results(reply.results):
        raise typer.Exit(EXIT_FAILED)


def _describe(mode: str, feed: str, interval: str, speed: float) -> str:
    pace = "live" if feed == Feed.BINANCE else f"@ {speed:g} bars/s"
    return f"{mode}, {feed} {interval} {pace}"


def _report_running_fleet(home: Home) -> None:
    """Say which fleet this `up` goes to when another command started it meanwhile."""
    with contextlib.suppress(MultibotError):
        report = _request(home, Status(), timeout=10.0)
        if isinstance(report, StatusReport):
            fleet = report.orchestrator
            described = _describe(fleet.mode, fleet.feed, fleet.interval, fleet.speed)
            typer.echo(f"orchestrator pid {fleet.pid} ({described}) was started on "
                       f"{home.root} by another command; its settings hold", err=True)


def _validate_symbols(settings: FleetSettings, names: list[str]) -> None:
    from orchestrator.feeds.base import UnknownSymbol
    from orchestrator.feeds.factory import make_feed

    if settings.feed == Feed.BINANCE:
        return  # checked against the exchange's own exchangeInfo by the orchestrator
    try:
        feed = make_feed(settings, None)
    except ValueError as exc:  # the feed has no such interval (its message lists them)
        raise SettingsError(str(exc)) from None
    errors = []
    for name in names:
        try:
            feed.validate(name)
        except UnknownSymbol as exc:
            errors.append(str(exc))
    if errors:
        raise UnknownSymbol("\n".join(errors))


def _run_foreground(home: Home, settings: FleetSettings, message: Up, live: bool) -> None:
    from multibot.cli.render import live_frame
    from orchestrator.daemon import configure_logging, run

    configure_logging(home, console=True, live=live)
    typer.echo(f"orchestrator pid {os.getpid()} in the foreground; Ctrl-C stops the fleet",
               err=True)
    code = run(home, settings, initial=message, live=live_frame if live else None)
    if live:
        typer.echo(f"fleet stopped; journal kept in {home.journal_path}")
    raise typer.Exit(code)


@app.command()
@reported
def status(
    home: HomeOption = None,
    json: Annotated[bool, typer.Option("--json", help="machine-readable (stable schema)")] = False,
    watch: Annotated[bool, typer.Option(help="refresh until Ctrl-C")] = False,
    every: Annotated[float, typer.Option(help="refresh period with --watch")] = 1.0,
    wide: Annotated[bool, typer.Option("--wide", help="every column, however wide")] = False,
) -> None:
    """One row per symbol: process facts and trading facts."""
    import msgspec

    from multibot.cli.render import status_table, terminal_width

    fleet_home = Home.at(home)
    while True:
        report = _request(fleet_home, Status(), timeout=10.0)
        assert isinstance(report, StatusReport)
        if json:
            typer.echo(msgspec.json.format(msgspec.json.encode(report), indent=2).decode())
        else:
            if watch:
                typer.echo("\x1b[H\x1b[2J", nl=False)
            typer.echo(status_table(report, None if wide else terminal_width()))
        if not watch:
            return
        try:
            time.sleep(every)
        except KeyboardInterrupt:
            return


@app.command()
@reported
def kill(
    symbols: SymbolsArg,
    home: HomeOption = None,
    flatten: Annotated[bool, typer.Option(help="also close the position")] = False,
) -> None:
    """Stop symbols gracefully (open orders cancelled); the others keep trading."""
    names = normalize_symbols(symbols)
    reply = _request(Home.at(home), Kill(symbols=names, flatten=flatten), timeout=60.0)
    assert isinstance(reply, KillResult)
    if not _print_results(reply.results):
        raise typer.Exit(EXIT_FAILED)


@app.command()
@reported
def down(
    home: HomeOption = None,
    flatten: Annotated[bool, typer.Option(help="close every position first")] = False,
) -> None:
    """Stop every worker, then the orchestrator; returns when nothing is left."""
    from multibot.client import pid_alive

    fleet_home = Home.at(home)
    pid = fleet_home.read_pid() if _connect is None else None
    _request(fleet_home, Down(flatten=flatten), timeout=120.0)
    if _connect is not None:
        typer.echo(f"remote fleet on {_connect[0]} is stopping")
        return
    deadline = time.monotonic() + 30
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        raise MultibotError(f"orchestrator pid {pid} is still alive", ErrorCode.TIMEOUT)
    typer.echo(f"fleet on {fleet_home.root} stopped")


@app.command()
@reported
def symbols() -> None:
    """Bundled symbols per interval and the UTC dates they cover (--feed synthetic: any)."""
    from multibot.cli.render import symbols_listing

    typer.echo(symbols_listing())


@app.command("strategies")
@reported
def list_strategies() -> None:
    """Built-in strategies with their parameters and defaults."""
    import msgspec

    from strategies.registry import builtins, describe

    for name, cls in builtins().items():
        params = ", ".join(
            f"{p}: {t}" + ("" if d is msgspec.NODEFAULT else f" = {d!r}")
            for p, t, d in describe(cls)
        )
        typer.echo(f"{name:<12} {cls.description}")
        typer.echo(f"{'':<12} {params or '(no parameters)'}")
    typer.echo("\nuse: multibot up BTCUSDT -s NAME[:param=value,...]   (repeatable); your own: "
               "-s path/to/file.py:Class or -s package.module:Class")


register_logs(app, lambda home: _remote_target(home) if _connect is not None else None)
register_backtest(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
