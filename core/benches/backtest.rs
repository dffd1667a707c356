//! The EMA_CROSS reference backtest (`--fee 0.0004 --slippage 0 --risk off`) over the 51,224
//! candles of `data/BTCUSDT-spot-1h.csv`, in process (CSV load included). The target is the
//! whole process under vectorbt's 12.7 ms; `make bench` also times the `albra backtest` process.

use albra_core::backtest::{self, BacktestOptions};
use criterion::{criterion_group, criterion_main, Criterion};
use rust_decimal::Decimal;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let opts = BacktestOptions {
        strategies: vec!["EMA_CROSS".into()],
        data: vec![
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/BTCUSDT-spot-1h.csv")
        ],
        timeframe: None,
        fee: Decimal::new(4, 4),
        slippage: Decimal::ZERO,
        equity: Decimal::from(10_000),
        risk_off: true,
        config: None,
        progress: None,
        range: None,
        full_jobs: false,
    };
    let mut g = c.benchmark_group("backtest");
    g.sample_size(10);
    // The CSV load alone: the part of the whole-process figure that is not the backtest.
    g.bench_function("load_csv_spot1h", |b| {
        b.iter(|| {
            let s = albra_core::data::load_csv(&opts.data[0]).unwrap();
            assert_eq!(s.candles.len(), 51_224);
        })
    });
    g.bench_function("ema_cross_spot1h_risk_off", |b| {
        b.iter(|| {
            let runs = rt.block_on(backtest::run(&opts)).unwrap();
            assert_eq!(runs[0].trades.len(), 307);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
