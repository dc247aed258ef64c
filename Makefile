.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_HOME ?= .demo

.PHONY: help run-deps setup demo demo-binance test reliability lint typecheck check bench clean

help: #-- list the targets
	@grep -E '^[a-z][a-z-]*:.*#--' $(MAKEFILE_LIST) | sed -E 's/:.*#-- /\t/' | expand -t 14

# what running needs only (the demos); the dev tools come with `setup`
$(BIN)/multibot: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.dev: $(BIN)/multibot
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

run-deps: $(BIN)/multibot #-- create .venv with what running multibot needs (no dev tools)

setup: $(VENV)/.dev #-- create .venv and install multibot with its dev tools

demo: run-deps #-- three symbols paper-trading on bundled real data, live view; Ctrl-C stops all
	@$(BIN)/multibot up BTCUSDT ETHUSDT XRPUSDT --home $(DEMO_HOME) --foreground --live

demo-binance: run-deps #-- the same on Binance's protocol: testnet orders against a local Binance server
	@$(BIN)/python -m tests.fakes.demo --home $(DEMO_HOME)-testnet

test: setup #-- the whole test suite (real processes, sockets, SQLite); two files at a time
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

reliability: setup #-- chaos, faults, fuzzing and security suites; figures to reliability-figures.json
	rm -f reliability-figures.json
	MULTIBOT_RELIABILITY_FIGURES=$(CURDIR)/reliability-figures.json $(BIN)/python -m pytest -q -s \
	  tests/test_chaos.py tests/test_chaos_decisions.py tests/test_hostile_input.py \
	  tests/test_storage_faults.py tests/test_secrets.py tests/test_remote.py \
	  tests/test_supervision.py tests/test_protocol.py tests/test_worker_auth.py \
	  tests/test_unknown_outcomes.py tests/test_user_stream.py tests/test_exits_fleet.py \
	  | grep -E "reliability figures|passed|failed"

bench: setup #-- benchmark suite (not tests): writes BENCHMARKS.md; ~10 min
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run.py

lint: setup #-- ruff, and the import contracts (arrows only go down; pyproject.toml)
	$(BIN)/ruff check multibot orchestrator worker strategies tests bench
	$(BIN)/lint-imports

typecheck: setup #-- mypy (strict)
	$(BIN)/mypy

check: lint typecheck test #-- everything CI should be happy with

clean: #-- remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(DEMO_HOME) $(DEMO_HOME)-testnet
