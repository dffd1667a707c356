#!/usr/bin/env python3
"""TA-Lib and Albra indicator timings on the same 1,000,000-candle series, in one invocation.

The series is the one `core/benches/indicators.rs` builds: `data/BTCUSDT-perp-15m.csv` repeated,
each copy multiplied by a running scale (f64, not rounded) so that it opens where the previous
copy closed, truncated to 1,000,000 rows. Both sides print a fingerprint of the series (wrapping
u64 sum of the f64 bit patterns of high, low and close) so a mismatch shows.

TA-Lib is timed like `../shared/bench/peers/bench_talib.py` does it: float64 contiguous inputs,
the function allocates and fills its output arrays, one untimed warm-up call, then the median of
`--runs` timed calls. With `--albra` the script then runs the Rust bench binary in table mode
(`ALBRA_BENCH_TABLE=1`: the same warm-up + median-of-runs method for the batch and streaming
forms, no criterion) and TA-Lib once more, and prints Albra/TA-Lib ratios against the mean of the
two TA-Lib medians (and, alongside, of the minimums, which another process on the machine
disturbs less).

Note on TA-Lib's arithmetic (what Albra reproduces bit for bit): the C library in the ta-lib 0.8.2
wheel computes the EMA step as fma(x - prev, k, prev) and the ATR step as
fma(prev, (N-1)/N, tr * (1 - (N-1)/N)). `objdump -d` of ta_lib.libs/libta-lib-*.so shows
`call fma@plt` in TA_EMA.default and TA_ATR.default and `vfmadd231sd` / `vfmadd132sd` in the
TA_EMA.fma / TA_ATR.fma / TA_MACD.fma variants its resolver picks on CPUs with FMA; TA_RSI and
TA_ADX use plain multiplications and divisions. On prices with one or two decimals the fused and
unfused EMA rarely differ, on noise around zero they differ in about half the values, and only
the fused form equals talib.EMA there.

Usage (from the repository root, with a Python that has ta-lib 0.8.2 and numpy):
  python bench/talib_same_run.py [--runs 5] [--albra]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import talib

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "BTCUSDT-perp-15m.csv"
N = 1_000_000
CASES = ["EMA(20)", "RSI(14)", "ATR(14)", "ADX(14)", "MACD(12,26,9)"]


def series():
    rows = []
    with open(DATA) as fh:
        next(fh)
        for line in fh:
            f = line.rstrip("\n").split(",")
            rows.append((float(f[1]), float(f[2]), float(f[3]), float(f[4])))
    base = np.array(rows, dtype=np.float64)
    h, lo, c = [], [], []
    scale, n = 1.0, 0
    while n < N:
        take = min(len(base), N - n)
        # x * scale elementwise, exactly what the Rust bench does per value.
        h.append(base[:take, 1] * scale)
        lo.append(base[:take, 2] * scale)
        c.append(base[:take, 3] * scale)
        n += take
        scale *= base[-1, 3] / base[0, 0]
    return tuple(np.ascontiguousarray(np.concatenate(a)) for a in (h, lo, c))


def fingerprint(h, lo, c):
    total = 0
    for a in (h, lo, c):
        total = (total + int(a.view(np.uint64).sum(dtype=np.uint64))) % (1 << 64)
    return total


def time_talib(h, lo, c, runs):
    cases = {
        "EMA(20)": lambda: talib.EMA(c, 20),
        "RSI(14)": lambda: talib.RSI(c, 14),
        "ATR(14)": lambda: talib.ATR(h, lo, c, 14),
        "ADX(14)": lambda: talib.ADX(h, lo, c, 14),
        "MACD(12,26,9)": lambda: talib.MACD(c, 12, 26, 9),
    }
    out = {}
    for name in CASES:
        fn = cases[name]
        fn()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = (statistics.median(times) * 1e3, min(times) * 1e3)
        print(
            f"talib {name:<14} median {out[name][0]:7.3f} ms  min {out[name][1]:7.3f} ms  "
            f"[{', '.join(f'{t * 1e3:.3f}' for t in times)}]"
        )
    return out


def run_albra(runs):
    env = dict(os.environ, ALBRA_BENCH_TABLE="1", ALBRA_BENCH_RUNS=str(runs))
    cmd = ["cargo", "bench", "-q", "-p", "albra-core", "--bench", "indicators"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    print(res.stdout, end="")
    got = {}
    for line in res.stdout.splitlines():
        m = re.match(r"albra (\S+)\s+(batch|stream)\s+median\s+([0-9.]+) ms\s+min\s+([0-9.]+) ms", line)
        if m:
            got[(m.group(1), m.group(2))] = (float(m.group(3)), float(m.group(4)))
        m = re.match(r"albra series fingerprint (\d+)", line)
        if m:
            got["fingerprint"] = int(m.group(1))
    return got


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--albra", action="store_true", help="also run the Rust bench in table mode and print ratios")
    a = ap.parse_args()
    h, lo, c = series()
    fp = fingerprint(h, lo, c)
    print(f"talib {talib.__version__} (C {talib.__ta_version__}), numpy {np.__version__}")
    print(f"series fingerprint {fp} (rows {len(c)}, close[0] {c[0]!r}, close[-1] {c[-1]!r})")
    first = time_talib(h, lo, c, a.runs)
    if not a.albra:
        return
    albra = run_albra(a.runs)
    if albra.get("fingerprint") != fp:
        sys.exit(f"series differ: albra fingerprint {albra.get('fingerprint')} != {fp}")
    second = time_talib(h, lo, c, a.runs)
    print("\nmedians (TA-Lib: mean of its two medians); in brackets the same from the minimums")
    print(f"{'indicator':<14} {'TA-Lib ms':>9} {'batch ms':>9} {'ratio':>6} {'stream ms':>9} {'ratio':>6}")
    for name in CASES:
        t = (first[name][0] + second[name][0]) / 2
        tmin = min(first[name][1], second[name][1])
        b, bmin = albra[(name, "batch")]
        s, smin = albra[(name, "stream")]
        print(
            f"{name:<14} {t:9.3f} {b:9.3f} {b / t:6.2f} {s:9.3f} {s / t:6.2f}   "
            f"[{tmin:.3f} {bmin:.3f} {bmin / tmin:.2f} {smin:.3f} {smin / tmin:.2f}]"
        )


if __name__ == "__main__":
    main()
