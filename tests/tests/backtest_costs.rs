//! `albra backtest` as a process over a small candle file, with and without a funding file
//! beside it: the trades CSV's appended `funding` and `exit_reason` columns, each trade's funding
//! equal to the payments computed here by hand from the funding file, the summary's funding and
//! exit lines, and `--breakdown` tables (an unknown dimension exits 2).

use albra_tests::harness::bin;
use rust_decimal::Decimal;
use std::path::Path;
use std::process::Command;
use std::str::FromStr;

/// 2024-01-01 00:00 UTC.
const START: i64 = 1_704_067_200_000;
const H: i64 = 3_600_000;
/// Candles in the file: ends at 03:00 on day 30, not at a funding time.
const CANDLES: i64 = 699;

fn albra(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin("albra"))
        .current_dir(dir)
        .args(args)
        .env_remove("ALBRA_CONFIG")
        .output()
        .expect("run albra");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The open of hourly candle `i`: a wave of ±20 % around 40,000 with a 300-candle period, so the
/// EMA(50)/EMA(200) cross several times.
fn open(i: i64) -> Decimal {
    let x = 40_000.0 * (1.0 + 0.2 * (i as f64 * std::f64::consts::TAU / 300.0).sin());
    Decimal::from_str(&format!("{x:.1}")).unwrap()
}

fn write_candles(dir: &Path) -> std::path::PathBuf {
    let mut s = String::from("open_time,open,high,low,close,volume\n");
    for i in 0..CANDLES {
        let (o, c) = (open(i), open(i + 1));
        let (hi, lo) = (o.max(c) + Decimal::from(5), o.min(c) - Decimal::from(5));
        s.push_str(&format!("{},{o},{hi},{lo},{c},1\n", START + i * H));
    }
    let path = dir.join("BTCUSDT-1h.csv");
    std::fs::write(&path, s).unwrap();
    path
}

/// One funding event (time, rate, file mark) every 8 hours of the data: rates of both signs, a
/// mark on every other row (the others are charged at the candle's open).
fn funding_rows() -> Vec<(i64, Decimal, Option<Decimal>)> {
    (1..)
        .map(|k: i64| START + k * 8 * H)
        .take_while(|&t| t < START + CANDLES * H)
        .enumerate()
        .map(|(k, t)| {
            let rate = Decimal::new([100, -35, 260, 7][k % 4], 6);
            let mark = (k % 2 == 0).then(|| Decimal::new(398_765 + k as i64 * 10, 1));
            (t, rate, mark)
        })
        .collect()
}

fn write_funding(dir: &Path) {
    let mut s = String::from("funding_time,funding_rate,mark_price\n");
    for (t, rate, mark) in funding_rows() {
        let mark = mark.map(|m| m.to_string()).unwrap_or_default();
        s.push_str(&format!("{t},{rate},{mark}\n"));
    }
    std::fs::write(dir.join("BTCUSDT-funding.csv"), s).unwrap();
}

fn ms(iso: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(iso)
        .unwrap()
        .timestamp_millis()
}

/// The funding a trade should carry, computed from the funding file: every funding time after
/// the entry's fill (a few seconds into the candle `entry` opened) up to its exit, on the
/// trade's quantity, at the file's mark or the candle's open, a long paying a positive rate.
fn expected_funding(side: &str, qty: Decimal, entry: i64, exit: i64) -> (usize, Decimal) {
    let sign = if side == "LONG" { -1 } else { 1 };
    let due: Vec<Decimal> = funding_rows()
        .into_iter()
        .filter(|(t, _, _)| *t > entry && *t <= exit)
        .map(|(t, rate, mark)| {
            let mark = mark.unwrap_or_else(|| open((t - START) / H));
            (Decimal::from(sign) * qty * mark * rate).round_dp(8)
        })
        .collect();
    (due.len(), due.iter().sum())
}

fn backtest(
    dir: &Path,
    data: &Path,
    trades: &Path,
    extra: &[&str],
) -> (Option<i32>, String, String) {
    let mut args = vec![
        "--config",
        "none",
        "backtest",
        "--strategy",
        "EMA_CROSS",
        "--data",
        data.to_str().unwrap(),
        "--fee",
        "0.0004",
        "--slippage",
        "0",
        "--risk",
        "off",
        "--trades-out",
        trades.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    albra(dir, &args)
}

#[test]
fn funding_beside_the_candles_is_charged_to_each_trade_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_candles(dir.path());
    let trades = dir.path().join("trades.csv");

    // Without a funding file: no funding, and the summary says why.
    let (code, out, err) = backtest(dir.path(), &data, &trades, &[]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains(
            "EMA_CROSS BTCUSDT 1h funding: no data (no BTCUSDT-funding.csv beside the candles)"
        ),
        "{out}"
    );
    let csv = std::fs::read_to_string(&trades).unwrap();
    assert!(csv.starts_with("strategy,symbol,side,entry_time,exit_time,entry_price,exit_price,qty,pnl,fees,funding,exit_reason\n"), "{csv}");
    let unfunded: Vec<Vec<String>> = rows(&csv);
    assert!(unfunded.len() >= 3, "{csv}");
    assert!(unfunded.iter().all(|r| r[10] == "0"), "{csv}");

    write_funding(dir.path());
    let (code, out, err) = backtest(dir.path(), &data, &trades, &["--breakdown", "exit,month"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let csv = std::fs::read_to_string(&trades).unwrap();
    let funded = rows(&csv);
    assert_eq!(funded.len(), unfunded.len(), "{csv}");
    let (mut payments, mut total) = (0, Decimal::ZERO);
    let cell = |row: &Vec<String>, i: usize| Decimal::from_str(&row[i]).unwrap();
    for (r, before) in funded.iter().zip(&unfunded) {
        // Same fills (quantities differ: all equity goes into each entry, funding moved it).
        assert_eq!(r[..7], before[..7], "funding moves no fill: {r:?}");
        let (n, want) = expected_funding(&r[2], cell(r, 7), ms(&r[3]), ms(&r[4]));
        assert_eq!(cell(r, 10), want, "{r:?}");
        payments += n;
        total += want;
    }
    // PnL is net of funding: the first trade (the same quantity either way) differs by exactly
    // its funding.
    let (first, before) = (&funded[0], &unfunded[0]);
    assert_eq!(first[7], before[7]);
    assert_eq!(
        cell(first, 8) - cell(before, 8),
        cell(first, 10),
        "{first:?}"
    );
    assert!(payments > 10 && !total.is_zero(), "{payments} {total}");
    let reasons: Vec<&str> = funded.iter().map(|r| r[11].as_str()).collect();
    assert_eq!(reasons.last(), Some(&"end_of_data"), "{csv}");
    assert!(
        reasons[..reasons.len() - 1].iter().all(|r| *r == "signal"),
        "{csv}"
    );
    assert!(
        out.contains(&format!(
            "EMA_CROSS BTCUSDT 1h funding: {payments} payments, {total:.2} USDT"
        )),
        "{out}"
    );
    let signals = reasons.len() - 1;
    assert!(
        out.contains(&format!(
            "EMA_CROSS BTCUSDT 1h exits: end_of_data 1, signal {signals}"
        )),
        "{out}"
    );
    // The breakdown tables end in the totals.
    assert!(out.contains("by exit") && out.contains("by month"), "{out}");
    let total_lines: Vec<&str> = out.lines().filter(|l| l.starts_with("total ")).collect();
    assert_eq!(total_lines.len(), 2, "{out}");
    for l in total_lines {
        let cells: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(cells[1], funded.len().to_string(), "{l}");
        assert_eq!(cells[5], format!("{total:.2}"), "{l}");
    }
}

#[test]
fn an_unknown_breakdown_dimension_exits_2_naming_the_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_candles(dir.path());
    let trades = dir.path().join("trades.csv");
    let (code, out, err) = backtest(dir.path(), &data, &trades, &["--breakdown", "month,week"]);
    assert_eq!(code, Some(2), "{out}\n{err}");
    assert!(
        err.contains("unknown breakdown dimension `week` (valid: month, symbol, exit, strategy)"),
        "{err}"
    );
}

/// The data rows of a trades CSV, split into cells.
fn rows(csv: &str) -> Vec<Vec<String>> {
    csv.lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}
