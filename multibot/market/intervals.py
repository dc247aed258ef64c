"""Binance's kline intervals (a light module: the CLI checks --interval without python-binance)."""

_MIN = 60_000
BINANCE_INTERVAL_MS = {
    "1s": 1000, "1m": _MIN, "3m": 3 * _MIN, "5m": 5 * _MIN, "15m": 15 * _MIN,
    "30m": 30 * _MIN, "1h": 60 * _MIN, "2h": 120 * _MIN, "4h": 240 * _MIN, "6h": 360 * _MIN,
    "8h": 480 * _MIN, "12h": 720 * _MIN, "1d": 1440 * _MIN,
}
