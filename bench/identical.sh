#!/usr/bin/env bash
# Records everything a user sees of the research tools and `make run`, so a refactor can show that
# nothing moved (issue 21 point 8): run it before and after the change and compare the two
# folders. Every line of timing is dropped; everything else must be byte-identical.
#
#   bench/identical.sh OUT_DIR            record into OUT_DIR (the release binaries must be built:
#                                         `make build`)
#   bench/identical.sh --compare A B      exit 1 and show the differences unless A and B match
#
# What it records:
#   - the README's "Real-data results" rows: each strategy with its defaults (`--config none`)
#     on both files at the README's timeframes, the summary and every trade (`--trades-out`);
#   - the EMA_CROSS reference runs (`--fee 0.0004 --slippage 0 --risk off`): 307 trades on
#     BTCUSDT-spot-1h.csv and 312 on BTCUSDT-perp-5m.csv, with every trade;
#   - `make run`'s replay output;
#   - the walk-forward of `make bench` (27 parameter sets), windows and stitched result.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--compare" ]]; then
  [[ $# -eq 3 ]] || { echo "usage: bench/identical.sh --compare A B" >&2; exit 2; }
  if diff -r "$2" "$3"; then
    echo "identical: $(ls "$2" | wc -l) files"
  else
    echo "DIFFERENT: see above" >&2
    exit 1
  fi
  exit 0
fi
out="${1:?usage: bench/identical.sh OUT_DIR | --compare A B}"
bin="${CARGO_TARGET_DIR:-$HOME/.cache/albra-target}/release"
for b in albra albra-ops; do
  [[ -x "$bin/$b" ]] || { echo "$bin/$b is missing: run make build first" >&2; exit 2; }
done
mkdir -p "$out"
# How long something took, when a log line was written and the folder written to are the only
# parts that may differ.
untimed() {
  sed -E -e 's/ in [0-9.]+ (s|ms)\b/ in (time)/g' -e "s#$out/#OUT/#g" \
    -e 's/^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z +//'
}

step() { echo "  $1" >&2; }
echo "recording into $out with $bin" >&2

for row in "TFPE perp-15m 4h" "ZLMACD_ICHIMOKU perp-15m 1h" "ZLHMA_EMA_CROSS perp-15m 1h" \
  "EMA_CROSS perp-15m 1h" "TFPE spot-1h 4h" "ZLMACD_ICHIMOKU spot-1h 1h" \
  "ZLHMA_EMA_CROSS spot-1h 1h" "EMA_CROSS spot-1h 1h"; do
  read -r strategy file tf <<<"$row"
  name="results-$strategy-$file-$tf"
  step "$name"
  "$bin/albra" --config none backtest --strategy "$strategy" --timeframe "$tf" \
    --data "data/BTCUSDT-$file.csv" --trades-out "$out/$name.trades.csv" 2>&1 | untimed >"$out/$name.txt"
done

for file in spot-1h perp-5m; do
  name="reference-EMA_CROSS-$file"
  step "$name"
  "$bin/albra" --config none backtest --strategy EMA_CROSS --data "data/BTCUSDT-$file.csv" \
    --fee 0.0004 --slippage 0 --risk off --trades-out "$out/$name.trades.csv" 2>&1 | untimed >"$out/$name.txt"
done

step "make-run-replay"
"$bin/albra" replay --data data/BTCUSDT-perp-15m.csv --config config/albra.toml 2>&1 | untimed \
  >"$out/make-run-replay.txt"

step "walk-forward"
"$bin/albra" --config none walk-forward --strategy EMA_CROSS --data data/BTCUSDT-spot-1h.csv \
  --in-sample 0.7 --step 30d --grid fast=20,50,80 --grid slow=100,200,300 \
  --grid stop_loss_pct=0.02,0.03,0.05 2>&1 | untimed >"$out/walk-forward.txt"

echo "recorded $(ls "$out" | wc -l) files; the reference runs hold $(($(wc -l <"$out/reference-EMA_CROSS-spot-1h.trades.csv") - 1)) and $(($(wc -l <"$out/reference-EMA_CROSS-perp-5m.trades.csv") - 1)) trades" >&2
