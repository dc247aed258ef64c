"""`multibot backtest`: the live strategy code and the paper fill model, replayed over history.

Modules: ``data`` (klines: bundled or Binance CSV, date ranges), ``engine`` (one symbol: the
real Runner and PaperBroker, bar by bar), ``pool`` (one process per symbol), ``metrics``,
``lookahead`` (prefix check), ``report`` (JSON, table), ``plot`` (PNG), ``progress``,
``command`` (the typer command). Importing this package imports nothing heavy.
"""
