//! A replay decides each close after the minute's sync has recorded what the exchange did up to
//! it, as `albra backtest` and the cron jobs do (the sync starts at the close, the evaluator waits
//! out its close delay). With the sync half a minute after the evaluation, a stop that fired in
//! the candle just closed was found by the evaluation itself, after the strategy had decided
//! with the position still open: TFPE, stopped out and signalling again at that close, held
//! ("the protective order had closed the position") and entered one candle late, where the
//! backtest entered at once. Here replay and backtest trade TFPE alike, trade for trade, on a
//! slice of real candles where that happens.

use albra_core::backtest::{self, BacktestOptions};
use albra_core::config::Config;
use albra_core::domain::{Timeframe, TradeRecord};
use albra_core::notify::DiscardNotifier;
use albra_core::replay::{self, ReplayOptions};
use albra_core::store::memory::MemoryStore;
use rust_decimal::Decimal;
use std::path::PathBuf;
use std::sync::Arc;

const CONFIG: &str = r#"
[jobs]
history = 300
[notifier]
console = false
telegram = false
[paper]
initial_equity = 10000
commission = 0.0004
slippage = 0
[[strategies]]
name = "TFPE"
timeframe = "15m"
symbols = ["BTCUSDT"]
leverage = 5
size_pct = 0.1
[strategies.params]
signal_threshold = 3
momentum_min_pct = 0.003
adx_min = 15.0
volume_mult = 1.0
stop_atr = 1.5
take_profit_atr = 3.0
[[accounts]]
id = "main"
key_source = "env"
strategies = ["TFPE"]
"#;

/// 260 candles of `data/BTCUSDT-perp-15m.csv` from row 6000, under the source's name.
fn slice(dir: &std::path::Path) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/BTCUSDT-perp-15m.csv");
    let text = std::fs::read_to_string(src).unwrap();
    let mut lines = text.lines();
    let mut out = format!("{}\n", lines.next().unwrap());
    for l in lines.skip(6_000).take(260) {
        out.push_str(l);
        out.push('\n');
    }
    let path = dir.join("BTCUSDT-perp-15m.csv");
    std::fs::write(&path, out).unwrap();
    path
}

/// (side, entry, exit, qty, entry price, exit price): what a trade did, whoever recorded it.
fn rows(trades: &[TradeRecord], before: i64) -> Vec<String> {
    let tf = Timeframe::M15;
    let mut v: Vec<String> = trades
        .iter()
        .filter(|t| t.exit_time < before)
        .map(|t| {
            format!(
                "{} {} {} {} {} {}",
                t.side,
                tf.open_of(t.entry_time),
                tf.open_of(t.exit_time),
                t.qty,
                t.entry_price,
                t.exit_price
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn replay_records_the_exchange_before_it_decides_as_the_backtest_does() {
    let dir = tempfile::tempdir().unwrap();
    let data = slice(dir.path());
    let config = Config::parse(CONFIG, "test").unwrap();
    let summary = replay::run(
        ReplayOptions {
            data: data.clone(),
            symbol: None,
            config: config.clone(),
            range: None,
            progress: None,
        },
        Arc::new(DiscardNotifier),
        Arc::new(MemoryStore::new()),
    )
    .await
    .unwrap();
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    let runs = backtest::run(&BacktestOptions {
        strategies: vec!["TFPE".into()],
        data: vec![data],
        timeframe: None,
        fee: Decimal::new(4, 4),
        slippage: Decimal::ZERO,
        equity: Decimal::from(10_000),
        risk_off: false,
        config: Some(config),
        progress: None,
        range: None,
        full_jobs: false,
    })
    .await
    .unwrap();
    // The backtest closes what is open at the end of the data; the replay keeps it.
    let end = runs[0].equity.last().unwrap().0;
    let (r, b) = (rows(&summary.trades, end), rows(&runs[0].trades, end));
    assert!(r.len() >= 5, "too few trades to show anything: {r:#?}");
    assert_eq!(
        r, b,
        "replay (left) and backtest (right) trade TFPE differently"
    );
}
