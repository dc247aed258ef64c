"""Brokers: the ``Broker`` protocol, the book both brokers keep, the SQLite journal (and its
in-memory twin) and the paper broker."""
