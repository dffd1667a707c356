//! Indicator throughput over 1,000,000 real-shaped candles (the repository's BTCUSDT 15m sample
//! repeated, each copy rescaled to open where the previous one closed, like the peers'
//! `make_big.py`). Compare with TA-Lib's figures in ../shared/bench/peers/RESULTS.md (EMA(20)
//! 1.97 ms, RSI(14) 2.77 ms, ATR(14) 1.32 ms, ADX(14) 8.67 ms, MACD 2.12 ms per 1M on the
//! project's machine) — run `python ../shared/bench/peers/bench_talib.py` beside it for a
//! same-machine ratio.

use albra_core::indicators::{Adx, Atr, Bar, Ema, Macd, Rsi};
use criterion::{black_box, criterion_group, criterion_main, Criterion};

fn series() -> (Vec<f64>, Vec<Bar>) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/BTCUSDT-perp-15m.csv");
    let base = albra_core::data::load_csv(&path)
        .expect("sample data")
        .candles;
    let mut closes = Vec::with_capacity(1_000_000);
    let mut bars = Vec::with_capacity(1_000_000);
    let mut scale = 1.0;
    while closes.len() < 1_000_000 {
        for c in &base {
            if closes.len() == 1_000_000 {
                break;
            }
            let b = Bar::new(
                c.high.to_f64() * scale,
                c.low.to_f64() * scale,
                c.close.to_f64() * scale,
            );
            closes.push(b.close);
            bars.push(b);
        }
        scale *= base.last().unwrap().close.to_f64() / base[0].open.to_f64();
    }
    (closes, bars)
}

fn bench(c: &mut Criterion) {
    let (closes, bars) = series();
    let mut g = c.benchmark_group("indicators_1M");
    g.sample_size(20);
    g.bench_function("ema_20", |b| {
        b.iter(|| {
            let mut e = Ema::new(20);
            let mut last = 0.0;
            for &x in &closes {
                if let Some(v) = e.update(x) {
                    last = v;
                }
            }
            black_box(last)
        })
    });
    g.bench_function("rsi_14", |b| {
        b.iter(|| {
            let mut e = Rsi::new(14);
            let mut last = 0.0;
            for &x in &closes {
                if let Some(v) = e.update(x) {
                    last = v;
                }
            }
            black_box(last)
        })
    });
    g.bench_function("atr_14", |b| {
        b.iter(|| {
            let mut e = Atr::new(14);
            let mut last = 0.0;
            for &x in &bars {
                if let Some(v) = e.update(x) {
                    last = v;
                }
            }
            black_box(last)
        })
    });
    g.bench_function("adx_14", |b| {
        b.iter(|| {
            let mut e = Adx::new(14);
            let mut last = 0.0;
            for &x in &bars {
                if let Some(v) = e.update(x) {
                    last = v.adx;
                }
            }
            black_box(last)
        })
    });
    g.bench_function("macd_12_26_9", |b| {
        b.iter(|| {
            let mut e = Macd::new(12, 26, 9);
            let mut last = 0.0;
            for &x in &closes {
                if let Some(v) = e.update(x) {
                    last = v.hist;
                }
            }
            black_box(last)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
