//! `--timerange` keeps decisions: a backtest over `START-` trades as the backtest over the whole
//! file does from START on, because the strategy still reads every candle before the range (a
//! research run feeds its strategy from the file's first candle; a shorter warm-up would leave
//! every EMA reading slightly differently and move crosses).
//!
//! Where the two must differ: a position the whole run holds across START. The ranged run starts
//! flat, so that trade (entered before START) is not in it, and it holds nothing until its first
//! entry; from then on both runs hold the same thing and trade alike. EMA_CROSS enters only on a
//! cross, where the whole run reverses, so its trades entered in the range are the same list. With
//! `--risk off` there is no risk state (equity peak, daily loss) to differ either; quantities and
//! PnL do differ (each run sizes from its own equity), so trades are compared by side, times,
//! prices and exit reason.

use albra_core::backtest::{self, BacktestOptions, RunResult};
use albra_core::domain::{Side, Timeframe, TradeRecord};
use albra_core::timerange::TimeRange;
use rust_decimal::Decimal;
use std::path::PathBuf;

fn options(file: &str, range: Option<TimeRange>, tf: Option<Timeframe>) -> BacktestOptions {
    BacktestOptions {
        strategies: vec!["EMA_CROSS".into()],
        data: vec![PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../data")
            .join(file)],
        timeframe: tf,
        fee: Decimal::new(4, 4),
        slippage: Decimal::ZERO,
        equity: Decimal::from(10_000),
        risk_off: true,
        config: None,
        progress: None,
        range,
        full_jobs: false,
    }
}

async fn one(opts: &BacktestOptions) -> RunResult {
    let mut runs = backtest::run(opts).await.unwrap();
    let r = runs.remove(0);
    assert!(r.job_errors.is_empty(), "{:?}", r.job_errors);
    r
}

type Key = (Side, i64, i64, String, String, String);

fn key(t: &TradeRecord) -> Key {
    (
        t.side,
        t.entry_time,
        t.exit_time,
        t.entry_price.to_string(),
        t.exit_price.to_string(),
        t.reason.clone(),
    )
}

/// The ranged run's trades against the whole run's trades entered on a candle of the range.
async fn check(file: &str, start: &str, tf: Option<Timeframe>) -> usize {
    let range = TimeRange::parse(&format!("{start}-")).unwrap();
    let from = range.start.unwrap();
    let full = one(&options(file, None, tf)).await;
    let ranged = one(&options(file, Some(range), tf)).await;
    let tf_ms = full.timeframe.millis();
    // Every candle of the range was evaluated, and none before it.
    let before = full.equity[1..].iter().filter(|p| p.0 <= from).count();
    assert_eq!(ranged.candles, full.candles - before, "{file} {start}");
    assert_eq!(ranged.equity[0].0, from, "the curve starts at START");
    // An entry decided on a candle opening at or after START fills a few seconds after its
    // close: at START + one candle or later.
    let in_range: Vec<Key> = full
        .trades
        .iter()
        .filter(|t| t.entry_time >= from + tf_ms)
        .map(key)
        .collect();
    let got: Vec<Key> = ranged.trades.iter().map(key).collect();
    assert!(
        got.iter().all(|k| k.1 >= from + tf_ms),
        "nothing entered before the range"
    );
    // The whole run is always in a position (EMA_CROSS reverses on every cross), so it holds
    // one across START; it closes at the first cross of the range, where the ranged run, flat
    // until then, opens the same position. From there both hold the same thing.
    assert!(
        full.trades
            .iter()
            .any(|t| t.entry_time < from + tf_ms && t.exit_time > from + tf_ms),
        "{file} {start}: the case this test is about"
    );
    assert_eq!(got, in_range, "{file} {start}");
    got.len()
}

#[tokio::test]
async fn a_ranged_backtest_trades_as_the_whole_run_from_its_start_on() {
    let mut trades = 0;
    for start in ["20250801", "20251001", "20251115", "20251230"] {
        trades += check("BTCUSDT-perp-15m.csv", start, None).await;
    }
    // At 1h from 15m candles, and on the long spot file (five years of warm-up before 2025).
    trades += check("BTCUSDT-perp-15m.csv", "20251001", Some(Timeframe::H1)).await;
    trades += check("BTCUSDT-spot-1h.csv", "20250101", None).await;
    assert!(trades > 50, "the ranges trade: {trades}");
}

#[tokio::test]
async fn an_end_cuts_the_run_and_a_range_without_candles_is_an_error_naming_the_file() {
    let full = one(&options("BTCUSDT-perp-15m.csv", None, None)).await;
    let range = TimeRange::parse("20250801-20250831").unwrap();
    let r = one(&options("BTCUSDT-perp-15m.csv", Some(range), None)).await;
    assert_eq!(r.candles, 31 * 96, "every 15m candle of August");
    let end = range.end.unwrap();
    assert!(r.trades.iter().all(|t| t.exit_time <= end + 3_000));
    // Trades entered and exited inside August, as the whole run has them.
    let whole: Vec<Key> = full
        .trades
        .iter()
        .filter(|t| t.entry_time > range.start.unwrap() + 900_000 && t.exit_time < end)
        .map(key)
        .collect();
    let got: Vec<Key> = r
        .trades
        .iter()
        .filter(|t| t.exit_time < end)
        .map(key)
        .collect();
    assert!(
        got.ends_with(&whole) || whole.ends_with(&got),
        "{got:?}\n{whole:?}"
    );

    let outside = TimeRange::parse("20300101-").unwrap();
    let err = backtest::run(&options("BTCUSDT-perp-15m.csv", Some(outside), None))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("--timerange 20300101-: ")
            && err.contains("BTCUSDT-perp-15m.csv holds no candle in it")
            && err.contains("(its candles run 20250704-20251231)"),
        "{err}"
    );
}
