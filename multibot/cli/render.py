"""Human-readable status: one row per symbol."""

from __future__ import annotations

import os
import sys
import time
from decimal import Decimal

from multibot.wire.protocol import Event, ExchangeStatus, StatusReport, WorkerStatus

_COLUMNS = ("SYMBOL", "PID", "STATE", "STRATEGY", "UPTIME", "RST", "HB", "BAR (UTC)", "PRICE",
            "POSITION", "AVG ENTRY", "REALIZED", "UNREAL", "OPEN", "TRADES", "CPU%", "RSS",
            "LAST ERROR")
# Dropped first when the table is wider than the terminal (first in this list goes first);
# SYMBOL, STATE, POSITION, REALIZED and UNREAL always stay.
_DROP_ORDER = ("PID", "CPU%", "RSS", "HB", "UPTIME", "TRADES", "RST", "OPEN", "BAR (UTC)",
               "STRATEGY", "AVG ENTRY", "PRICE", "LAST ERROR")
_MIN_ERROR_WIDTH = 16  # LAST ERROR is cut to the width left, down to this, before it is dropped


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _bar_time(ms: int | None) -> str:
    return time.strftime("%m-%d %H:%M", time.gmtime(ms / 1000)) if ms is not None else "-"


def _num(value: float | None, digits: int = 8) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") or "0"


def _on_tick(value: float, tick: str) -> str:
    """``value`` rounded to the nearest multiple of the price tick (as is, without one)."""
    try:
        step = Decimal(tick)
    except ArithmeticError:
        step = Decimal(0)
    if not value or step <= 0 or not step.is_finite():
        return _num(value)
    rounded = (Decimal(repr(value)) / step).to_integral_value() * step
    return format(rounded.quantize(step.normalize()), "f")


def _cut(text: str, width: int = 60) -> str:
    return text[:width] + "…" if len(text) > width else text


def _ago(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s ago"
    if s < 3600:
        return f"{s // 60}m ago"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m ago"
    return f"{s // 86400}d ago"


def _error(w: WorkerStatus) -> str:
    """The last error after its age (first, so that cutting the text keeps it), so an old
    error on a recovered symbol reads as old."""
    if not w.last_error or w.last_error_age_s is None:
        return w.last_error
    return f"{_ago(w.last_error_age_s)}: {w.last_error}"


def _row(w: WorkerStatus) -> tuple[str, ...]:
    return (
        w.symbol, str(w.pid or "-"), w.state, ",".join(w.strategies) or "-",
        _duration(w.uptime_s), str(w.restarts),
        f"{w.heartbeat_age_s:.1f}s" if w.heartbeat_age_s is not None else "-",
        _bar_time(w.last_bar_time), _num(w.last_price), _num(w.position),
        _on_tick(w.avg_entry, w.tick_size), f"{w.realized_pnl:+.2f}", f"{w.unrealized_pnl:+.2f}",
        str(w.open_orders), str(w.trades),
        f"{w.cpu_percent:.1f}" if w.cpu_percent is not None else "-",
        f"{w.rss_bytes / 2**20:.0f}M" if w.rss_bytes else "-",
        _cut(f"HALTED ({w.halted}) " * bool(w.halted) + _error(w)) or "-",
    )


def symbols_listing() -> str:
    """The bundled symbols per interval, grouped by the dates their bars cover (UTC)."""
    from multibot.market.bundled import bar_range, catalog

    lines = []
    for interval, names in sorted(catalog().items()):
        groups: dict[tuple[int, int], list[str]] = {}
        for name in names:
            groups.setdefault(bar_range(name, interval), []).append(name)
        for n, ((first, last), members) in enumerate(sorted(groups.items())):
            span = f"{_day(first)} .. {_day(last)}"
            lines.append(f"{interval if n == 0 else '':<4} {span}  {' '.join(members)}")
    lines.append("`up` replays from the 1001st bar (those before are warm-up history) to the "
                 "last; `backtest --from/--to` takes any dates in the range")
    return "\n".join(lines)


def _day(ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))


def _exchange_line(x: ExchangeStatus) -> str:
    line = (f"exchange {x.endpoint} ({x.network}, {'orders' if x.trading else 'prices only'})"
            f" · weight {x.used_weight_1m}/{x.weight_limit} per min · streams "
            f"{x.streams} on {x.stream_connections} connection(s), {x.stream_reconnects} "
            f"reconnect(s), {x.gap_filled_bars} bar(s) gap-filled")
    if x.user_stream:
        line += f" · user stream {x.user_stream}"
    if x.rate_limited_s:
        line += f" · RATE LIMITED for {x.rate_limited_s:.0f}s"
    if x.last_error:
        line += f" · last error: {x.last_error}"
    return line


def terminal_width() -> int | None:
    """COLUMNS if set, else the width of the terminal stdout is; None (no limit) when stdout
    is no terminal (a pipe or a file: whoever reads it there gets every column)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError, AttributeError):  # not a terminal, closed, or replaced
        return None


def _table(rows: list[tuple[str, ...]], width: int | None) -> list[str]:
    """Rows laid out in columns; with a width, columns dropped by priority until it fits."""
    keep = list(range(len(_COLUMNS)))
    error = _COLUMNS.index("LAST ERROR")

    def widths() -> dict[int, int]:
        return {i: max(len(r[i]) for r in rows) for i in keep}

    def total(w: dict[int, int]) -> int:
        return sum(w.values()) + 2 * (len(w) - 1)

    for name in _DROP_ORDER:
        if width is None or total(widths()) <= width:
            break
        w = widths()
        cut_first = _DROP_ORDER.index(name) >= _DROP_ORDER.index("RST")
        if cut_first and error in keep and name != "LAST ERROR" and (
                total(w) - w[error] + _MIN_ERROR_WIDTH <= width):
            break  # fits once the error text is cut
        keep.remove(_COLUMNS.index(name))
    w = widths()
    if width is not None and error in keep and total(w) > width:
        w[error] = max(len(_COLUMNS[error]), width - (total(w) - w[error]))
    lines = []
    for r in rows:
        cells = [_cut(r[i], w[i] - 1) if len(r[i]) > w[i] else r[i].ljust(w[i]) for i in keep]
        lines.append("  ".join(cells).rstrip())
    return lines


def _wrap(line: str, width: int) -> str:
    """A " · "-separated line broken into lines of at most ``width`` where it can be."""
    out: list[str] = []
    for part in line.split(" · "):
        if len(part) > width:  # e.g. a deep home path: keep its end, which names it
            part = "…" + part[len(part) - width + 1:]
        if out and len(out[-1]) + 3 + len(part) <= width:
            out[-1] += " · " + part
        else:
            out.append(part)
    return "\n".join(out)


def _summary(report: StatusReport) -> str:
    total = sum(w.realized_pnl + w.unrealized_pnl for w in report.workers)
    line = f"{len(report.workers)} symbol(s) · total PnL {total:+.2f} (quote)"
    failed = [w.symbol for w in report.workers if w.state == "FAILED"]
    if failed:
        line += f" · FAILED: {', '.join(failed)}"
    return line


def status_table(report: StatusReport, width: int | None = None) -> str:
    """The status report for people; with a width (the terminal's), the table fits it."""
    o = report.orchestrator
    feed = f"{o.feed} {o.interval} @ {o.speed:g} bars/s" + (" (ended)" if o.feed_ended else "")
    if o.feed == "binance":
        feed = f"binance {o.interval} (live)"
    header = (f"orchestrator pid {o.pid} · up {_duration(o.uptime_s)} · mode {o.mode} · "
              f"feed {feed} · at {_bar_time(o.feed_time)} · home {o.home}")
    if o.exchange is not None:
        header += "\n" + _exchange_line(o.exchange)
    if width is not None:
        header = "\n".join(_wrap(line, width) for line in header.split("\n"))
    lines = _table([_COLUMNS, *(_row(w) for w in report.workers)], width)
    footer = _summary(report)
    if not report.workers:
        footer = "no symbols yet: `multibot up SYMBOL`"
    if width is not None:
        footer = _wrap(footer, width)
    if o.journal_error:
        footer += f"\nTRADING HALTED: journal unavailable: {o.journal_error}"
    duplicates = [f"{w.symbol} {w.duplicate_bars}" for w in report.workers if w.duplicate_bars]
    if duplicates:  # must stay 0: a bar acted on twice would show here
        footer += f"\nlive bars seen twice over the fleet's life: {', '.join(duplicates)}"
    return "\n".join([header, "", *lines, "", footer])


def live_frame(report: StatusReport, events: list[tuple[int, Event]]) -> str:
    """The foreground fleet's live view: the status table and the latest events, fitted to
    the terminal's width."""
    width = terminal_width()
    lines = [status_table(report, width), "", "latest events:"]
    for ts_ns, event in events:
        when = time.strftime("%H:%M:%S", time.localtime(ts_ns / 1e9))
        line = f"  {when} {event.symbol or 'fleet':<9} {event.kind:<6} {event.detail}"
        lines.append(line if width is None else _cut(line, width - 1))
    lines += ["", "Ctrl-C stops the fleet (orderly: orders cancelled, journal kept)"]
    return "\n".join(lines)
