"""Strategies: per-symbol trading logic. Imports nothing from orchestrator/ or worker/."""
