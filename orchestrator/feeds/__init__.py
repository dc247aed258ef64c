"""Market data feeds: replay (bundled real klines) and synthetic (seeded random walk)."""
