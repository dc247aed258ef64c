"""Historical klines for a backtest: the bundled files or a kline CSV, cut to a date range.

A CSV may be Binance's own kline file (12 columns, no header, as published on
data.binance.vision; open_time in milliseconds, or microseconds in newer files) or the bundled
format (a header, then ``open_time,open,high,low,close,volume`` and optionally more columns).
Plain, ``.gz`` or ``.zip`` (one CSV inside, as Binance ships them).
"""

from __future__ import annotations

import gzip
import io
import zipfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

from multibot.errors import ErrorCode, MultibotError
from multibot.market.bundled import INTERVAL_MS, KLINE_DTYPE, catalog, load_klines
from multibot.market.intervals import BINANCE_INTERVAL_MS
from multibot.market.times import iso

__all__ = ["DataError", "Series", "bundled_series", "interval_label", "iso", "load_csv",
           "parse_when", "select"]

_LABELS = {ms: label for label, ms in BINANCE_INTERVAL_MS.items()} | {
    259_200_000: "3d", 604_800_000: "1w"}
_MS = {label: ms for ms, label in _LABELS.items()} | INTERVAL_MS
_TIME_NAMES = ("open_time", "open time", "timestamp", "time", "date")
_NAMES = ("open", "high", "low", "close", "volume")
_COLUMNS = (6, 11, 12)  # bundled OHLCV, bundled 1d (all but `ignore`), Binance's full kline
_MICROS = 10**14  # open_time above this is in microseconds (ms reach it in the year 5138)
_MILLIS = 10**11  # ... and below this it is not milliseconds either (1973)


class DataError(MultibotError, ValueError):
    """The data cannot be used; the message is meant for a CLI user."""

    CODE = ErrorCode.BAD_CONFIG


@dataclass(frozen=True)
class Series:
    """Bars of one symbol: KLINE_DTYPE rows sorted by open_time, no duplicates."""

    symbol: str
    step_ms: int
    bars: np.ndarray
    source: str  # "bundled" or the file as given

    @property
    def interval(self) -> str:
        return interval_label(self.step_ms)


def interval_label(step_ms: int) -> str:
    return _LABELS.get(step_ms, f"{step_ms}ms")


def interval_ms(label: str) -> int:
    try:
        return _MS[label]
    except KeyError:
        raise DataError(f"unknown interval {label!r}; e.g. {', '.join(INTERVAL_MS)}") from None


# --- sources ---------------------------------------------------------------------------------


def bundled_series(symbol: str, interval: str) -> Series:
    if interval not in catalog():
        raise DataError(f"no bundled data for interval {interval!r}; available: "
                        f"{', '.join(sorted(catalog(), key=interval_ms))}")
    symbols = catalog()[interval]
    if symbol not in symbols:
        elsewhere = sorted(i for i, syms in catalog().items() if symbol in syms)
        hint = f" (bundled for interval {', '.join(elsewhere)})" if elsewhere else ""
        raise DataError(f"unknown symbol {symbol}: no bundled {interval} data{hint}; available: "
                        f"{', '.join(symbols)}; or give a kline CSV with --data")
    return Series(symbol, INTERVAL_MS[interval], load_klines(symbol, interval), "bundled")


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        elif raw[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(io.BytesIO(raw)) as archive:
                members = [n for n in archive.namelist() if n.lower().endswith(".csv")]
                if len(members) != 1:
                    raise DataError(f"{path}: expected one .csv inside the zip, found "
                                    f"{len(members)}")
                raw = archive.read(members[0])
        return raw.decode("utf-8-sig")
    except (OSError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable (gzip/zip) CSV: {exc}") from None


def load_csv(path: Path, symbol: str, step_ms: int | None = None) -> Series:
    """Parse a kline CSV; ``step_ms`` None = infer the interval from the bars' spacing."""
    text = _read_text(path)
    lines = text.lstrip().splitlines()
    if not lines:
        raise DataError(f"{path}: the file is empty")
    first = [cell.strip().strip('"').lower() for cell in lines[0].split(",")]
    header = not _is_number(first[0])
    if header and (first[0] not in _TIME_NAMES or tuple(first[1:6]) != _NAMES):
        raise DataError(f"{path}: unrecognised header {lines[0][:80]!r}; expected Binance's "
                        "12-column kline CSV or open_time,open,high,low,close,volume")
    if len(lines) == int(header):
        raise DataError(f"{path}: no bars in the file")
    width = len(lines[int(header)].split(","))
    if width not in _COLUMNS:
        raise DataError(f"{path}: {width} columns; expected Binance's 12-column kline CSV or "
                        "the bundled open_time,open,high,low,close,volume format")
    try:
        table = np.loadtxt(io.StringIO(text.lstrip()), delimiter=",", skiprows=int(header),
                           usecols=range(6), dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise DataError(f"{path}: bad kline row: {exc}") from None
    if len(table) == 0:
        raise DataError(f"{path}: no bars in the file")
    bars = _to_bars(path, table)
    return Series(symbol, _spacing(path, bars, step_ms), bars, str(path))


def _spacing(path: Path, bars: np.ndarray, step_ms: int | None) -> int:
    """The most common distance between bars (gaps are allowed), checked against --interval."""
    if len(bars) < 2 and step_ms is None:
        raise DataError(f"{path}: one bar only; give --interval")
    diffs = np.diff(bars["open_time"])
    if len(diffs):
        values, counts = np.unique(diffs, return_counts=True)
        found = int(values[np.argmax(counts)])
        if step_ms is not None and found != step_ms:
            raise DataError(f"{path}: bars are {interval_label(found)} apart, not "
                            f"{interval_label(step_ms)} (--interval)")
        step_ms = found
    assert step_ms is not None
    return step_ms


def _to_bars(path: Path, table: np.ndarray) -> np.ndarray:
    times = table[:, 0]
    if not np.isfinite(table).all():
        row = int(np.argwhere(~np.isfinite(table))[0][0])
        raise DataError(f"{path}: non-finite value in bar {row + 1}")
    if (table[:, 1:5] <= 0).any():
        row = int(np.argwhere(table[:, 1:5] <= 0)[0][0])
        raise DataError(f"{path}: non-positive price in bar {row + 1}")
    times = np.where(times >= _MICROS, times // 1000, times)  # newer Binance files: µs
    if times.min() < _MILLIS:
        raise DataError(f"{path}: open_time must be epoch milliseconds or microseconds")
    bars = np.empty(len(table), dtype=KLINE_DTYPE)
    bars["open_time"] = times.astype(np.int64)
    for i, name in enumerate(_NAMES, start=1):
        bars[name] = table[:, i]
    order = np.argsort(bars["open_time"], kind="stable")
    bars = bars[order]
    keep = np.ones(len(bars), dtype=bool)
    keep[1:] = np.diff(bars["open_time"]) > 0  # duplicated bars (overlapping files): first wins
    return bars[keep]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --- date ranges -----------------------------------------------------------------------------


def parse_when(text: str, option: str, *, end: bool = False) -> int:
    """Epoch ms of an ISO date or datetime (UTC unless it says otherwise) or of epoch ms.

    A date alone as ``end`` means the end of that day: the result is the next midnight minus
    1 ms, so ``--to 2025-01-10`` includes every bar opening on Jan 10.
    """
    value = text.strip()
    if value.isdigit():
        return int(value)
    try:
        day = date.fromisoformat(value)
    except ValueError:
        pass
    else:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        if end:
            start += timedelta(days=1)
        return int(start.timestamp() * 1000) - (1 if end else 0)
    try:
        when = datetime.fromisoformat(value.replace(" ", "T"))
    except ValueError:
        raise DataError(f"{option} {text!r} is not a date or datetime (e.g. 2025-01-05 or "
                        "2025-01-05T12:00, UTC)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def select(series: Series, start_ms: int | None, end_ms: int | None) -> Series:
    """Bars with start <= open_time <= end; DataError if none are left."""
    times = series.bars["open_time"]
    lo = 0 if start_ms is None else int(np.searchsorted(times, start_ms, side="left"))
    hi = len(times) if end_ms is None else int(np.searchsorted(times, end_ms, side="right"))
    if hi <= lo:
        have = f"{iso(int(times[0]))} … {iso(int(times[-1]))}" if len(times) else "nothing"
        want = (f"{iso(start_ms) if start_ms is not None else 'the start'} … "
                f"{iso(end_ms) if end_ms is not None else 'the end'}")
        raise DataError(f"no {series.symbol} bars in {want} (the data covers {have})")
    return Series(series.symbol, series.step_ms, series.bars[lo:hi], series.source)
