"""Human-readable status: one row per symbol."""

from __future__ import annotations

import time

from multibot.wire.protocol import Event, ExchangeStatus, StatusReport, WorkerStatus

_COLUMNS = ("SYMBOL", "PID", "STATE", "UPTIME", "RST", "HB", "BAR (UTC)", "PRICE", "POSITION",
            "AVG ENTRY", "REALIZED", "UNREAL", "OPEN", "TRADES", "CPU%", "RSS", "LAST ERROR")


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


def _cut(text: str, width: int = 60) -> str:
    return text[:width] + "…" if len(text) > width else text


def _row(w: WorkerStatus) -> tuple[str, ...]:
    return (
        w.symbol, str(w.pid or "-"), w.state, _duration(w.uptime_s), str(w.restarts),
        f"{w.heartbeat_age_s:.1f}s" if w.heartbeat_age_s is not None else "-",
        _bar_time(w.last_bar_time), _num(w.last_price), _num(w.position),
        _num(w.avg_entry), f"{w.realized_pnl:+.2f}", f"{w.unrealized_pnl:+.2f}",
        str(w.open_orders), str(w.trades),
        f"{w.cpu_percent:.1f}" if w.cpu_percent is not None else "-",
        f"{w.rss_bytes / 2**20:.0f}M" if w.rss_bytes else "-",
        _cut(f"HALTED ({w.halted}) " * bool(w.halted) + w.last_error) or "-",
    )


def _exchange_line(x: ExchangeStatus) -> str:
    line = (f"exchange {x.endpoint} ({x.network}, {'orders' if x.trading else 'prices only'})"
            f" · weight {x.used_weight_1m}/{x.weight_limit} per min · streams "
            f"{x.streams} on {x.stream_connections} connection(s), {x.stream_reconnects} "
            f"reconnect(s), {x.gap_filled_bars} bar(s) gap-filled")
    if x.rate_limited_s:
        line += f" · RATE LIMITED for {x.rate_limited_s:.0f}s"
    if x.last_error:
        line += f" · last error: {x.last_error}"
    return line


def status_table(report: StatusReport) -> str:
    o = report.orchestrator
    feed = f"{o.feed} {o.interval} @ {o.speed:g} bars/s" + (" (ended)" if o.feed_ended else "")
    if o.feed == "binance":
        feed = f"binance {o.interval} (live)"
    header = (f"orchestrator pid {o.pid} · up {_duration(o.uptime_s)} · mode {o.mode} · "
              f"feed {feed} · at {_bar_time(o.feed_time)} · home {o.home}")
    if o.exchange is not None:
        header += "\n" + _exchange_line(o.exchange)
    rows = [_COLUMNS, *(_row(w) for w in report.workers)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in rows]
    total = sum(w.realized_pnl + w.unrealized_pnl for w in report.workers)
    footer = f"{len(report.workers)} symbol(s) · total PnL {total:+.2f} (quote)"
    if not report.workers:
        footer = "no symbols yet: `multibot up SYMBOL`"
    if o.journal_error:
        footer += f"\nTRADING HALTED: journal unavailable: {o.journal_error}"
    duplicates = [f"{w.symbol} {w.duplicate_bars}" for w in report.workers if w.duplicate_bars]
    if duplicates:  # must stay 0: a bar acted on twice would show here
        footer += f"\nlive bars seen twice over the fleet's life: {', '.join(duplicates)}"
    return "\n".join([header, "", *lines, "", footer])


def live_frame(report: StatusReport, events: list[tuple[int, Event]]) -> str:
    """The foreground fleet's live view: the status table and the latest events."""
    lines = [status_table(report), "", "latest events:"]
    for ts_ns, event in events:
        when = time.strftime("%H:%M:%S", time.localtime(ts_ns / 1e9))
        lines.append(f"  {when} {event.symbol or 'fleet':<9} {event.kind:<6} {event.detail}")
    lines += ["", "Ctrl-C stops the fleet (orderly: orders cancelled, journal kept)"]
    return "\n".join(lines)
