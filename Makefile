# Albra — the two commands: `make run` (replay on the embedded default, offline) and `make test`.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/albra-target
CARGO ?= cargo
VENV := .venv
PY ?= python3
# The peers' benchmark venv (../shared/bench/peers/setup.sh), used by `make bench` when present.
PEERS_VENV ?= /tmp/peers/venv

.PHONY: run test build install static venv browser lint fmt clippy bench clean-state lambda deploy bench-lambda bench-live fuzz chaos

# The replay keeps its store in state/replay (a fresh one each run), where `albra status --state
# state/replay`, `albra performance --state state/replay` and the other read commands find it.
run: build
	rm -rf state/replay
	$(CARGO_TARGET_DIR)/release/albra replay --data data/BTCUSDT-perp-15m.csv --config config/albra.toml --state state/replay

# `albra` and `albra-ops` side by side in $(PREFIX)/bin (default ~/.local/bin), so `albra` is on the
# PATH; albra hands its operator commands to the albra-ops beside it.
PREFIX ?= $(HOME)/.local
install: build
	install -d $(PREFIX)/bin
	install -m 0755 $(CARGO_TARGET_DIR)/release/albra $(CARGO_TARGET_DIR)/release/albra-ops $(PREFIX)/bin/
	@case ":$$PATH:" in *":$(PREFIX)/bin:"*) ;; *) echo "note: $(PREFIX)/bin is not on your PATH; add it (e.g. export PATH=\"$(PREFIX)/bin:\$$PATH\")";; esac

# One cargo invocation, so `make run` on a fresh machine compiles each dependency once.
build:
	$(CARGO) build --locked --release --bin albra --bin albra-ops

# `make static` (what `make bench` times): `albra` runs the candle-file tools as short processes,
# and where the host is Linux with glibc it can be linked statically (static-pie: still
# position-independent): each run then skips loading libc, libm and libgcc_s, 0.4 ms of a 12 ms
# backtest. It needs nothing static glibc lacks (it resolves no host or user names and loads no
# libraries); `albra-ops`, which talks to the network, stays dynamic. The static copy is built for
# the host triple in its own directory (the whole tree compiled a second time, about 12 minutes on
# a fresh 2-core machine: kept out of `make run` and `make test`), then put beside `albra-ops`,
# where `albra` looks for it.
HOST := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
STATIC_ALBRA := $(filter %-linux-gnu,$(HOST))

static: build
ifneq ($(STATIC_ALBRA),)
	RUSTFLAGS="$(strip $(RUSTFLAGS) -C target-feature=+crt-static)" $(CARGO) build --locked --release --bin albra --target $(HOST)
	rm -f $(CARGO_TARGET_DIR)/release/albra
	cp $(CARGO_TARGET_DIR)/$(HOST)/release/albra $(CARGO_TARGET_DIR)/release/albra
	ldd $(CARGO_TARGET_DIR)/release/albra 2>&1 | grep -q 'statically linked' \
	  || { echo "albra is not statically linked"; exit 1; }
endif

# moto (DynamoDB + SSM on loopback) and cfn-lint for the tests, in a local venv. Exact versions:
# a new release of either must not change what the tests and the template lint see unannounced.
MOTO_VERSION := 5.2.6
CFN_LINT_VERSION := 1.58.0
venv: $(VENV)/.ready
$(VENV)/.ready:
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'moto[server]==$(MOTO_VERSION)' 'cfn-lint==$(CFN_LINT_VERSION)'
	touch $@

# Debian's chromium and chromium-driver for the headless-browser tests (tests/src/browser.rs);
# nothing when both are installed. `apt-get update` only when the install fails without it.
APT_GET := $(if $(filter 0,$(shell id -u)),,sudo )env DEBIAN_FRONTEND=noninteractive apt-get
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; else \
	  $(APT_GET) install -y --no-install-recommends chromium chromium-driver \
	  || { $(APT_GET) update && $(APT_GET) install -y --no-install-recommends chromium chromium-driver; }; \
	fi

test: venv browser
	$(CARGO) build --locked --workspace --bins
	$(CARGO) test --locked --workspace

lint: fmt clippy
fmt:
	$(CARGO) fmt --all -- --check
clippy:
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

clean-state:
	rm -rf state

# Benchmarks (measured, never asserted): criterion in-process figures, then the whole
# `albra backtest` process over six years of 1h candles.
bench: static
	$(CARGO) bench --locked -p albra-core --benches
	@echo "whole process: albra backtest EMA_CROSS over data/BTCUSDT-spot-1h.csv (51,224 candles), 5 runs:"
	@for i in 1 2 3 4 5; do /usr/bin/time -f "  %e s wall, %M KB max RSS" $(CARGO_TARGET_DIR)/release/albra --config none backtest --strategy EMA_CROSS --data data/BTCUSDT-spot-1h.csv --fee 0.0004 --slippage 0 --risk off > /dev/null; done
	@echo "the same with --full-jobs (the whole evaluation job on every candle: the baseline of the quiet path), 3 runs:"
	@for i in 1 2 3; do /usr/bin/time -f "  %e s wall, %M KB max RSS" $(CARGO_TARGET_DIR)/release/albra --config none backtest --strategy EMA_CROSS --data data/BTCUSDT-spot-1h.csv --fee 0.0004 --slippage 0 --risk off --full-jobs > /dev/null; done
	@echo "whole process: each strategy with its defaults and the risk rules on, over the same file:"
	@for s in EMA_CROSS TFPE ZLMACD_ICHIMOKU ZLHMA_EMA_CROSS; do /usr/bin/time -f "  $$s: %e s wall, %M KB max RSS" $(CARGO_TARGET_DIR)/release/albra --config none backtest --strategy $$s --data data/BTCUSDT-spot-1h.csv > /dev/null 2>/tmp/albra-bench-$$s.err; tail -1 /tmp/albra-bench-$$s.err; done
	@echo "whole process: walk-forward of 27 EMA_CROSS parameter sets over the same file (70/30, 30-day step):"
	@/usr/bin/time -f "  %e s wall, %U s user, %M KB max RSS" $(CARGO_TARGET_DIR)/release/albra --config none walk-forward --strategy EMA_CROSS --data data/BTCUSDT-spot-1h.csv --in-sample 0.7 --step 30d --grid fast=20,50,80 --grid slow=100,200,300 --grid stop_loss_pct=0.02,0.03,0.05 | tail -2
	@echo "whole process beside the peers (bench/whole_process.py: each a fresh process that imports, reads the CSV and runs once):"
	@if [ -x $(PEERS_VENV)/bin/python ]; then $(PEERS_VENV)/bin/python bench/whole_process.py --runs 5; \
	  else echo "  skipped: no peers' venv at $(PEERS_VENV) (bash ../shared/bench/peers/setup.sh makes it)"; fi

# AWS Lambda deployment (infra/README.md). `make lambda` builds the arm64 `bootstrap` of each
# function with cargo-lambda (pip install cargo-lambda, which brings zig) or, without it, with
# cargo for an installed aarch64-unknown-linux-gnu target and aarch64-linux-gnu-gcc, then stages infra/build/<fn>/ (bootstrap
# + albra.toml, what the SAM template's CodeUri points at) and infra/build/<fn>.zip.
LAMBDA_FUNCTIONS := evaluator position-sync telegram-webhook dashboard
# The packed config: config/albra.toml with every account's keys from SSM (infra/lambda-config.sh).
LAMBDA_CONFIG ?= config/albra.toml
STAGE ?= prod
lambda:
	@set -e; \
	if command -v cargo-lambda >/dev/null 2>&1; then \
	  $(CARGO) lambda build --locked --profile lambda --arm64 $(addprefix -p ,$(LAMBDA_FUNCTIONS)); \
	  out() { echo "$(CARGO_TARGET_DIR)/lambda/$$1/bootstrap"; }; \
	elif rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu \
	    && command -v aarch64-linux-gnu-gcc >/dev/null 2>&1; then \
	  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
	    $(CARGO) build --locked --profile lambda --target aarch64-unknown-linux-gnu $(addprefix -p ,$(LAMBDA_FUNCTIONS)); \
	  out() { echo "$(CARGO_TARGET_DIR)/aarch64-unknown-linux-gnu/lambda/$$1"; }; \
	else \
	  echo "make lambda: needs cargo-lambda (pip install cargo-lambda) or the aarch64-unknown-linux-gnu"; \
	  echo "target and cross gcc (rustup target add aarch64-unknown-linux-gnu;"; \
	  echo "apt-get install gcc-aarch64-linux-gnu); see infra/README.md"; \
	  exit 1; \
	fi; \
	for f in $(LAMBDA_FUNCTIONS); do \
	  rm -rf infra/build/$$f infra/build/$$f.zip; mkdir -p infra/build/$$f; \
	  cp "$$(out $$f)" infra/build/$$f/bootstrap; infra/lambda-config.sh $(LAMBDA_CONFIG) > infra/build/$$f/albra.toml; \
	  (cd infra/build/$$f && zip -q ../$$f.zip bootstrap albra.toml); \
	  ls -l infra/build/$$f.zip; \
	done

# Deploy with SAM (needs AWS credentials; never run in CI): make deploy STAGE=prod ALERT_EMAIL=you@example.com
deploy: lambda
	@test -n "$(ALERT_EMAIL)" || { echo "make deploy: set ALERT_EMAIL=you@example.com"; exit 1; }
	cd infra && sam deploy --template-file template.yaml --stack-name albra-$(STAGE) \
	  --capabilities CAPABILITY_IAM --resolve-s3 --no-fail-on-empty-changeset \
	  --parameter-overrides Stage=$(STAGE) AlertEmail=$(ALERT_EMAIL)

# Lambda-style figures (measured, never asserted): start-to-ready, invocation time and peak RSS of
# the evaluator and position-sync under the loopback Lambda runtime API, bootstrap sizes, and a
# monthly AWS cost estimate. Host-architecture build of the `lambda` profile.
bench-lambda: venv
	$(CARGO) build --locked --profile lambda --bin evaluator --bin position-sync
	$(CARGO) build --locked --workspace --bins
	ALBRA_BENCH_BIN_DIR=$(CARGO_TARGET_DIR)/lambda $(CARGO) test --locked -p albra-tests --test lambda -- --ignored --nocapture bench_

# What the live path costs (measured, never asserted; README "Speed"): the real evaluator and
# position-sync (debug builds) against the loopback Binance server with BENCH_LATENCY_MS added to
# every request, for 1 and 4 symbols and 1 and 3 accounts: wall time, requests, weight, and the
# sequential round trips before the entry order and its stop. albra-bench-live --help says more.
BENCH_LATENCY_MS ?= 50
BENCH_RUNS ?= 3
bench-live:
	$(CARGO) build --locked --workspace --bins
	$(CARGO_TARGET_DIR)/debug/albra-bench-live --latency-ms $(BENCH_LATENCY_MS) --runs $(BENCH_RUNS)

# The seeded fault campaign (README "Fault campaign"): the real evaluator and position-sync against
# the loopback Binance server, at least CHAOS_MIN_FAULTS faults; prints the figures and fails on any
# violation. A failure prints the --seed/--from that rerun its scenario alone.
CHAOS_SEED ?= 20
CHAOS_SCENARIOS ?= 300
CHAOS_JOBS ?= 8
CHAOS_MIN_FAULTS ?= 1000
chaos:
	$(CARGO) build --locked --workspace --bins
	$(CARGO_TARGET_DIR)/debug/albra-chaos --seed $(CHAOS_SEED) --scenarios $(CHAOS_SCENARIOS) \
	  --jobs $(CHAOS_JOBS) --min-faults $(CHAOS_MIN_FAULTS)

# Fuzzing (README "Fuzzing"): each cargo-fuzz target in fuzz/ for FUZZ_SECS seconds, one after
# the other, with the stable toolchain (RUSTC_BOOTSTRAP lets cargo-fuzz pass its sanitizer flags).
# The committed seeds in fuzz/corpus/<target>/ are read; new inputs go to $(FUZZ_DIR)/corpus, and a
# crash stops the run with its input in fuzz/artifacts/<target>/ (add it to the target's corpus,
# where `make test` replays it, once the parser is fixed).
FUZZ_SECS ?= 30
FUZZ_DIR ?= $(CARGO_TARGET_DIR)/fuzz
FUZZ_TARGETS := klines account positions order algo_order user_trades income exchange_info \
	candle_csv config lambda_event
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install --locked cargo-fuzz
	@set -e; cd fuzz; for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$t; \
	  echo "fuzz $$t for $(FUZZ_SECS) s"; \
	  RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$(FUZZ_DIR)/target $(CARGO) fuzz run $$t \
	    $(FUZZ_DIR)/corpus/$$t corpus/$$t -- -max_total_time=$(FUZZ_SECS) -print_final_stats=1; \
	done
