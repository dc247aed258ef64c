"""Binance: endpoints, credentials, the rate-limited client, the exchange broker and the
start-up reconciliation. python-binance is imported lazily, only in the orchestrator."""
