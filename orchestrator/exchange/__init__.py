"""Binance: endpoints, credentials, the rate-limited client and the typed reports it returns,
the exchange broker with its ledger and watcher, and the start-up reconciliation.
python-binance is imported lazily, only in the orchestrator."""
