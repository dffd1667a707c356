# Albra — the two commands: `make run` (replay on the embedded default, offline) and `make test`.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/albra-target
CARGO ?= cargo
VENV := .venv
PY ?= python3

.PHONY: run test build venv lint fmt clippy bench clean-state

run: build
	$(CARGO_TARGET_DIR)/release/albra replay --data data/BTCUSDT-perp-15m.csv --config config/albra.toml

build:
	$(CARGO) build --release --bin albra

# moto (DynamoDB + SSM on loopback) and cfn-lint for the tests, in a local venv.
venv: $(VENV)/.ready
$(VENV)/.ready:
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'moto[server]' cfn-lint
	touch $@

test: venv
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

lint: fmt clippy
fmt:
	$(CARGO) fmt --all -- --check
clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean-state:
	rm -rf state

# Benchmarks (measured, never asserted): criterion in-process figures, then the whole
# `albra backtest` process over six years of 1h candles.
bench: build
	$(CARGO) bench -p albra-core --benches
	@echo "whole process: albra backtest EMA_CROSS over data/BTCUSDT-spot-1h.csv (51,224 candles), 5 runs:"
	@for i in 1 2 3 4 5; do /usr/bin/time -f "  %e s wall, %M KB max RSS" $(CARGO_TARGET_DIR)/release/albra --config none.toml backtest --strategy EMA_CROSS --data data/BTCUSDT-spot-1h.csv --fee 0.0004 --slippage 0 --risk off > /dev/null; done
