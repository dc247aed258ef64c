"""Test doubles that speak real protocols (e.g. a local Binance spot server)."""
