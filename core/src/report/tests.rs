use super::*;
use crate::domain::{Notional, Price, Qty, Side, Symbol};
use proptest::prelude::*;
use rust_decimal_macros::dec;

const DAY: i64 = 86_400_000;
/// 2026-12-07 00:00 UTC.
const D0: i64 = 1_796_601_600_000;

fn point(at: i64, equity: Decimal, w: Option<u32>) -> EquityPoint {
    EquityPoint {
        at,
        equity,
        api_weight_1m: w,
    }
}

fn trade(strategy: &str, pnl: Decimal, funding: Decimal, exit_time: i64) -> TradeRecord {
    TradeRecord {
        id: format!("{strategy}-{exit_time}"),
        account: AccountId::new("main"),
        strategy: StrategyId::new(strategy),
        symbol: Symbol::new("BTCUSDT"),
        side: Side::Long,
        qty: Qty::new(dec!(1)),
        entry_price: Price::new(dec!(100)),
        exit_price: Price::new(dec!(100) + pnl),
        entry_time: exit_time - 1,
        exit_time,
        pnl: Notional::new(pnl),
        fees: Notional::new(dec!(0.5)),
        funding: Notional::new(funding),
        reason: "signal".into(),
        stop_loss: None,
    }
}

fn data(points: Vec<EquityPoint>, trades: Vec<TradeRecord>) -> Vec<AccountData> {
    vec![AccountData {
        account: AccountId::new("main"),
        points,
        trades,
    }]
}

#[test]
fn the_daily_window_is_the_last_complete_utc_day_and_the_weekly_the_seven_before_today() {
    let now = D0 + 5 * 3_600_000;
    assert_eq!(
        Window::of(ReportKind::Daily, now),
        Window {
            start: D0 - DAY,
            end: D0
        }
    );
    assert_eq!(Window::of(ReportKind::Weekly, now).start, D0 - 7 * DAY);
    assert_eq!(Window::of(ReportKind::Daily, D0).start, D0 - DAY);
    assert_eq!(ReportKind::parse("weekly"), Some(ReportKind::Weekly));
    assert_eq!(ReportKind::parse("monthly"), None);
}

#[test]
fn a_daily_report_has_return_drawdown_trades_fees_funding_and_weight() {
    let start = D0 - DAY;
    let points = vec![
        point(start - 60_000, dec!(999), Some(1)), // before: the previous close only
        point(start, dec!(1000), Some(10)),
        point(start + 3_600_000, dec!(1100), Some(30)),
        point(start + 7_200_000, dec!(880), None),
        point(start + 10_800_000, dec!(1050), Some(20)),
        point(D0, dec!(5000), Some(99)), // the next day: outside
    ];
    let trades = vec![
        trade("EMA_CROSS", dec!(60), dec!(-1), start + 100),
        trade("EMA_CROSS", dec!(-20), dec!(0.5), start + 200),
        trade("RSI", dec!(10), dec!(0), start + 300),
        trade("RSI", dec!(1000), dec!(0), start - 1), // the day before: outside
    ];
    let r = build(ReportKind::Daily, D0 + 1, &data(points, trades));
    let a = &r.accounts[0];
    let e = a.equity.as_ref().unwrap();
    assert_eq!(
        (e.start_equity, e.end_equity, e.points),
        (dec!(1000), dec!(1050), 4)
    );
    assert!((e.return_frac.unwrap() - 0.05).abs() < 1e-12);
    assert!((e.max_drawdown - 0.2).abs() < 1e-12, "{}", e.max_drawdown);
    assert_eq!((e.daily_returns, e.sharpe), (1, None));
    assert_eq!(a.total.trades, 3);
    assert_eq!(a.total.wins, 2);
    assert_eq!(a.total.pnl, dec!(50));
    assert_eq!(a.total.fees, dec!(1.5));
    assert_eq!(a.total.funding, dec!(-0.5));
    assert!((a.total.return_frac.unwrap() - 0.05).abs() < 1e-12);
    let names: Vec<_> = a
        .strategies
        .iter()
        .map(|s| s.strategy.clone().unwrap().0)
        .collect();
    assert_eq!(names, ["EMA_CROSS", "RSI"]);
    assert_eq!(a.strategies[0].win_rate, Some(dec!(0.5)));
    let w = a.api_weight.unwrap();
    assert_eq!((w.samples, w.peak_1m), (3, 30));
    assert!((w.mean_1m - 20.0).abs() < 1e-12);
    assert_eq!(a.curve.len(), 4);
    assert!((a.curve[2].drawdown - 0.2).abs() < 1e-12);
}

#[test]
fn a_weekly_sharpe_is_the_annualised_ratio_of_the_daily_closes_returns() {
    let start = D0 - 7 * DAY;
    // One point at the open of each day and one at its close: closes 100, 110, 99, 108.9.
    let closes = [dec!(110), dec!(99), dec!(108.9)];
    let mut points = vec![point(start - 1000, dec!(100), None)];
    for (i, c) in closes.iter().enumerate() {
        let day = start + i as i64 * DAY;
        points.push(point(day, dec!(100), None));
        points.push(point(day + DAY - 1000, *c, None));
    }
    let r = build(ReportKind::Weekly, D0, &data(points, vec![]));
    let e = r.accounts[0].equity.clone().unwrap();
    assert_eq!(e.daily_returns, 3);
    let rs = [0.1, -0.1, 0.1];
    let mean = 0.1 / 3.0;
    let sd = (rs.iter().map(|r: &f64| (r - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
    assert!((e.sharpe.unwrap() - mean / sd * 365f64.sqrt()).abs() < 1e-9);
    assert_eq!(sharpe(&[0.01, 0.01, 0.01]), None, "no spread, no ratio");
}

#[test]
fn an_empty_period_says_so_in_words_and_has_no_nan() {
    let r = build(ReportKind::Daily, D0, &data(vec![], vec![]));
    let a = &r.accounts[0];
    assert!(a.equity.is_none() && a.api_weight.is_none() && a.curve.is_empty());
    assert_eq!(
        (a.total.trades, a.total.win_rate, a.total.return_frac),
        (0, None, None)
    );
    let notes = a.notes.join("\n");
    assert!(notes.contains("no equity points"), "{notes}");
    assert!(notes.contains("no trades closed"), "{notes}");
    let json = serde_json::to_string(&r).unwrap();
    assert!(
        !json.contains("NaN") && !json.contains("null,\"max"),
        "{json}"
    );
}

proptest! {
    #[test]
    fn drawdown_is_a_fraction_and_the_return_matches_the_endpoints(
        equities in prop::collection::vec(1u32..1_000_000, 1..60),
        weights in prop::collection::vec(prop::option::of(0u32..2400), 60),
    ) {
        let start = D0 - 7 * DAY;
        let points: Vec<EquityPoint> = equities
            .iter()
            .enumerate()
            .map(|(i, e)| point(start + i as i64 * 2 * 3_600_000, Decimal::from(*e), weights[i]))
            .collect();
        let r = build(ReportKind::Weekly, D0, &data(points, vec![]));
        let a = &r.accounts[0];
        let e = a.equity.as_ref().unwrap();
        prop_assert!((0.0..=1.0).contains(&e.max_drawdown));
        prop_assert!(a.curve.iter().all(|c| (0.0..=1.0).contains(&c.drawdown)));
        let (first, last) = (f64::from(equities[0]), f64::from(*equities.last().unwrap()));
        prop_assert!((e.return_frac.unwrap() - (last / first - 1.0)).abs() < 1e-9);
        prop_assert!(e.sharpe.is_none_or(f64::is_finite));
        // A drawdown never exceeds the fall from the best point to the worst after it.
        prop_assert!(e.return_frac.unwrap() >= -e.max_drawdown - 1e-9);
        if let Some(w) = a.api_weight {
            prop_assert!(w.mean_1m <= f64::from(w.peak_1m) + 1e-9);
        }
    }
}

const Q: i64 = 15 * 60_000;

#[test]
fn the_combined_curve_sums_each_accounts_latest_reading_once_all_have_one() {
    let main = [
        point(Q + 5_000, dec!(100), Some(3)),
        point(2 * Q + 1, dec!(110), None),
        point(4 * Q, dec!(90), None),
    ];
    // sub1 starts a bucket later and skips the third bucket: its 50 carries forward.
    let sub1 = [
        point(2 * Q + 9, dec!(50), None),
        point(4 * Q + 7, dec!(60), None),
    ];
    let got: Vec<_> = combined_points(&[&main, &sub1])
        .into_iter()
        .map(|p| (p.at, p.equity, p.api_weight_1m))
        .collect();
    assert_eq!(
        got,
        [(2 * Q, dec!(160), None), (4 * Q, dec!(150), None)],
        "no sum before sub1's first reading; each bucket any account has"
    );
    assert!(combined_points(&[]).is_empty());
    assert!(combined_points(&[&main, &[]]).is_empty());
}

proptest! {
    /// One account's combined curve is its own readings, one per bucket (the bucket's latest),
    /// and a sum of accounts is never below any one account's share at the same bucket.
    #[test]
    fn combined_points_of_one_account_are_its_bucket_closes(
        steps in proptest::collection::vec((1i64..3 * Q, 1u32..10_000), 1..60),
        other in 1u32..10_000,
    ) {
        let mut at = 0;
        let points: Vec<EquityPoint> = steps
            .iter()
            .map(|(dt, e)| {
                at += dt;
                point(at, Decimal::from(*e), None)
            })
            .collect();
        let one = combined_points(&[&points]);
        let mut expect: Vec<(i64, Decimal)> = Vec::new();
        for p in &points {
            let b = crate::state::equity_bucket(p.at);
            match expect.last_mut() {
                Some(last) if last.0 == b => last.1 = p.equity,
                _ => expect.push((b, p.equity)),
            }
        }
        let got: Vec<_> = one.iter().map(|p| (p.at, p.equity)).collect();
        prop_assert_eq!(got, expect);
        let flat = [point(0, Decimal::from(other), None)];
        let two = combined_points(&[&points, &flat]);
        prop_assert_eq!(two.len(), one.len());
        for (s, o) in two.iter().zip(&one) {
            prop_assert_eq!(s.equity, o.equity + Decimal::from(other));
        }
    }
}
