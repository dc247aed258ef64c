"""`multibot backtest`: the live strategy code and the paper fill model, replayed over history.

Modules: ``data`` (klines: bundled or Binance CSV, date ranges), ``engine`` (one symbol: the
real Runner and PaperBroker, bar by bar), ``pool`` (a fresh process per symbol, forked from a
server that ``preload`` prepares), ``metrics``, ``lookahead`` (prefix check), ``report`` (JSON,
table), ``plot`` (PNG), ``progress``, ``command``. Importing this package imports nothing heavy.
"""
