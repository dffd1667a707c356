//! The backtest's HTML report in a real browser: `albra backtest --report` over real candles,
//! opened in headless Chromium, its figures read back against the trades CSV the same run wrote,
//! its charts drawn with every trade marked, its trade table sorted by a click. A screenshot
//! lands in `$CARGO_TARGET_DIR/dashboard-screenshots/`.

use albra_tests::browser::Browser;
use albra_tests::harness;
use rust_decimal::Decimal;
use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_shows_the_runs_figures_charts_and_a_sortable_trade_table() {
    let dir = tempfile::tempdir().unwrap();
    let root = albra_tests::moto::workspace_root();
    let src = std::fs::read_to_string(root.join("data/BTCUSDT-perp-15m.csv")).unwrap();
    let rows: Vec<&str> = src.lines().take(6001).collect();
    let data = dir.path().join("BTCUSDT-perp-15m.csv");
    std::fs::write(&data, rows.join("\n") + "\n").unwrap();
    // Funding every 8 hours over the slice: 0.01 % (longs pay), the mark left to the candles.
    let first: i64 = rows[1].split(',').next().unwrap().parse().unwrap();
    let eight = 8 * 3_600_000;
    let mut funding = String::from("funding_time,funding_rate,mark_price\n");
    let mut t = first - first.rem_euclid(eight) + eight;
    while t < first + 6000 * 900_000 {
        funding.push_str(&format!("{t},0.0001,\n"));
        t += eight;
    }
    std::fs::write(dir.path().join("BTCUSDT-funding.csv"), funding).unwrap();
    let (report, trades) = (dir.path().join("r.html"), dir.path().join("t.csv"));
    let out = Command::new(harness::bin("albra"))
        .current_dir(dir.path())
        .args(["backtest", "--strategy", "EMA_CROSS", "--timeframe", "1h"])
        .args(["--data", data.to_str().unwrap()])
        .args(["--report", report.to_str().unwrap()])
        .args(["--trades-out", trades.to_str().unwrap()])
        .env_remove("ALBRA_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The trades the same run wrote: count and PnL.
    let csv = std::fs::read_to_string(&trades).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let pnl_col = header.iter().position(|h| *h == "pnl").unwrap();
    let pnls: Vec<Decimal> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(pnl_col).unwrap().parse().unwrap())
        .collect();
    assert!(pnls.len() >= 3, "the slice trades: {csv}");

    let b = Browser::start().await.unwrap();
    b.goto(&format!("file://{}", report.display()))
        .await
        .unwrap();
    b.wait_for("#candles-0 canvas", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        b.text("tr.run [data-field='trades']").await.unwrap(),
        pnls.len().to_string()
    );
    assert_eq!(b.count("#trades-0 tr.trade").await.unwrap(), pnls.len());
    let shown: Vec<Decimal> = b
        .texts("#trades-0 [data-field='pnl']")
        .await
        .unwrap()
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
    let rounded: Vec<Decimal> = pnls.iter().map(|p| p.round_dp(2)).collect();
    assert_eq!(shown, rounded, "each trade's PnL, in the run's order");
    // The summary's return and final equity are the stdout table's.
    let ret = b.text("tr.run [data-field='return']").await.unwrap();
    let line = stdout
        .lines()
        .find(|l| l.starts_with("EMA_CROSS"))
        .unwrap_or_else(|| panic!("{stdout}"));
    let printed: Vec<&str> = line.split_whitespace().collect();
    let printed_return: f64 = printed[5].trim_end_matches('%').parse().unwrap();
    let shown_return: f64 = ret.trim_end_matches('%').parse().unwrap();
    assert!(
        (printed_return - shown_return).abs() < 0.006,
        "{line} vs {ret}"
    );

    // Charts: every equity point, an entry and an exit mark per trade on the equity; on the
    // candles also each trade's stop.
    let drawn = b.eval("return window.albraReport.runs[0]").await.unwrap();
    assert!(drawn["equity"].as_u64().unwrap() > 1400, "{drawn}");
    assert_eq!(drawn["equity"], drawn["drawdown"]);
    assert_eq!(
        drawn["equityMarks"].as_u64().unwrap(),
        2 * pnls.len() as u64
    );
    let stops = b
        .eval("return JSON.parse(document.getElementById('albra-runs').textContent)[0].trades.filter(function (t) { return t.stop_loss; }).length")
        .await
        .unwrap();
    assert_eq!(
        drawn["candleMarks"].as_u64().unwrap(),
        2 * pnls.len() as u64 + stops.as_u64().unwrap()
    );
    assert!(drawn["candles"].as_u64().unwrap() > 1400);
    assert!(b.count("#parameters tr").await.unwrap() >= 5);

    // A click on the PnL header sorts ascending, a second descending.
    let first_after_click = || async {
        b.click("#trades-0 thead th:nth-child(8)").await.unwrap();
        let top = "#trades-0 tbody tr:first-child [data-field='pnl']";
        b.text(top).await.unwrap().parse::<Decimal>().unwrap()
    };
    assert_eq!(first_after_click().await, *rounded.iter().min().unwrap());
    assert_eq!(first_after_click().await, *rounded.iter().max().unwrap());

    // The breakdowns add up to the trades, and the exit reasons are the summary's.
    let totals = b
        .texts("table.breakdown tr:last-child td:nth-child(2)")
        .await
        .unwrap();
    assert_eq!(totals.len(), 4, "month, symbol, exit, strategy");
    assert!(
        totals.iter().all(|t| *t == pnls.len().to_string()),
        "{totals:?}"
    );
    let pnl_totals = b
        .texts("table.breakdown tr:last-child td:nth-child(4)")
        .await
        .unwrap();
    let sum: Decimal = pnls.iter().sum();
    assert!(
        pnl_totals
            .iter()
            .all(|t| *t == format!("{:.2}", sum.round_dp(2))),
        "{pnl_totals:?}"
    );
    let exits_line = stdout.lines().find(|l| l.contains(" exits: ")).unwrap();
    let exit_rows = b.eval("return Array.from(document.querySelectorAll('table.breakdown')).find(function (t) { return t.previousElementSibling.textContent === 'By exit'; }).querySelectorAll('tr').length").await.unwrap();
    assert_eq!(
        exit_rows.as_u64().unwrap() as usize,
        exits_line.split(": ").nth(1).unwrap().split(", ").count() + 2,
        "a row per reason, a header and a total: {exits_line}"
    );
    // Funding: charged per trade, its sum the run's total in the parameters.
    let funding_col = header.iter().position(|h| *h == "funding").unwrap();
    let funding: Decimal = csv
        .lines()
        .skip(1)
        .map(|l| {
            l.split(',')
                .nth(funding_col)
                .unwrap()
                .parse::<Decimal>()
                .unwrap()
        })
        .sum();
    assert!(funding != Decimal::ZERO, "funding was charged");
    let params = b.text("#parameters").await.unwrap();
    assert!(
        params.contains(&format!("payments, {:.2} USDT", funding.round_dp(2))),
        "{params}"
    );
    assert!(params.contains("timerange the whole file"), "{params}");

    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("dashboard-screenshots");
    b.screenshot(shots.join("backtest-report.png"))
        .await
        .unwrap();
    b.close().await.unwrap();
}
