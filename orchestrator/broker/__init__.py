"""Brokers: exchange rules, position accounting, the SQLite journal and the paper broker."""
