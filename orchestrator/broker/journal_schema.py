"""The journal's tables, and the steps that upgrade an older journal to them: step i takes
the schema from version i to i + 1 (STEPS[0] = nothing -> 1)."""

from __future__ import annotations

SCHEMA_VERSION = 3

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS orders (
        client_order_id TEXT PRIMARY KEY,
        symbol TEXT NOT NULL,
        seq INTEGER NOT NULL,
        side TEXT NOT NULL,
        type TEXT NOT NULL,
        quantity TEXT NOT NULL,
        price TEXT,
        status TEXT NOT NULL,
        executed_qty TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_ns INTEGER NOT NULL,
        updated_ns INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS orders_symbol_status ON orders (symbol, status)",
    "CREATE INDEX IF NOT EXISTS orders_symbol_seq ON orders (symbol, seq)",
    """CREATE TABLE IF NOT EXISTS fills (
        trade_id INTEGER PRIMARY KEY,
        client_order_id TEXT NOT NULL REFERENCES orders (client_order_id),
        symbol TEXT NOT NULL,
        side TEXT NOT NULL,
        price TEXT NOT NULL,
        qty TEXT NOT NULL,
        fee TEXT NOT NULL,
        fee_asset TEXT NOT NULL,
        time_ns INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS fills_symbol ON fills (symbol)",
    "CREATE INDEX IF NOT EXISTS fills_order ON fills (client_order_id)",
    """CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts_ns INTEGER NOT NULL,
        kind TEXT NOT NULL,
        symbol TEXT NOT NULL,
        detail TEXT NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
STEPS: tuple[tuple[str, ...], ...] = (
    SCHEMA,
    ("ALTER TABLE fills ADD COLUMN exchange_trade_id INTEGER",
     # an exchange trade is journaled once, however often it is seen (response, poll, restart)
     "CREATE UNIQUE INDEX IF NOT EXISTS fills_exchange_trade "
     "ON fills (symbol, exchange_trade_id) WHERE exchange_trade_id IS NOT NULL"),
    # one decision per symbol per bar: the open time of the bar an intent was decided on, and
    # whether it only retries an exit already decided (not a decision of its own)
    ("ALTER TABLE orders ADD COLUMN bar_time INTEGER",
     "ALTER TABLE orders ADD COLUMN exit_retry INTEGER NOT NULL DEFAULT 0",
     "CREATE INDEX IF NOT EXISTS orders_symbol_bar ON orders (symbol, bar_time)",
     # live bars seen twice over the fleet's life: workers' reports and refused decisions
     """CREATE TABLE IF NOT EXISTS duplicate_bars (
         symbol TEXT PRIMARY KEY,
         count INTEGER NOT NULL)"""),
)
