//! Indicator throughput over 1,000,000 real-shaped candles (the repository's BTCUSDT 15m sample
//! repeated, each copy rescaled to open where the previous one closed), in two forms:
//! - `stream/*`: the streaming `update()` loop the strategies use, keeping the last value;
//! - `batch/*`: the array functions (`Ema::batch`, `Rsi::batch`, `Atr::batch`, `Adx::batch`,
//!   `Macd::batch`), which fill preallocated output arrays from contiguous f64 inputs — what
//!   TA-Lib's functions do (its NumPy wrapper's output memory is recycled after the first call).
//!
//! TA-Lib on the same series and machine, with ratios, in one command (needs a Python with
//! `ta-lib==0.8.2` and numpy, e.g. `python3 -m venv /tmp/talib-venv && /tmp/talib-venv/bin/pip
//! install ta-lib==0.8.2 numpy`):
//!
//! ```text
//! /tmp/talib-venv/bin/python bench/talib_same_run.py --albra
//! ```
//!
//! It times TA-Lib, runs this bench with `ALBRA_BENCH_TABLE=1` (no criterion: one warm-up call,
//! then the median of `ALBRA_BENCH_RUNS` calls, TA-Lib's method), times TA-Lib again, and checks
//! that both sides built the same series (the fingerprint line). `ALBRA_BENCH_ONLY=ADX` limits
//! the table to the indicators whose name contains the text.

use albra_core::indicators::{Adx, Atr, Bar, Ema, Macd, MacdArrays, Rsi};
use criterion::{black_box, criterion_group, Criterion};
use std::time::Instant;

const N: usize = 1_000_000;

/// The benchmark series, as bars (streaming) and as contiguous arrays (batch).
struct Series {
    bars: Vec<Bar>,
    high: Vec<f64>,
    low: Vec<f64>,
    close: Vec<f64>,
}

fn series() -> Series {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/BTCUSDT-perp-15m.csv");
    let base = albra_core::data::load_csv(&path)
        .expect("sample data")
        .candles;
    let mut bars = Vec::with_capacity(N);
    let mut scale = 1.0;
    while bars.len() < N {
        for c in &base {
            if bars.len() == N {
                break;
            }
            bars.push(Bar::new(
                c.high.to_f64() * scale,
                c.low.to_f64() * scale,
                c.close.to_f64() * scale,
            ));
        }
        scale *= base.last().unwrap().close.to_f64() / base[0].open.to_f64();
    }
    Series {
        high: bars.iter().map(|b| b.high).collect(),
        low: bars.iter().map(|b| b.low).collect(),
        close: bars.iter().map(|b| b.close).collect(),
        bars,
    }
}

/// Wrapping sum of the bit patterns of high, low and close (`bench/talib_same_run.py` prints
/// the same number for its copy of the series).
fn fingerprint(s: &Series) -> u64 {
    [&s.high, &s.low, &s.close]
        .iter()
        .flat_map(|a| a.iter())
        .fold(0u64, |acc, v| acc.wrapping_add(v.to_bits()))
}

/// Output arrays, allocated once.
struct Out {
    a: Vec<f64>,
    b: Vec<f64>,
    c: Vec<f64>,
}

impl Out {
    fn new() -> Self {
        Out {
            a: vec![0.0; N],
            b: vec![0.0; N],
            c: vec![0.0; N],
        }
    }
}

/// One benchmark case: a name as TA-Lib's script prints it, and the batch and streaming runs.
struct Case {
    name: &'static str,
    id: &'static str,
    batch: fn(&Series, &mut Out) -> f64,
    stream: fn(&Series) -> f64,
}

const CASES: [Case; 5] = [
    Case {
        name: "EMA(20)",
        id: "ema_20",
        batch: |s, o| {
            Ema::batch(20, &s.close, &mut o.a);
            o.a[N - 1]
        },
        stream: |s| {
            let mut e = Ema::new(20);
            let mut last = 0.0;
            for &x in &s.close {
                if let Some(v) = e.update(x) {
                    last = v;
                }
            }
            last
        },
    },
    Case {
        name: "RSI(14)",
        id: "rsi_14",
        batch: |s, o| {
            Rsi::batch(14, &s.close, &mut o.a);
            o.a[N - 1]
        },
        stream: |s| {
            let mut e = Rsi::new(14);
            let mut last = 0.0;
            for &x in &s.close {
                if let Some(v) = e.update(x) {
                    last = v;
                }
            }
            last
        },
    },
    Case {
        name: "ATR(14)",
        id: "atr_14",
        batch: |s, o| {
            Atr::batch(14, &s.high, &s.low, &s.close, &mut o.a);
            o.a[N - 1]
        },
        stream: |s| {
            let mut e = Atr::new(14);
            let mut last = 0.0;
            for &b in &s.bars {
                if let Some(v) = e.update(b) {
                    last = v;
                }
            }
            last
        },
    },
    Case {
        name: "ADX(14)",
        id: "adx_14",
        batch: |s, o| {
            Adx::batch(14, &s.high, &s.low, &s.close, &mut o.a);
            o.a[N - 1]
        },
        stream: |s| {
            let mut e = Adx::new(14);
            let mut last = 0.0;
            for &b in &s.bars {
                if let Some(v) = e.update(b) {
                    last = v.adx;
                }
            }
            last
        },
    },
    Case {
        name: "MACD(12,26,9)",
        id: "macd_12_26_9",
        batch: |s, o| {
            let out = MacdArrays {
                macd: &mut o.a,
                signal: &mut o.b,
                hist: &mut o.c,
            };
            Macd::batch(12, 26, 9, &s.close, out);
            o.c[N - 1]
        },
        stream: |s| {
            let mut e = Macd::new(12, 26, 9);
            let mut last = 0.0;
            for &x in &s.close {
                if let Some(v) = e.update(x) {
                    last = v.hist;
                }
            }
            last
        },
    },
];

fn bench(c: &mut Criterion) {
    let s = series();
    println!("albra series fingerprint {}", fingerprint(&s));
    let mut out = Out::new();
    let mut g = c.benchmark_group("indicators_1M");
    g.sample_size(20);
    for case in &CASES {
        g.bench_function(format!("stream/{}", case.id), |b| {
            b.iter(|| black_box((case.stream)(black_box(&s))))
        });
        g.bench_function(format!("batch/{}", case.id), |b| {
            b.iter(|| black_box((case.batch)(black_box(&s), &mut out)))
        });
    }
    g.finish();
}

/// TA-Lib's method (`bench/talib_same_run.py`): one warm-up call, then `runs` timed calls;
/// returns the median and the minimum (the minimum shows what another process on the machine
/// cost the median).
fn time_ms(runs: usize, mut f: impl FnMut() -> f64) -> (f64, f64) {
    black_box(f());
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[0])
}

fn table() {
    let runs: usize = std::env::var("ALBRA_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let s = series();
    println!("albra series fingerprint {}", fingerprint(&s));
    let mut out = Out::new();
    let only = std::env::var("ALBRA_BENCH_ONLY").unwrap_or_default();
    for case in CASES.iter().filter(|c| c.name.contains(only.as_str())) {
        let (batch, batch_min) = time_ms(runs, || (case.batch)(&s, &mut out));
        let (stream, stream_min) = time_ms(runs, || (case.stream)(&s));
        println!(
            "albra {:<14} batch  median {batch:7.3} ms  min {batch_min:7.3} ms",
            case.name
        );
        println!(
            "albra {:<14} stream median {stream:7.3} ms  min {stream_min:7.3} ms",
            case.name
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    if std::env::var_os("ALBRA_BENCH_TABLE").is_some() {
        table();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
