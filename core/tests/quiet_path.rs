//! The backtest's quiet-candle shortcut (`Engine::evaluate_quiet`) changes nothing: every
//! strategy, on real candles, with the risk rules on and off, at its own timeframe and resampled,
//! gives bit for bit the same trades, equity curve, exposure, metrics and job errors as running the
//! full evaluation job on every candle (`full_jobs`) — while most candles do take the shortcut.

use albra_core::backtest::{self, BacktestOptions, Progress, RunResult, RunSpec};
use albra_core::data;
use albra_core::domain::{Symbol, Timeframe};
use rust_decimal::Decimal;
use std::path::PathBuf;

fn file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../data")
        .join(name)
}

fn opts(risk_off: bool, full_jobs: bool, tf: Option<Timeframe>) -> BacktestOptions {
    BacktestOptions {
        strategies: Vec::new(),
        data: Vec::new(),
        timeframe: tf,
        fee: Decimal::new(4, 4),
        slippage: Decimal::new(1, 4),
        equity: Decimal::from(10_000),
        risk_off,
        config: None,
        progress: None,
        range: None,
        full_jobs,
    }
}

fn assert_same(label: &str, quiet: &RunResult, full: &RunResult) {
    assert_eq!(
        full.quiet_candles, 0,
        "{label}: --full-jobs took the shortcut"
    );
    if let Some(i) = (0..quiet.trades.len().max(full.trades.len()))
        .find(|&i| quiet.trades.get(i) != full.trades.get(i))
    {
        panic!(
            "{label}: trade {i} of {} / {} differs:\n shortcut: {:?}\n full job: {:?}",
            quiet.trades.len(),
            full.trades.len(),
            quiet.trades.get(i),
            full.trades.get(i)
        );
    }
    assert_eq!(
        quiet.equity.len(),
        full.equity.len(),
        "{label}: curve length"
    );
    for (i, (a, b)) in quiet.equity.iter().zip(&full.equity).enumerate() {
        assert!(
            a.0 == b.0 && a.1.to_bits() == b.1.to_bits(),
            "{label}: equity point {i}: {a:?} vs {b:?}"
        );
    }
    assert_eq!(quiet.exposed, full.exposed, "{label}: exposure");
    assert_eq!(
        format!("{:?}", quiet.metrics),
        format!("{:?}", full.metrics),
        "{label}: metrics"
    );
    assert_eq!(quiet.job_errors, full.job_errors, "{label}: job errors");
}

async fn both(
    path: &std::path::Path,
    series: &std::sync::Arc<data::CandleSeries>,
    name: &str,
    risk_off: bool,
    tf: Option<Timeframe>,
    window: Option<(i64, i64)>,
) -> (RunResult, RunResult) {
    let symbol = Symbol::new("BTCUSDT");
    let mut out = Vec::new();
    for full_jobs in [false, true] {
        let o = opts(risk_off, full_jobs, tf);
        let spec = RunSpec {
            window,
            progress: None::<&Progress>,
            ..RunSpec::default()
        };
        out.push(
            backtest::run_series(&o, path, series, &symbol, name, &spec)
                .await
                .unwrap(),
        );
    }
    let full = out.pop().unwrap();
    (out.pop().unwrap(), full)
}

#[tokio::test]
async fn every_strategy_gives_the_same_results_on_the_shortcut() {
    let perp = file("BTCUSDT-perp-15m.csv");
    let perp_series = std::sync::Arc::new(data::load_csv(&perp).unwrap());
    let spot = file("BTCUSDT-spot-1h.csv");
    let spot_series = std::sync::Arc::new(data::load_csv(&spot).unwrap());
    // A year of the spot file with its Oct-2021/May-2022 swings; the strategies warm up on the
    // candles before it, as the walk-forward's windows do.
    let spot_window = Some((1_609_459_200_000, 1_640_995_200_000));
    let mut quiet_total = 0usize;
    let mut candles_total = 0usize;
    for name in albra_core::strategy::names() {
        for risk_off in [false, true] {
            for (path, series, tf, window) in [
                (&perp, &perp_series, None, None),
                (&perp, &perp_series, Some(Timeframe::H4), None),
                (&spot, &spot_series, Some(Timeframe::H1), spot_window),
            ] {
                let label = format!(
                    "{name} {} tf {tf:?} risk {}",
                    path.file_name().unwrap().to_string_lossy(),
                    if risk_off { "off" } else { "on" }
                );
                let (quiet, full) = both(path, series, name, risk_off, tf, window).await;
                assert_same(&label, &quiet, &full);
                assert!(
                    !full.trades.is_empty() || name == "TFPE",
                    "{label}: no trades"
                );
                quiet_total += quiet.quiet_candles;
                candles_total += quiet.candles;
            }
        }
    }
    // Most candles are HOLDs on unchanged state: the shortcut must actually be taken.
    assert!(
        quiet_total * 2 > candles_total,
        "shortcut taken on {quiet_total} of {candles_total} candles"
    );
}

#[tokio::test]
async fn the_ema_cross_reference_run_takes_the_shortcut_on_most_candles() {
    let spot = file("BTCUSDT-spot-1h.csv");
    let mut o = opts(true, false, None);
    o.slippage = Decimal::ZERO;
    o.strategies = vec!["EMA_CROSS".into()];
    o.data = vec![spot.clone()];
    let quiet = backtest::run(&o).await.unwrap().remove(0);
    o.full_jobs = true;
    let full = backtest::run(&o).await.unwrap().remove(0);
    assert_same("EMA_CROSS reference", &quiet, &full);
    assert_eq!(quiet.trades.len(), 307);
    // Only entries, exits and the candles right after them need the full job.
    assert!(
        quiet.quiet_candles * 100 > quiet.candles * 95,
        "{} of {} candles on the shortcut",
        quiet.quiet_candles,
        quiet.candles
    );
}
