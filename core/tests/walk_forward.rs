//! Walk-forward on real candles: each window's winner is the best in-sample grid point (checked
//! here with a naive Sharpe of our own over the full runs' curves), its out-of-sample run is the
//! same as a standalone backtest of that window, out-of-sample trades never start before their
//! window, the stitched curve compounds the windows, and the thread count changes nothing.

use albra_core::backtest::{self, BacktestOptions, RunSpec};
use albra_core::walkforward::{self as wf, GridAxis, Objective, WalkForwardOptions};
use rust_decimal::Decimal;
use std::path::PathBuf;

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/BTCUSDT-perp-15m.csv")
}

fn options(jobs: usize) -> WalkForwardOptions {
    WalkForwardOptions {
        backtest: BacktestOptions {
            strategies: vec![],
            data: vec![],
            timeframe: Some(albra_core::domain::Timeframe::H1),
            fee: Decimal::new(4, 4),
            slippage: Decimal::new(1, 4),
            equity: Decimal::from(10_000),
            risk_off: false,
            config: None,
            progress: None,
            range: None,
            full_jobs: false,
        },
        strategy: "EMA_CROSS".into(),
        data: data(),
        in_sample: 0.5,
        step_ms: wf::parse_span("30d").unwrap(),
        grid: vec![
            GridAxis::parse("fast=8,12").unwrap(),
            GridAxis::parse("slow=26,50").unwrap(),
        ],
        objective: Objective::Sharpe,
        jobs,
        progress: None,
    }
}

/// Annualised Sharpe of the per-candle returns of `curve`, written out longhand.
fn naive_sharpe(curve: &[(i64, f64)], per_year: f64) -> f64 {
    let mut rets = Vec::new();
    for i in 1..curve.len() {
        rets.push(curve[i].1 / curve[i - 1].1 - 1.0);
    }
    let n = rets.len() as f64;
    let mean = rets.iter().sum::<f64>() / n;
    let mut ss = 0.0;
    for r in &rets {
        ss += (r - mean) * (r - mean);
    }
    let sd = (ss / (n - 1.0)).sqrt();
    if sd > 0.0 {
        mean / sd * per_year.sqrt()
    } else {
        0.0
    }
}

#[test]
fn walk_forward_picks_in_sample_winners_and_trades_them_blind() {
    let opts = options(2);
    let r = wf::run(&opts).unwrap();
    assert!(r.job_errors.is_empty(), "{:?}", r.job_errors);
    assert_eq!(r.points.len(), 4);
    // 180 days, 30-day in-sample + 30-day out-of-sample rolling by 30 days: 5 windows.
    assert_eq!(
        r.windows.len(),
        5,
        "{:?}",
        r.windows.iter().map(|w| w.oos_start).collect::<Vec<_>>()
    );
    for pair in r.windows.windows(2) {
        assert_eq!(
            pair[0].oos_end, pair[1].oos_start,
            "out-of-sample windows tile"
        );
    }

    // The full runs, independently: each grid point over the whole file.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let series = std::sync::Arc::new(albra_core::data::load_csv(&data()).unwrap());
    let symbol = albra_core::domain::Symbol::new("BTCUSDT");
    let mut bt = opts.backtest.clone();
    bt.timeframe = Some(albra_core::domain::Timeframe::H1);
    let full: Vec<_> = r
        .points
        .iter()
        .map(|p| {
            let spec = RunSpec {
                params: Some(p),
                ..RunSpec::default()
            };
            rt.block_on(backtest::run_series(
                &bt,
                &data(),
                &series,
                &symbol,
                "EMA_CROSS",
                &spec,
            ))
            .unwrap()
        })
        .collect();
    let per_year = 365.25 * 24.0;
    let mut winners = std::collections::BTreeSet::new();
    for w in &r.windows {
        // Our own in-sample Sharpe of every point; the chosen one is the best.
        let scores: Vec<f64> = full
            .iter()
            .map(|run| {
                let slice: Vec<(i64, f64)> = run
                    .equity
                    .iter()
                    .copied()
                    .filter(|(t, _)| *t >= w.is_start && *t <= w.is_end)
                    .collect();
                // A window spent flat never wins (the optimiser's rule for idle sets).
                if slice.iter().all(|p| p.1 == slice[0].1) {
                    f64::NEG_INFINITY
                } else {
                    naive_sharpe(&slice, per_year)
                }
            })
            .collect();
        let best = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        assert!(
            (scores[w.best] - best).abs() < 1e-9,
            "window {}: chose {} ({}) but the best in-sample Sharpe is {best} ({scores:?})",
            w.index,
            w.best,
            scores[w.best]
        );
        assert!((w.is_score - scores[w.best]).abs() < 1e-9);
        winners.insert(w.best);

        // Its out-of-sample run is a standalone backtest of that window with the winner.
        let spec = RunSpec {
            params: Some(&r.points[w.best]),
            window: Some((w.oos_start, w.oos_end)),
            ..RunSpec::default()
        };
        let alone = rt
            .block_on(backtest::run_series(
                &bt,
                &data(),
                &series,
                &symbol,
                "EMA_CROSS",
                &spec,
            ))
            .unwrap();
        assert_eq!(alone.trades, w.oos_trades);
        for t in &w.oos_trades {
            assert!(
                t.entry_time >= w.oos_start && t.exit_time <= w.oos_end,
                "{t:?}"
            );
        }
    }
    // The stitched curve compounds the windows' returns.
    let compounded: f64 = r
        .windows
        .iter()
        .map(|w| 1.0 + w.oos_metrics.total_return)
        .product::<f64>()
        * 10_000.0;
    let last = r.stitched.last().unwrap().1;
    assert!(
        (last - compounded).abs() < 1e-6 * compounded,
        "{last} vs {compounded}"
    );
    assert_eq!(
        r.stitched.first().unwrap(),
        &(r.windows[0].oos_start, 10_000.0)
    );
    let trades: usize = r.windows.iter().map(|w| w.oos_trades.len()).sum();
    assert_eq!(r.oos_metrics.trades, trades);
    assert!(trades > 0);

    // One thread or two: the same answer.
    let one = wf::run(&options(1)).unwrap();
    assert_eq!(
        one.windows
            .iter()
            .map(|w| (w.best, w.oos_trades.clone()))
            .collect::<Vec<_>>(),
        r.windows
            .iter()
            .map(|w| (w.best, w.oos_trades.clone()))
            .collect::<Vec<_>>()
    );
    assert_eq!(one.stitched, r.stitched);
}

#[test]
fn a_grid_key_the_strategy_does_not_have_fails_before_any_run() {
    let mut opts = options(1);
    opts.grid = vec![GridAxis::parse("fastt=8,12").unwrap()];
    let e = wf::run(&opts).unwrap_err().to_string();
    assert!(e.contains("fastt"), "{e}");
    let mut opts = options(1);
    opts.in_sample = 1.0;
    let e = wf::run(&opts).unwrap_err().to_string();
    assert!(e.contains("--in-sample"), "{e}");
    let mut opts = options(1);
    opts.step_ms = wf::parse_span("200d").unwrap();
    let e = wf::run(&opts).unwrap_err().to_string();
    assert!(e.contains("no complete in-sample window"), "{e}");
}
