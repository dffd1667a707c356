//! Property test of the position sync over the paper exchange: whatever mix of strategy entries,
//! hand-placed orders, hand-made closes and strategy exits the store never heard of happens on a
//! symbol, after a sync every share (each strategy's and the MANUAL one) equals the sum of its own
//! fills since the net was last flat, the shares add up to the exchange's net position, and a
//! second sync changes nothing (no trade recorded twice, no state moved twice).

use albra_core::config::Config;
use albra_core::data;
use albra_core::domain::{
    AccountId, ClientId, Intent, Notional, OrderSide, Position, PositionKey, PositionStatus, Qty,
    Side, StrategyId, Symbol,
};
use albra_core::jobs::{AccountRuntime, Engine, EngineTiming, Sizing};
use albra_core::notify::CollectingNotifier;
use albra_core::paper::{MarketData, PaperConfig, PaperExchange, RecordedMarket};
use albra_core::ports::{Clock, Exchange, MarketOrder, SimClock};
use albra_core::state::StateRepo;
use albra_core::store::memory::MemoryStore;
use proptest::prelude::*;
use rust_decimal::Decimal;
use std::sync::{Arc, LazyLock};

const CONFIG: &str = r#"
[notifier]
telegram = false
console = false
[[strategies]]
name = "EMA_CROSS"
timeframe = "15m"
symbols = ["BTCUSDT"]
leverage = 3
size_pct = 0.1
[[strategies]]
name = "TFPE"
timeframe = "4h"
symbols = ["BTCUSDT"]
leverage = 3
size_pct = 0.1
[[accounts]]
id = "main"
key_source = "env"
strategies = ["EMA_CROSS", "TFPE"]
"#;

static SERIES: LazyLock<data::CandleSeries> = LazyLock::new(|| {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/BTCUSDT-perp-15m.csv");
    data::load_csv(&path).expect("candles")
});

#[derive(Clone, Debug)]
enum Op {
    /// A strategy (0 = EMA_CROSS, 1 = TFPE) opens a share: its order and its record.
    Enter {
        strategy: usize,
        long: bool,
        lots: u32,
    },
    /// An order placed by hand on the website.
    Manual { long: bool, lots: u32 },
    /// An order placed by hand for the size of a strategy's share, the other way (a person
    /// "closing the bot's position" on the website: in one-way mode it is their own fill).
    CloseShare { strategy: usize },
    /// A strategy's own exit order filled, its record never updated (the job died after the
    /// fill): its client id says whose fill it was.
    ExitUnbooked { strategy: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..2, any::<bool>(), 1u32..20).prop_map(|(strategy, long, lots)| Op::Enter {
            strategy,
            long,
            lots
        }),
        (any::<bool>(), 1u32..20).prop_map(|(long, lots)| Op::Manual { long, lots }),
        (0usize..2).prop_map(|strategy| Op::CloseShare { strategy }),
        (0usize..2).prop_map(|strategy| Op::ExitUnbooked { strategy }),
    ]
}

fn lot() -> Decimal {
    Decimal::new(1, 3)
}

async fn net(ex: &PaperExchange, sym: &Symbol) -> Decimal {
    ex.positions()
        .await
        .unwrap()
        .iter()
        .filter(|p| &p.symbol == sym)
        .map(|p| p.amount)
        .sum()
}

async fn stored_sum(repo: &StateRepo, sym: &Symbol) -> Decimal {
    repo.positions(&AccountId::new("main"))
        .await
        .unwrap()
        .iter()
        .filter(|v| &v.value.key.symbol == sym && v.value.is_open())
        .map(|v| v.value.side.sign() * v.value.qty.get())
        .sum()
}

/// Every owner's stored share on `sym` (EMA_CROSS, TFPE, MANUAL), zero when it holds none.
async fn shares(repo: &StateRepo, sym: &Symbol) -> Vec<(String, Decimal)> {
    let stored = repo.positions(&AccountId::new("main")).await.unwrap();
    ["EMA_CROSS", "TFPE", "MANUAL"]
        .into_iter()
        .map(|owner| {
            let share = stored
                .iter()
                .filter(|v| &v.value.key.symbol == sym && v.value.is_open())
                .filter(|v| v.value.key.strategy.as_str() == owner)
                .map(|v| v.value.side.sign() * v.value.qty.get())
                .sum();
            (owner.to_string(), share)
        })
        .collect()
}

async fn scenario(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let series = SERIES.clone();
    let start = series.candles[400].open_time + 5_000;
    let clock = Arc::new(SimClock::new(start));
    let sym = Symbol::new("BTCUSDT");
    let market: Arc<dyn MarketData> = Arc::new(RecordedMarket::new(sym.clone(), series));
    let ex = Arc::new(PaperExchange::new(
        market,
        clock.clone() as Arc<dyn Clock>,
        PaperConfig {
            initial_balance: Notional::new(Decimal::from(1_000_000)),
            ..PaperConfig::default()
        },
    ));
    let cfg = Config::parse(CONFIG, "t.toml").unwrap();
    let repo = StateRepo::new(Arc::new(MemoryStore::new()));
    let engine = Engine {
        accounts: vec![AccountRuntime {
            config: cfg.accounts[0].clone(),
            exchange: ex.clone(),
        }],
        config: Arc::new(cfg),
        repo: repo.clone(),
        notifier: Arc::new(CollectingNotifier::default()),
        timing: EngineTiming::instant(),
        cache: Default::default(),
        sizing: Sizing::Risk,
    };
    let main = AccountId::new("main");
    let names = ["EMA_CROSS", "TFPE"];
    let mut now = start;
    let mut seq = 0u32;
    // The reference: each owner's signed sum of its own fills since the net was last flat.
    let mut own: std::collections::BTreeMap<&str, Decimal> = Default::default();
    for op in ops {
        now += 60_000;
        clock.set(now);
        seq += 1;
        match op {
            Op::Enter {
                strategy,
                long,
                lots,
            } => {
                let sid = StrategyId::new(names[strategy]);
                let key = PositionKey {
                    account: main.clone(),
                    strategy: sid.clone(),
                    symbol: sym.clone(),
                };
                if repo.position(&key).await.unwrap().is_some() {
                    continue;
                }
                let side = if long { Side::Long } else { Side::Short };
                // A candle far in the past: the sync's adoption by entry id never matches it.
                let signal = start - 40 * 86_400_000 + i64::from(seq) * 900_000;
                let id = ClientId::derive(&main, &sid, &sym, signal, Intent::Entry, 0);
                let qty = Qty::new(lot() * Decimal::from(lots));
                let fill = ex
                    .place_market(&MarketOrder {
                        symbol: sym.clone(),
                        side: side.entry_order_side(),
                        qty,
                        reduce_only: false,
                        client_id: id.clone(),
                    })
                    .await
                    .unwrap();
                let p = Position {
                    key,
                    side,
                    qty: fill.executed_qty,
                    entry_price: fill.avg_price,
                    leverage: 3,
                    status: PositionStatus::Active,
                    is_manual: false,
                    entry_client_id: id.0,
                    signal_open_time: signal,
                    opened_at: now,
                    stop_loss: None,
                    take_profit: None,
                    stop_client_id: None,
                    stop_generation: 0,
                    partial_exits_done: 0,
                    pyramids_done: 0,
                    best_price: Some(fill.avg_price),
                    entry_fee: Notional::ZERO,
                    updated_at: now,
                    exit_orders: Vec::new(),
                    exit_generation: 0,
                };
                repo.save_position(&p, None).await.unwrap();
                *own.entry(names[strategy]).or_default() += side.sign() * fill.executed_qty.get();
            }
            Op::Manual { long, lots } => {
                let q = lot() * Decimal::from(lots);
                *own.entry("MANUAL").or_default() += if long { q } else { -q };
                ex.place_market(&MarketOrder {
                    symbol: sym.clone(),
                    side: if long {
                        OrderSide::Buy
                    } else {
                        OrderSide::Sell
                    },
                    qty: Qty::new(lot() * Decimal::from(lots)),
                    reduce_only: false,
                    client_id: ClientId(format!("web_{seq}")),
                })
                .await
                .unwrap();
            }
            Op::CloseShare { strategy } => {
                let key = PositionKey {
                    account: main.clone(),
                    strategy: StrategyId::new(names[strategy]),
                    symbol: sym.clone(),
                };
                let Some(p) = repo.position(&key).await.unwrap() else {
                    continue;
                };
                ex.place_market(&MarketOrder {
                    symbol: sym.clone(),
                    side: p.value.side.exit_order_side(),
                    qty: p.value.qty,
                    reduce_only: false,
                    client_id: ClientId(format!("web_close_{seq}")),
                })
                .await
                .unwrap();
                *own.entry("MANUAL").or_default() -= p.value.side.sign() * p.value.qty.get();
            }
            Op::ExitUnbooked { strategy } => {
                let sid = StrategyId::new(names[strategy]);
                let key = PositionKey {
                    account: main.clone(),
                    strategy: sid.clone(),
                    symbol: sym.clone(),
                };
                let Some(p) = repo.position(&key).await.unwrap() else {
                    continue;
                };
                let candle = p.value.signal_open_time + i64::from(seq) * 900_000;
                ex.place_market(&MarketOrder {
                    symbol: sym.clone(),
                    side: p.value.side.exit_order_side(),
                    qty: p.value.qty,
                    reduce_only: false,
                    client_id: ClientId::derive(&main, &sid, &sym, candle, Intent::Exit, 0),
                })
                .await
                .unwrap();
                *own.entry(names[strategy]).or_default() -= p.value.side.sign() * p.value.qty.get();
            }
        }
        if own.values().sum::<Decimal>().is_zero() {
            own.clear();
        }
        let r = engine.sync_positions(now).await;
        prop_assert!(r.ok(), "{:?}", r.errors);
        let exchange = net(&ex, &sym).await;
        prop_assert_eq!(stored_sum(&repo, &sym).await, exchange);
        for (owner, share) in shares(&repo, &sym).await {
            let want = own.get(owner.as_str()).copied().unwrap_or_default();
            prop_assert_eq!(share, want, "{}'s share against its own fills", owner);
        }
        // A second sync at the same moment changes nothing.
        let trades = repo.trades(&main).await.unwrap().len();
        let state = repo.account_state(&main).await.unwrap().map(|v| v.value);
        let positions: Vec<Position> = repo
            .positions(&main)
            .await
            .unwrap()
            .into_iter()
            .map(|v| v.value)
            .collect();
        let r = engine.sync_positions(now).await;
        prop_assert!(r.ok(), "{:?}", r.errors);
        prop_assert_eq!(repo.trades(&main).await.unwrap().len(), trades);
        prop_assert_eq!(
            repo.account_state(&main).await.unwrap().map(|v| v.value),
            state
        );
        let again: Vec<Position> = repo
            .positions(&main)
            .await
            .unwrap()
            .into_iter()
            .map(|v| v.value)
            .collect();
        prop_assert_eq!(again, positions);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn after_a_sync_shares_plus_manual_equal_the_exchange_net(ops in proptest::collection::vec(op(), 1..12)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(scenario(ops))?;
    }
}
