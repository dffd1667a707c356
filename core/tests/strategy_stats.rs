//! A strategy's stats item (the recent closed trades entries are Kelly-sized from) is counted
//! one trade at a time as trades close: in place by the backtests' typed state, read and saved
//! on its version by the jobs' key/value stores. Driven through the engine on real candles, both
//! must hold exactly the rebuild from the trade records, and size every entry the same.

mod common;

use albra_core::domain::{AccountId, StrategyId, Timeframe};
use albra_core::fastpath::typed_state::TypedState;
use albra_core::risk::StrategyStats;
use albra_core::state::StateRepo;
use albra_core::store::memory::MemoryStore;
use std::sync::Arc;

/// A short Kelly window (3 trades, sizing from the second) so it fills, trims and sizes early;
/// a stop far enough away that only the signals close positions (no sync job runs here).
const EXTRA: &str = "
[risk.kelly]
lookback = 3
min_trades = 2
[risk.strategies.EMA_CROSS]
kelly_min_pct = 0.05
kelly_max_pct = 0.3
";

/// Evaluate EMA_CROSS after each of the sample's first 3,000 candles with `repo` as the state;
/// the trades recorded (as text, in order), the stats item, and each entry's time, client id
/// and quantity (what the stats sized).
async fn run(
    repo: StateRepo,
) -> (
    Vec<String>,
    Option<StrategyStats>,
    Vec<(i64, String, rust_decimal::Decimal)>,
) {
    let series = common::perp_15m();
    let opens: Vec<i64> = series.candles[..3000].iter().map(|c| c.open_time).collect();
    let (engine, clock) =
        common::paper_engine(&common::ema_cross_15m("0.2", EXTRA), series, opens[0], repo);
    let hour = engine.config.risk.day_start_hour_utc;
    let mut entries = Vec::new();
    for open in opens {
        let now = open + Timeframe::M15.millis() + 3_000;
        clock.set(now);
        let r = engine.evaluate(Timeframe::M15, now).await;
        assert!(r.ok(), "{r:?}");
        for p in engine
            .repo
            .positions(&AccountId::new("main"))
            .await
            .unwrap()
        {
            if p.value.opened_at == now {
                entries.push((now, p.value.entry_client_id.clone(), p.value.qty.get()));
            }
        }
    }
    let main = AccountId::new("main");
    let trades = engine.repo.trades(&main).await.unwrap();
    let rebuilt = StrategyStats::from_trades(
        trades
            .iter()
            .map(|t| (t.exit_time, t.id.as_str(), t.pnl.get())),
        hour,
        3,
    );
    let stats = engine
        .repo
        .strategy_stats(&main, &StrategyId::new("EMA_CROSS"))
        .await
        .unwrap()
        .map(|v| v.value);
    assert_eq!(
        stats.as_ref(),
        Some(&rebuilt),
        "the counted window is the rebuild"
    );
    let trades = trades.iter().map(|t| format!("{t:?}")).collect();
    (trades, stats, entries)
}

#[tokio::test]
async fn stats_counted_in_place_equal_the_store_and_the_rebuild() {
    let (typed_trades, typed_stats, typed_entries) =
        run(StateRepo::over(Arc::new(TypedState::default()))).await;
    let (kv_trades, kv_stats, kv_entries) = run(StateRepo::new(Arc::new(MemoryStore::new()))).await;
    // Enough closed trades to fill and trim the window, and Kelly-sized entries after it filled.
    assert!(typed_trades.len() >= 6, "{} trades", typed_trades.len());
    assert_eq!(typed_stats.as_ref().map(|s| s.recent.len()), Some(3));
    assert!(typed_entries.len() > 3, "{typed_entries:?}");
    assert_eq!(typed_trades, kv_trades);
    assert_eq!(typed_stats, kv_stats);
    assert_eq!(typed_entries, kv_entries);
}
