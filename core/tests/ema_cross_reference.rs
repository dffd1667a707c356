//! EMA_CROSS is the reference check of the backtester: with `--fee 0.0004 --slippage 0 --risk off`
//! its trade list must equal an independent implementation of the same rules, trade for trade:
//! the peers' reference (`ema_cross_expected_*.json`, from `ema_cross_reference.py`) on two real
//! files, and a deliberately naive second loop written here.

use albra_core::backtest::{self, BacktestOptions, RunResult};
use albra_core::domain::{Side, Timeframe};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn backtest_risk_off(file: &str) -> RunResult {
    let opts = BacktestOptions {
        strategies: vec!["EMA_CROSS".into()],
        data: vec![root().join("data").join(file)],
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
    let mut runs = backtest::run(&opts).await.unwrap();
    let r = runs.remove(0);
    assert!(r.job_errors.is_empty(), "{:?}", r.job_errors);
    // The curve: the initial equity before the first candle, then one point per candle close;
    // exposure is the share of those closes with a position open.
    assert_eq!(r.equity.len(), r.candles + 1);
    assert_eq!(r.exposed.len(), r.candles);
    assert_eq!(r.equity[0].1, 10_000.0);
    assert!(r.equity.windows(2).all(|w| w[0].0 < w[1].0), "curve times");
    let held = r.exposed.iter().filter(|&&e| e).count();
    assert!(held > 0 && held < r.candles);
    assert_eq!(r.metrics.exposure, held as f64 / r.candles as f64);
    r
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0)
}

fn check_against(expected_file: &str, r: &RunResult, tf: Timeframe, last_open: i64) {
    let text = std::fs::read_to_string(root().join("tests/fixtures/reference").join(expected_file))
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let exp = doc["trades"].as_array().unwrap();
    assert_eq!(r.trades.len(), exp.len(), "trade count");
    for (i, (t, e)) in r.trades.iter().zip(exp).enumerate() {
        let side = if e["side"] == "long" {
            Side::Long
        } else {
            Side::Short
        };
        assert_eq!(t.side, side, "trade {i} side");
        assert_eq!(
            backtest::fill_open_time(t.entry_time, tf),
            e["entry_time"].as_i64().unwrap(),
            "trade {i} entry bar"
        );
        let exit_bar = backtest::fill_open_time(t.exit_time, tf);
        let want_exit = e["exit_time"].as_i64().unwrap();
        if i + 1 == exp.len() && want_exit == last_open {
            // The forced exit at the last close: ours is stamped at that close.
            assert_eq!(
                exit_bar,
                last_open + tf.millis(),
                "final exit at the last close"
            );
        } else {
            assert_eq!(exit_bar, want_exit, "trade {i} exit bar");
        }
        assert_eq!(
            t.entry_price.to_f64(),
            e["entry_price"].as_f64().unwrap(),
            "trade {i} entry price"
        );
        assert_eq!(
            t.exit_price.to_f64(),
            e["exit_price"].as_f64().unwrap(),
            "trade {i} exit price"
        );
        assert!(
            close(t.qty.to_f64(), e["size"].as_f64().unwrap(), 1e-9),
            "trade {i} size {} vs {}",
            t.qty,
            e["size"]
        );
        assert!(
            close(t.pnl.to_f64(), e["pnl"].as_f64().unwrap(), 1e-7),
            "trade {i} pnl {} vs {}",
            t.pnl.get(),
            e["pnl"]
        );
        assert!(
            close(t.fees.to_f64(), e["fees"].as_f64().unwrap(), 1e-7),
            "trade {i} fees {} vs {}",
            t.fees.get(),
            e["fees"]
        );
    }
    let final_eq = doc["final_equity"].as_f64().unwrap();
    assert!(
        close(r.metrics.final_equity, final_eq, 1e-7),
        "final equity {} vs {final_eq}",
        r.metrics.final_equity
    );
    let mdd = doc["max_drawdown"].as_f64().unwrap();
    assert!(
        (r.metrics.max_drawdown - mdd).abs() < 1e-6,
        "max drawdown {} vs {mdd}",
        r.metrics.max_drawdown
    );
    let fees = doc["total_fees"].as_f64().unwrap();
    assert!(
        close(r.metrics.fees, fees, 1e-7),
        "fees {} vs {fees}",
        r.metrics.fees
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matches_the_reference_on_six_years_of_spot_1h() {
    let r = backtest_risk_off("BTCUSDT-spot-1h.csv").await;
    check_against(
        "ema_cross_expected_spot1h.json",
        &r,
        Timeframe::H1,
        1_762_354_800_000,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matches_the_reference_on_perp_5m() {
    let r = backtest_risk_off("BTCUSDT-perp-5m.csv").await;
    check_against(
        "ema_cross_expected_perp5m.json",
        &r,
        Timeframe::M5,
        1_767_180_600_000,
    );
}

/// The rules again, as plainly as possible in f64: TA-Lib EMA seeding, cross at the close of bar
/// i → fill at the open of bar i+1, all equity, fee on every fill, forced exit at the last close.
// Index loops on purpose: this is the plain, obviously-correct version.
#[allow(clippy::needless_range_loop)]
fn naive(opens: &[f64], closes: &[f64]) -> Vec<(usize, usize, i8, f64, f64)> {
    fn ema(xs: &[f64], n: usize) -> Vec<f64> {
        let mut out = vec![f64::NAN; xs.len()];
        let k = 2.0 / (n as f64 + 1.0);
        let mut s = 0.0;
        for x in &xs[..n] {
            s += x;
        }
        let mut prev = s / n as f64;
        out[n - 1] = prev;
        for i in n..xs.len() {
            prev = (xs[i] - prev) * k + prev;
            out[i] = prev;
        }
        out
    }
    let (f, s) = (ema(closes, 50), ema(closes, 200));
    let mut trades = Vec::new();
    let (mut pos, mut entry_i, mut equity, mut size, mut entry_px) =
        (0i8, 0usize, 10_000.0f64, 0.0f64, 0.0f64);
    for i in 1..opens.len() {
        let j = i - 1;
        if j < 200 {
            continue;
        }
        let (d0, d1) = (f[j - 1] - s[j - 1], f[j] - s[j]);
        let want = if d0 <= 0.0 && d1 > 0.0 {
            1
        } else if d0 >= 0.0 && d1 < 0.0 {
            -1
        } else {
            0
        };
        if want != 0 && want != pos {
            let px = opens[i];
            if pos != 0 {
                equity += pos as f64 * size * (px - entry_px) - size * px * 0.0004;
                trades.push((entry_i, i, pos, entry_px, px));
            }
            pos = want;
            size = equity / px;
            entry_px = px;
            entry_i = i;
            equity -= size * px * 0.0004;
        }
    }
    if pos != 0 {
        trades.push((
            entry_i,
            opens.len() - 1,
            pos,
            entry_px,
            *closes.last().unwrap(),
        ));
    }
    trades
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matches_a_naive_second_loop_on_perp_15m() {
    let r = backtest_risk_off("BTCUSDT-perp-15m.csv").await;
    let series = albra_core::data::load_csv(&root().join("data/BTCUSDT-perp-15m.csv")).unwrap();
    let opens: Vec<f64> = series.candles.iter().map(|c| c.open.to_f64()).collect();
    let closes: Vec<f64> = series.candles.iter().map(|c| c.close.to_f64()).collect();
    let want = naive(&opens, &closes);
    assert!(
        want.len() > 50,
        "the naive loop finds the crosses: {}",
        want.len()
    );
    assert_eq!(r.trades.len(), want.len());
    for (t, (ei, xi, side, epx, xpx)) in r.trades.iter().zip(&want) {
        assert_eq!(t.side.sign().to_i8().unwrap(), *side);
        assert_eq!(
            backtest::fill_open_time(t.entry_time, Timeframe::M15),
            series.candles[*ei].open_time
        );
        if *xi + 1 < series.candles.len() {
            assert_eq!(
                backtest::fill_open_time(t.exit_time, Timeframe::M15),
                series.candles[*xi].open_time
            );
        }
        assert_eq!(t.entry_price.to_f64(), *epx);
        assert_eq!(t.exit_price.to_f64(), *xpx);
    }
}
