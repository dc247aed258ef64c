"""Times for people: epoch milliseconds as UTC ISO-8601 (every message, report and log line)."""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, timedelta

_DAY_MS = 86_400_000
_YEAR_10000_MS = 253_402_300_800_000  # 10000-01-01T00:00Z
_CLOCK = [f"{hour:02d}:{minute:02d}" for hour in range(24) for minute in range(60)]  # HH:MM


def iso(ms: int) -> str:
    """UTC ISO-8601 of an epoch-ms time, minutes precision when that is exact."""
    if type(ms) is int and 0 <= ms < _YEAR_10000_MS:  # a report has thousands: the same, faster
        day, ms_of_day = divmod(ms, _DAY_MS)
        minute, ms_of_minute = divmod(ms_of_day, 60_000)
        second = ms_of_minute // 1000
        clock = _CLOCK[minute]
        return f"{_date(day)}T{clock}:{second:02d}Z" if second else f"{_date(day)}T{clock}Z"
    when = datetime.fromtimestamp(ms / 1000, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ" if when.second else "%Y-%m-%dT%H:%MZ")


@functools.lru_cache(maxsize=4096)
def _date(day: int) -> str:
    """``YYYY-MM-DD`` of a day number (days since 1970-01-01)."""
    return (date(1970, 1, 1) + timedelta(days=day)).isoformat()
