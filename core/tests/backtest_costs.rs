//! What a backtest's trades carry beyond prices: funding and why they closed. The paper exchange
//! charges recorded funding rates, the jobs attribute them to the trades, and nothing is lost on
//! the way — the wallet moves by exactly the trades' PnL (funding included) once every position
//! is closed, and the trades' funding is what the exchange charged. The quiet-candle shortcut
//! stays exact with funding charged. Each trade records its exit reason.

use albra_core::backtest::{self, BacktestOptions, FundingFile, RunResult, RunSpec};
use albra_core::data::{self, CandleSeries, FundingRate};
use albra_core::domain::{Candle, Price, Symbol, Timeframe};
use proptest::prelude::*;
use rust_decimal::Decimal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// 2024-01-01 00:00 UTC, a funding time.
const START: i64 = 1_704_067_200_000;
const H: i64 = 3_600_000;

fn opts(risk_off: bool, full_jobs: bool) -> BacktestOptions {
    BacktestOptions {
        strategies: Vec::new(),
        data: Vec::new(),
        timeframe: None,
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

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Hourly candles of a random walk from 40,000 (steps of up to ±1.5 %, wicks up to 1 %).
fn walk(steps: &[(i32, u8, u8)]) -> CandleSeries {
    let mut price = Decimal::from(40_000);
    let candles = steps
        .iter()
        .enumerate()
        .map(|(i, &(step, up, down))| {
            let open = price;
            let close = (open * (Decimal::ONE + Decimal::new(step.into(), 4))).round_dp(1);
            let hi = open.max(close) * (Decimal::ONE + Decimal::new(up.into(), 4));
            let lo = open.min(close) * (Decimal::ONE - Decimal::new(down.into(), 4));
            price = close;
            Candle {
                open_time: START + i as i64 * H,
                open: Price::new(open),
                high: Price::new(hi.round_dp(1)),
                low: Price::new(lo.round_dp(1)),
                close: Price::new(close),
                volume: Decimal::ONE,
            }
        })
        .collect();
    CandleSeries::new(candles, Timeframe::H1)
}

/// A rate at every 8-hour funding time of `hours` hours: (rate in 1e-6, mark price or none).
fn rates(draws: &[(i32, Option<u32>)]) -> Arc<[FundingRate]> {
    draws
        .iter()
        .enumerate()
        .map(|(k, &(rate, mark))| FundingRate {
            time: START + (k as i64 + 1) * 8 * H,
            rate: Decimal::new(rate.into(), 6),
            mark_price: mark.map(Decimal::from),
        })
        .collect::<Vec<_>>()
        .into()
}

fn params(text: &str) -> toml::Table {
    text.parse().expect("params")
}

async fn run(
    o: &BacktestOptions,
    series: &Arc<CandleSeries>,
    name: &str,
    spec: &RunSpec<'_>,
    funding: Option<&FundingFile>,
) -> RunResult {
    let path = Path::new("BTCUSDT-1h.csv");
    let symbol = Symbol::new("BTCUSDT");
    let spec = RunSpec {
        params: spec.params,
        window: spec.window,
        progress: spec.progress,
        funding,
    };
    backtest::run_series(o, path, series, &symbol, name, &spec)
        .await
        .expect("backtest")
}

/// The books balance: wallet change = Σ trade PnL (fees and funding included), Σ trade funding
/// = what the exchange charged, every trade accounted for.
fn assert_books_balance(label: &str, r: &RunResult, equity: Decimal) {
    assert!(r.job_errors.is_empty(), "{label}: {:?}", r.job_errors);
    let pnl: Decimal = r.trades.iter().map(|t| t.pnl.get()).sum();
    let funding: Decimal = r.trades.iter().map(|t| t.funding.get()).sum();
    assert_eq!(r.final_wallet - equity, pnl, "{label}: wallet vs trades");
    assert_eq!(
        funding, r.funding.total,
        "{label}: trades' funding vs charged"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_wallet_moves_by_the_trades_pnl_funding_included(
        steps in prop::collection::vec((-150i32..150, 0u8..100, 0u8..100), 120..260),
        draws in prop::collection::vec((-800i32..800, prop::option::of(30_000u32..50_000)), 40),
        risk_off in any::<bool>(),
        fast in 2usize..6,
    ) {
        let series = Arc::new(walk(&steps));
        let file = FundingFile { path: PathBuf::from("BTCUSDT-funding.csv"), rates: rates(&draws) };
        let p = params(&format!("fast = {fast}\nslow = {}", fast + 5));
        let spec = RunSpec { params: Some(&p), ..RunSpec::default() };
        let o = opts(risk_off, false);
        let r = block_on(run(&o, &series, "EMA_CROSS", &spec, Some(&file)));
        assert_books_balance("EMA_CROSS", &r, o.equity);
        prop_assert!(r.funding.payments <= draws.len());
        if r.trades.iter().any(|t| !t.funding.is_zero()) {
            prop_assert!(r.funding.payments > 0);
        }
    }
}

/// Without funding data nothing is charged, and a run is exactly the run with an empty file.
#[test]
fn no_funding_file_charges_nothing_and_changes_nothing() {
    let steps: Vec<(i32, u8, u8)> = (0..300)
        .map(|i| (((i * 37) % 200) - 100, (i % 50) as u8, (i % 70) as u8))
        .collect();
    let series = Arc::new(walk(&steps));
    let p = params("fast = 3\nslow = 8");
    let spec = RunSpec {
        params: Some(&p),
        ..RunSpec::default()
    };
    for risk_off in [false, true] {
        let o = opts(risk_off, false);
        let none = block_on(run(&o, &series, "EMA_CROSS", &spec, None));
        let empty = FundingFile {
            path: PathBuf::from("BTCUSDT-funding.csv"),
            rates: Vec::new().into(),
        };
        let with_empty = block_on(run(&o, &series, "EMA_CROSS", &spec, Some(&empty)));
        assert!(!none.trades.is_empty());
        assert_eq!(none.funding, backtest::FundingCharged::default());
        assert!(none.trades.iter().all(|t| t.funding.is_zero()));
        assert_eq!(none.trades, with_empty.trades);
        assert_eq!(none.equity, with_empty.equity);
        assert_books_balance("no funding", &none, o.equity);
    }
}

/// With funding charged, the quiet-candle shortcut (which marks equity without asking the
/// exchange) still gives bit for bit the full job's trades and curve: a quiet stretch ends at
/// each funding time while a position is open.
#[test]
fn the_quiet_path_stays_exact_with_funding() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/BTCUSDT-spot-1h.csv");
    let series = Arc::new(data::load_csv(&path).expect("candles"));
    let first = series.candles[0].open_time;
    let draws: Vec<(i32, Option<u32>)> = (0..400)
        .map(|k| {
            (
                (k * 53 % 300) - 100,
                (k % 3 == 0).then_some(7_000 + k as u32),
            )
        })
        .collect();
    let file = FundingFile {
        path: PathBuf::from("BTCUSDT-funding.csv"),
        rates: rates(&draws)
            .iter()
            .map(|r| FundingRate {
                time: r.time - START + first - first % (8 * H),
                ..*r
            })
            .collect::<Vec<_>>()
            .into(),
    };
    let window = (first, first + 2_400 * H);
    let spec = RunSpec {
        window: Some(window),
        ..RunSpec::default()
    };
    for risk_off in [true, false] {
        let quick = block_on(run(
            &opts(risk_off, false),
            &series,
            "EMA_CROSS",
            &spec,
            Some(&file),
        ));
        let full = block_on(run(
            &opts(risk_off, true),
            &series,
            "EMA_CROSS",
            &spec,
            Some(&file),
        ));
        let label = format!("risk_off={risk_off}");
        assert!(quick.funding.payments > 0, "{label}");
        assert!(quick.quiet_candles > 0, "{label}");
        assert_eq!(quick.trades, full.trades, "{label}");
        assert_eq!(quick.funding, full.funding, "{label}");
        let bits = |r: &RunResult| -> Vec<(i64, u64)> {
            r.equity.iter().map(|&(t, e)| (t, e.to_bits())).collect()
        };
        assert_eq!(bits(&quick), bits(&full), "{label}: equity curve");
        assert_books_balance(&label, &quick, Decimal::from(10_000));
    }
}

/// A protective stop that fires records `stop`, the strategy's close `signal`, and what is open
/// when the data ends `end_of_data`.
#[test]
fn each_trade_says_why_it_closed() {
    // Down, up (a long), a crash through its stop, up again (a long held to the end).
    let mut steps: Vec<(i32, u8, u8)> = vec![(-40, 5, 5); 30];
    steps.extend(vec![(60, 5, 5); 12]);
    steps.push((-1000, 5, 250));
    steps.extend(vec![(-60, 5, 5); 12]);
    steps.extend(vec![(80, 5, 5); 12]);
    let series = Arc::new(walk(&steps));
    let p = params("fast = 2\nslow = 5");
    let spec = RunSpec {
        params: Some(&p),
        ..RunSpec::default()
    };
    let r = block_on(run(&opts(false, false), &series, "EMA_CROSS", &spec, None));
    assert!(r.job_errors.is_empty(), "{:?}", r.job_errors);
    let reasons: Vec<&str> = r.trades.iter().map(|t| t.reason.as_str()).collect();
    assert_eq!(
        reasons,
        ["stop", "signal", "end_of_data"],
        "{:#?}",
        r.trades
    );
}
