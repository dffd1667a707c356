//! The query layer over the in-memory store and the paper exchange: the plans table-driven on
//! hand-made snapshots, the applies through the engine on real candles.

use super::commands::*;
use super::queries::*;
use super::QueryError;
use crate::config::Config;
use crate::domain::*;
use crate::jobs::{AccountRuntime, Engine, EngineTiming, Sizing};
use crate::notify::CollectingNotifier;
use crate::paper::{MarketData, PaperConfig, PaperExchange, RecordedMarket};
use crate::ports::*;
use crate::state::{Claim, JobRun, RunKey, StateRepo, Versioned};
use crate::store::memory::MemoryStore;
use crate::strategy::{self, Action};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use std::sync::Arc;

const MAIN: &str = "main";
const BTC: &str = "BTCUSDT";
const ETH: &str = "ETHUSDT";

fn config(extra_strategy: &str) -> String {
    format!(
        r#"
# the allocation below is switched by a test; this comment must survive
[notifier]
telegram = false
[[strategies]]
name = "EMA_CROSS"
timeframe = "15m"
symbols = ["BTCUSDT"]
leverage = 3
size_pct = 0.1
[strategies.params]
stop_loss_pct = 0.05
[[strategies]]
name = "TFPE"
timeframe = "1h"
symbols = ["BTCUSDT"]
leverage = 10
size_pct = 0.1
[[accounts]]
id = "main"
key_source = "env"
strategies = ["EMA_CROSS"{extra_strategy}]
[accounts.risk]
max_leverage = 5
[[accounts]]
id = "sub1"
enabled = false
key_source = "env:SUB1"
strategies = ["TFPE"]
"#
    )
}

fn cfg() -> Config {
    Config::parse(&config(""), "test.toml").unwrap()
}

fn key(strategy: &str, symbol: &str) -> PositionKey {
    PositionKey {
        account: AccountId::new(MAIN),
        strategy: StrategyId::new(strategy),
        symbol: Symbol::new(symbol),
    }
}

/// A stored position; `stop`: its stop level and the stop's client id (`None`: not placed).
fn pos(
    strategy: &str,
    symbol: &str,
    side: Side,
    qty: Decimal,
    status: PositionStatus,
    stop: Option<(Decimal, Option<&str>)>,
) -> Versioned<Position> {
    Versioned {
        value: Position {
            key: key(strategy, symbol),
            side,
            qty: Qty::new(qty),
            entry_price: Price::new(dec!(100)),
            leverage: 3,
            status,
            is_manual: strategy == "MANUAL",
            entry_client_id: String::new(),
            signal_open_time: 0,
            opened_at: 0,
            stop_loss: stop.map(|s| Price::new(s.0)),
            take_profit: None,
            stop_client_id: stop.and_then(|s| s.1.map(str::to_string)),
            stop_generation: 0,
            partial_exits_done: 0,
            pyramids_done: 0,
            best_price: None,
            entry_fee: Notional::new(Decimal::ZERO),
            updated_at: 0,
            exit_orders: Vec::new(),
            exit_generation: 0,
        },
        version: 1,
    }
}

fn xpos(symbol: &str, amount: Decimal) -> ExchangePosition {
    ExchangePosition {
        symbol: Symbol::new(symbol),
        amount,
        entry_price: Price::new(dec!(100)),
        mark_price: Price::new(dec!(100)),
        unrealized_pnl: Notional::new(Decimal::ZERO),
        liquidation_price: Price::new(Decimal::ZERO),
        leverage: Some(3),
        update_time: 0,
    }
}

fn algo(symbol: &str, id: &str, kind: AlgoKind) -> AlgoOrderInfo {
    AlgoOrderInfo {
        algo_id: 1,
        client_algo_id: id.to_string(),
        symbol: Symbol::new(symbol),
        side: OrderSide::Sell,
        kind,
        status: AlgoStatus::New,
        trigger_price: Some(Price::new(dec!(90))),
        qty: None,
        close_position: true,
        reduce_only: true,
        actual_order_id: None,
        actual_price: None,
        update_time: 0,
    }
}

fn state(paused: bool) -> Versioned<AccountState> {
    Versioned {
        value: AccountState {
            paused,
            ..Default::default()
        },
        version: 3,
    }
}

const NOW: i64 = 1_700_000_000_000;
const OURS: &str = "albSL-0123456789ab-abc";

fn snap(
    paused: Option<bool>,
    positions: Vec<Versioned<Position>>,
    exchange: Vec<ExchangePosition>,
    algos: Vec<AlgoOrderInfo>,
) -> Snapshot {
    Snapshot {
        account: AccountId::new(MAIN),
        state: paused.map(state),
        positions,
        exchange_positions: exchange,
        open_algos: algos,
        open_orders: Vec::new(),
        now: NOW,
    }
}

fn flat_id(symbol: &str) -> ClientId {
    flatten_client_id(&AccountId::new(MAIN), &Symbol::new(symbol), NOW)
}

#[test]
fn emergency_plans() {
    use PositionStatus::*;
    let long = |q| {
        pos(
            "EMA_CROSS",
            BTC,
            Side::Long,
            q,
            Active,
            Some((dec!(90), Some(OURS))),
        )
    };
    struct Case {
        name: &'static str,
        snap: Snapshot,
        pause: bool,
        sync_first: Vec<PositionKey>,
        close: Vec<(PositionKey, Decimal)>,
        cancel: Vec<(&'static str, bool)>,
        flatten: Vec<(&'static str, OrderSide, Decimal)>,
    }
    let cases = vec![
        Case {
            name: "flat, not paused: pause only",
            snap: snap(Some(false), vec![], vec![], vec![]),
            pause: true,
            sync_first: vec![],
            close: vec![],
            cancel: vec![],
            flatten: vec![],
        },
        Case {
            name: "no state yet: pause (creates it)",
            snap: snap(None, vec![], vec![], vec![]),
            pause: true,
            sync_first: vec![],
            close: vec![],
            cancel: vec![],
            flatten: vec![],
        },
        Case {
            name: "already stopped: nothing",
            snap: snap(Some(true), vec![], vec![], vec![]),
            pause: false,
            sync_first: vec![],
            close: vec![],
            cancel: vec![],
            flatten: vec![],
        },
        Case {
            name: "strategy long with its stop",
            snap: snap(
                Some(false),
                vec![long(dec!(0.01))],
                vec![xpos(BTC, dec!(0.01))],
                vec![algo(BTC, OURS, AlgoKind::StopMarket)],
            ),
            pause: true,
            sync_first: vec![],
            close: vec![(key("EMA_CROSS", BTC), dec!(0.01))],
            cancel: vec![(OURS, true)],
            flatten: vec![],
        },
        Case {
            name: "strategy long without a stop, paused already",
            snap: snap(
                Some(true),
                vec![pos("EMA_CROSS", BTC, Side::Long, dec!(0.01), Active, None)],
                vec![xpos(BTC, dec!(0.01))],
                vec![],
            ),
            pause: false,
            sync_first: vec![],
            close: vec![(key("EMA_CROSS", BTC), dec!(0.01))],
            cancel: vec![],
            flatten: vec![],
        },
        Case {
            name: "strategy long and a MANUAL long share BTC: the MANUAL rest is flattened",
            snap: snap(
                Some(false),
                vec![
                    long(dec!(0.01)),
                    pos("MANUAL", BTC, Side::Long, dec!(0.02), Active, None),
                ],
                vec![xpos(BTC, dec!(0.03))],
                vec![algo(BTC, OURS, AlgoKind::StopMarket)],
            ),
            pause: true,
            sync_first: vec![],
            close: vec![(key("EMA_CROSS", BTC), dec!(0.01))],
            cancel: vec![(OURS, true)],
            flatten: vec![(BTC, OrderSide::Sell, dec!(0.02))],
        },
        Case {
            name: "MANUAL short on ETH with a hand-made take-profit, untracked BTC long",
            snap: snap(
                Some(false),
                vec![pos("MANUAL", ETH, Side::Short, dec!(0.5), Active, None)],
                vec![xpos(BTC, dec!(0.004)), xpos(ETH, dec!(-0.5))],
                vec![algo(ETH, "my-tp", AlgoKind::TakeProfitMarket)],
            ),
            pause: true,
            sync_first: vec![],
            close: vec![],
            cancel: vec![("my-tp", false)],
            flatten: vec![
                (BTC, OrderSide::Sell, dec!(0.004)),
                (ETH, OrderSide::Buy, dec!(0.5)),
            ],
        },
        Case {
            name: "a close whose record a crash lost, and a PENDING entry: the sync first",
            snap: snap(
                Some(true),
                vec![
                    long(dec!(0.01)),
                    pos("TFPE", ETH, Side::Short, dec!(1), Pending, None),
                ],
                vec![],
                vec![],
            ),
            pause: false,
            sync_first: vec![key("EMA_CROSS", BTC), key("TFPE", ETH)],
            close: vec![],
            cancel: vec![],
            flatten: vec![],
        },
    ];
    for c in cases {
        let p = plan_emergency(&c.snap);
        assert_eq!(p.pause, c.pause, "{}", c.name);
        assert_eq!(p.sync_first, c.sync_first, "{}", c.name);
        let close: Vec<_> = p
            .close
            .iter()
            .map(|x| (x.key.clone(), x.qty.get()))
            .collect();
        assert_eq!(close, c.close, "{}", c.name);
        let cancel: Vec<_> = p
            .cancel
            .iter()
            .map(|x| (x.client_algo_id.as_str(), x.ours))
            .collect();
        assert_eq!(cancel, c.cancel, "{}", c.name);
        let flatten: Vec<_> = p
            .flatten
            .iter()
            .map(|x| (x.symbol.as_str(), x.side, x.qty.get()))
            .collect();
        assert_eq!(flatten, c.flatten, "{}", c.name);
        for f in &p.flatten {
            assert_eq!(f.client_id, flat_id(f.symbol.as_str()), "{}", c.name);
        }
        assert_eq!(p.is_empty(), c.name.starts_with("already"), "{}", c.name);
        assert!(p.cancel_resting.is_empty(), "{}", c.name);
    }
}

/// A limit order resting on the book (placed by hand) is planned for cancelling with what is
/// left of it; a finished one is not, and an account with only a resting order is not "done".
#[test]
fn emergency_plans_cancel_resting_orders() {
    let order = |id: &str, status, executed| OrderInfo {
        symbol: Symbol::new(ETH),
        order_id: 7,
        client_id: id.to_string(),
        side: OrderSide::Buy,
        status,
        orig_qty: Qty::new(dec!(2)),
        executed_qty: Qty::new(executed),
        avg_price: Price::new(Decimal::ZERO),
        reduce_only: false,
        update_time: 0,
    };
    let mut s = snap(Some(true), vec![], vec![], vec![]);
    assert!(plan_emergency(&s).is_empty(), "paused and flat");
    s.open_orders = vec![
        order("web_limit", OrderStatus::PartiallyFilled, dec!(0.5)),
        order("web_done", OrderStatus::Filled, dec!(2)),
    ];
    let p = plan_emergency(&s);
    assert!(!p.is_empty());
    let planned: Vec<_> = p
        .cancel_resting
        .iter()
        .map(|c| (c.client_id.as_str(), c.side, c.open_qty.get()))
        .collect();
    assert_eq!(planned, [("web_limit", OrderSide::Buy, dec!(1.5))]);
}

#[test]
fn the_flatten_id_is_the_manual_shares_and_the_minutes() {
    let id = flat_id(BTC);
    assert!(ClientId::is_ours(id.as_str()));
    assert_eq!(ClientId::intent_of(id.as_str()), Some(Intent::Exit));
    let manual = owner_hash(
        &AccountId::new(MAIN),
        &StrategyId::manual(),
        &Symbol::new(BTC),
    );
    assert_eq!(ClientId::owner_of(id.as_str()), Some(manual.as_str()));
    // The same minute gives the same id (a rerun finds the order); the next minute another.
    let same = flatten_client_id(&AccountId::new(MAIN), &Symbol::new(BTC), NOW + 1);
    let next = flatten_client_id(&AccountId::new(MAIN), &Symbol::new(BTC), NOW + 60_000);
    assert_eq!(same, id);
    assert_ne!(next, id);
}

#[test]
fn pause_plans() {
    let one = vec![pos(
        "EMA_CROSS",
        BTC,
        Side::Long,
        dec!(1),
        PositionStatus::Active,
        None,
    )];
    // (stored paused, asked, write, paused now)
    let cases = [
        (None, true, Some(true), false),
        (None, false, None, false),
        (Some(false), true, Some(true), false),
        (Some(true), true, None, true),
        (Some(true), false, Some(false), true),
        (Some(false), false, None, false),
    ];
    for (stored, ask, write, now) in cases {
        let p = plan_pause(&snap(stored, one.clone(), vec![], vec![]), ask);
        assert_eq!(
            (p.write, p.paused, p.open_positions),
            (write, now, 1),
            "{stored:?} {ask}"
        );
    }
}

#[test]
fn sync_plans_show_drift_unprotected_and_pending() {
    use PositionStatus::*;
    let s = snap(
        Some(false),
        vec![
            pos(
                "EMA_CROSS",
                BTC,
                Side::Long,
                dec!(0.01),
                Active,
                Some((dec!(90), Some(OURS))),
            ),
            pos("MANUAL", BTC, Side::Long, dec!(0.02), Active, None),
            pos(
                "TFPE",
                ETH,
                Side::Short,
                dec!(1),
                Active,
                Some((dec!(110), None)),
            ),
            pos("TFPE", "SOLUSDT", Side::Long, dec!(3), Pending, None),
        ],
        vec![xpos(BTC, dec!(0.03)), xpos(ETH, dec!(-0.4))],
        vec![algo(BTC, OURS, AlgoKind::StopMarket)],
    );
    let p = plan_sync(&s);
    assert_eq!(
        p.drift,
        vec![SymbolDrift {
            symbol: Symbol::new(ETH),
            stored: dec!(-1),
            exchange: dec!(-0.4)
        }]
    );
    assert_eq!(p.unprotected, vec![key("TFPE", ETH)]);
    assert_eq!(p.pending, vec![key("TFPE", "SOLUSDT")]);
    // The stop gone from the exchange makes the BTC position unprotected too.
    let mut s = s;
    s.open_algos.clear();
    assert_eq!(
        plan_sync(&s).unprotected,
        vec![key("EMA_CROSS", BTC), key("TFPE", ETH)]
    );
}

#[test]
fn switch_plans_validate_and_refuse_while_a_dropped_strategy_holds_a_position() {
    let c = cfg();
    let active = |s| pos(s, BTC, Side::Long, dec!(1), PositionStatus::Active, None);
    let err = plan_switch(&c, &snap(None, vec![], vec![], vec![]), "NOPE").unwrap_err();
    assert!(
        matches!(err, QueryError::UnknownStrategy { ref name, .. } if name == "NOPE"),
        "{err}"
    );
    // Registered but not configured: no timeframe or symbols to run it with.
    let err = plan_switch(&c, &snap(None, vec![], vec![], vec![]), "ZLHMA_EMA_CROSS").unwrap_err();
    assert!(
        err.to_string().contains("configured: EMA_CROSS, TFPE"),
        "{err}"
    );
    // (positions, blocked by, unchanged) switching main to TFPE.
    let cases: Vec<(Vec<Versioned<Position>>, Vec<PositionKey>)> = vec![
        (vec![], vec![]),
        (vec![active("EMA_CROSS")], vec![key("EMA_CROSS", BTC)]),
        (
            vec![pos(
                "EMA_CROSS",
                BTC,
                Side::Long,
                dec!(1),
                PositionStatus::Pending,
                None,
            )],
            vec![key("EMA_CROSS", BTC)],
        ),
        (vec![active("MANUAL"), active("TFPE")], vec![]),
    ];
    for (positions, blocked) in cases {
        let p = plan_switch(&c, &snap(None, positions, vec![], vec![]), "TFPE").unwrap();
        assert_eq!(p.blocked_by, blocked);
        assert_eq!(
            (p.from.clone(), p.to.as_str(), p.unchanged),
            (vec!["EMA_CROSS".to_string()], "TFPE", false)
        );
        let applied = apply_switch(&p, &config(""), "test.toml");
        if blocked.is_empty() {
            let text = applied.unwrap();
            assert!(text.contains("this comment must survive"), "{text}");
            let after = Config::parse(&text, "t").unwrap();
            assert_eq!(after.accounts[0].strategies, vec!["TFPE".to_string()]);
            assert_eq!(after.accounts[1].strategies, vec!["TFPE".to_string()]);
        } else {
            assert!(
                matches!(applied, Err(QueryError::Refused(_))),
                "{applied:?}"
            );
        }
    }
    let p = plan_switch(&c, &snap(None, vec![], vec![], vec![]), "EMA_CROSS").unwrap();
    assert!(p.unchanged);
    // A config text without the account's entry (edited since) takes no change.
    let other = config("").replace("id = \"main\"", "id = \"other\"");
    let err = apply_switch(&p, &other, "test.toml").unwrap_err();
    assert!(
        matches!(err, QueryError::Config(ref m) if m.contains("id = \"main\"")),
        "{err}"
    );
}

fn trade(strategy: &str, pnl: Decimal, exit_time: i64) -> TradeRecord {
    TradeRecord {
        id: format!("{strategy}-{exit_time}"),
        account: AccountId::new(MAIN),
        strategy: StrategyId::new(strategy),
        symbol: Symbol::new(BTC),
        side: Side::Long,
        qty: Qty::new(dec!(1)),
        entry_price: Price::new(dec!(100)),
        exit_price: Price::new(dec!(100) + pnl),
        entry_time: exit_time - 1,
        exit_time,
        pnl: Notional::new(pnl),
        fees: Notional::new(dec!(0.1)),
        funding: Notional::new(Decimal::ZERO),
        reason: "signal".into(),
        stop_loss: None,
    }
}

#[tokio::test]
async fn performance_figures_per_strategy_and_account_over_a_window() {
    let repo = StateRepo::new(Arc::new(MemoryStore::new()));
    let day = 86_400_000;
    for (i, pnl) in [dec!(10), dec!(-5), dec!(20), dec!(-15)]
        .into_iter()
        .enumerate()
    {
        repo.record_trade(&trade("EMA_CROSS", pnl, NOW - (4 - i as i64) * day))
            .await
            .unwrap();
    }
    repo.record_trade(&trade("TFPE", dec!(7), NOW - 10 * day))
        .await
        .unwrap();
    let all = performance(&repo, &cfg(), Some(MAIN), None, NOW)
        .await
        .unwrap();
    let ema = &all.rows[0];
    assert_eq!(ema.strategy, Some(StrategyId::new("EMA_CROSS")));
    assert_eq!((ema.trades, ema.wins, ema.win_rate), (4, 2, dec!(0.5)));
    assert_eq!(
        (ema.total_pnl, ema.profit_factor, ema.max_drawdown),
        (dec!(10), Some(dec!(1.5)), dec!(15))
    );
    assert_eq!(ema.fees, dec!(0.4));
    let tfpe = &all.rows[1];
    assert_eq!(
        (tfpe.trades, tfpe.profit_factor, tfpe.max_drawdown),
        (1, None, dec!(0))
    );
    let total = &all.rows[2];
    assert_eq!(
        (total.strategy.clone(), total.trades, total.total_pnl),
        (None, 5, dec!(17))
    );
    // The last 3 days: the EMA_CROSS trades closed 3, 2 and 1 days ago.
    let recent = performance(&repo, &cfg(), Some(MAIN), Some(3), NOW)
        .await
        .unwrap();
    assert_eq!(recent.since, Some(NOW - 3 * day));
    assert_eq!(recent.rows.len(), 2);
    assert_eq!(
        (
            recent.rows[0].trades,
            recent.rows[0].total_pnl,
            recent.rows[0].max_drawdown
        ),
        (3, dec!(0), dec!(15))
    );
    let err = performance(&repo, &cfg(), Some("x"), None, NOW)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no account `x` in config (accounts: main, sub1)"
    );
}

#[tokio::test]
async fn status_positions_and_risk_from_the_store() {
    let repo = StateRepo::new(Arc::new(MemoryStore::new()));
    let c = Config::parse(&config(", \"TFPE\""), "t").unwrap();
    let main = AccountId::new(MAIN);
    let st = AccountState {
        equity: Notional::new(dec!(650)),
        peak_equity: Notional::new(dec!(1000)),
        day_start_equity: Notional::new(dec!(700)),
        mdd_level: 2,
        consecutive_wins: 3,
        daily_halt_until: Some(NOW + 1000),
        daily_realized_pnl: Notional::new(dec!(-50)),
        // The last sync saw BTC at 110; ETH has no mark yet.
        marks: [(Symbol::new(BTC), Price::new(dec!(110)))].into(),
        marks_at: Some(NOW - 30_000),
        ..Default::default()
    };
    repo.save_account_state(&main, &st, None).await.unwrap();
    let unprotected = pos(
        "EMA_CROSS",
        BTC,
        Side::Long,
        dec!(1),
        PositionStatus::Active,
        Some((dec!(90), None)),
    );
    repo.save_position(&unprotected.value, None).await.unwrap();
    repo.save_position(
        &pos(
            "MANUAL",
            ETH,
            Side::Short,
            dec!(2),
            PositionStatus::Active,
            None,
        )
        .value,
        None,
    )
    .await
    .unwrap();
    repo.record_trade(&trade("EMA_CROSS", dec!(-50), NOW))
        .await
        .unwrap();

    let s = status(&repo, &c, NOW).await.unwrap();
    let f = s.accounts[0].figures.clone().unwrap();
    assert_eq!(
        (f.halted_until, f.marks_at),
        (Some(NOW + 1000), Some(NOW - 30_000))
    );
    // Open positions valued at the sync's marks: long 1 from 100 at 110 is +10; the short
    // without a mark has none, so neither has the account's sum.
    let valued: Vec<_> = s.accounts[0]
        .positions
        .iter()
        .map(|p| (p.symbol.0.as_str(), p.mark_price, p.unrealized_pnl))
        .collect();
    assert_eq!(
        valued,
        [
            (BTC, Some(Price::new(dec!(110))), Some(dec!(10))),
            (ETH, None, None)
        ]
    );
    assert_eq!(s.accounts[0].unrealized_pnl, None);
    // No job ever ran: every job is listed, none has an age.
    let jobs: Vec<_> = s.accounts[0].jobs.iter().map(|j| j.job.as_str()).collect();
    assert_eq!(jobs, ["position-sync", "evaluator-15m", "evaluator-1h"]);
    assert_eq!(s.accounts[0].heartbeat_age_ms, None);
    // Once the halt has passed it is no longer reported.
    let later = status(&repo, &c, NOW + 1000).await.unwrap();
    assert_eq!(
        later.accounts[0].figures.as_ref().unwrap().halted_until,
        None
    );
    assert_eq!(
        (
            f.equity,
            f.peak_equity,
            f.drawdown_pct,
            f.mdd_level,
            f.paused,
            f.daily_pnl
        ),
        (dec!(650), dec!(1000), dec!(35), 2, false, dec!(-50))
    );
    assert_eq!(
        (
            s.accounts[0].open_positions,
            s.accounts[0].closed_trades,
            s.accounts[0].realized_pnl
        ),
        (2, 1, dec!(-50))
    );
    assert_eq!(
        (s.accounts[1].enabled, s.accounts[1].figures.clone()),
        (false, None)
    );

    let rows = positions(&repo, &c, None).await.unwrap();
    let labels: Vec<_> = rows
        .iter()
        .map(|r| (r.strategy.0.as_str(), r.label.as_str(), r.is_manual))
        .collect();
    assert_eq!(
        labels,
        [
            ("EMA_CROSS", "ACTIVE UNPROTECTED", false),
            ("MANUAL", "ACTIVE", true)
        ]
    );

    let r = &risk_check(&repo, &c, Some(MAIN), NOW).await.unwrap()[0];
    assert_eq!(
        (r.daily_loss, r.daily_loss_limit, r.halted_until),
        (dec!(50) / dec!(700), dec!(0.05), Some(NOW + 1000))
    );
    // Level 2 gives 0.5, one recovery step of 0.1 for three wins.
    assert_eq!(
        (r.mdd_level, r.size_multiplier, r.mdd_blocks_entries),
        (2, dec!(0.6), false)
    );
    let tfpe = r.leverage.iter().find(|l| l.strategy == "TFPE").unwrap();
    assert_eq!((tfpe.configured, tfpe.cap, tfpe.effective), (10, 5, 5));
    assert!(r.warnings.contains(&RiskWarning::LeverageCapped {
        strategy: "TFPE".into(),
        configured: 10,
        cap: 5
    }));
    let ema = r
        .leverage
        .iter()
        .find(|l| l.strategy == "EMA_CROSS")
        .unwrap();
    assert_eq!((ema.configured, ema.cap, ema.effective), (3, 5, 3));
    assert!(
        r.warnings.contains(&RiskWarning::SameSymbol {
            symbol: Symbol::new(BTC),
            strategies: vec!["EMA_CROSS".into(), "TFPE".into()]
        }),
        "{:?}",
        r.warnings
    );
    assert!(r.warnings.contains(&RiskWarning::Unprotected {
        strategy: StrategyId::new("EMA_CROSS"),
        symbol: Symbol::new(BTC)
    }));
    assert!(r
        .warnings
        .contains(&RiskWarning::DailyLossHalt { until: NOW + 1000 }));
    assert!(r.warnings.contains(&RiskWarning::MddLevel { level: 2 }));
    // Once the halt has passed it is no warning.
    let later = &risk_check(&repo, &c, Some(MAIN), NOW + 1000).await.unwrap()[0];
    assert_eq!(later.halted_until, None);
    assert!(!later.warnings.iter().any(|w| matches!(
        w,
        RiskWarning::DailyLossHalt { .. } | RiskWarning::PositionLimit { .. }
    )));
    // With one position allowed, EMA_CROSS is at its limit; the MANUAL position counts for none.
    let mut one = c.clone();
    one.risk.max_positions_per_account = 1;
    let held = repo.positions(&main).await.unwrap();
    let r = risk_of(&one, &one.accounts[0], Some(&st), &held, NOW);
    let limits: Vec<_> = r
        .warnings
        .iter()
        .filter(|w| matches!(w, RiskWarning::PositionLimit { .. }))
        .collect();
    assert_eq!(
        limits,
        [&RiskWarning::PositionLimit {
            strategy: StrategyId::new("EMA_CROSS"),
            open: 1,
            max: 1
        }]
    );
    // The account's own limit ([accounts.risk]) is the one checked and shown, not [risk]'s.
    let mut own = c.clone();
    own.accounts[0].risk.max_positions_per_account = Some(1);
    let r = risk_of(&own, &own.accounts[0], Some(&st), &held, NOW);
    assert_eq!(r.max_positions, 1);
    assert!(r
        .warnings
        .iter()
        .any(|w| matches!(w, RiskWarning::PositionLimit { max: 1, .. })));
}

#[tokio::test]
async fn job_health_reads_the_sync_record_and_the_run_markers() {
    let repo = StateRepo::new(Arc::new(MemoryStore::new()));
    let main = AccountId::new(MAIN);
    let c = cfg();
    let h = job_health(&repo, &c, Some(MAIN), NOW).await.unwrap();
    assert_eq!(
        h.iter()
            .map(|j| (j.job.as_str(), j.last_run, j.stale))
            .collect::<Vec<_>>(),
        [("position-sync", None, true), ("evaluator-15m", None, true)]
    );
    let sync = |at: i64, ok: bool, outcome: &str| JobRun {
        at,
        ok,
        outcome: outcome.into(),
    };
    let record = |r: JobRun| {
        let repo = repo.clone();
        let main = main.clone();
        async move {
            repo.record_job_run(&main, "position-sync", &r, 300_000)
                .await
                .unwrap();
            repo.job_run(&main, "position-sync").await.unwrap().unwrap()
        }
    };
    // (run, what is recorded after it): a success within the refresh of a success is not
    // written; a failure, the first success after it, and a success after the refresh are.
    let steps = [
        (sync(NOW - 900_000, true, "a"), "a"),
        (sync(NOW - 840_000, true, "b"), "a"),
        (sync(NOW - 780_000, false, "c"), "c"),
        (sync(NOW - 720_000, true, "d"), "d"),
        (sync(NOW - 420_000, true, "e"), "e"),
        (sync(NOW - 30_000, true, "ok: 2 line(s)"), "ok: 2 line(s)"),
        // An older run recorded late does not replace the newer one.
        (sync(NOW - 90_000, false, "old"), "ok: 2 line(s)"),
    ];
    for (run, recorded) in steps {
        assert_eq!(record(run).await.outcome, recorded);
    }
    let run = |open_time| RunKey {
        account: main.clone(),
        strategy: StrategyId::new("EMA_CROSS"),
        symbol: Symbol::new(BTC),
        tf: Timeframe::M15,
        open_time,
    };
    let old = Timeframe::M15.last_closed_open(NOW) - 900_000;
    for (t, finish) in [(old, true), (old + 900_000, false)] {
        let Claim::Held { version, .. } = repo
            .claim_run(&run(t), t + 900_000 + 3_000, 60_000)
            .await
            .unwrap()
        else {
            panic!("claimed")
        };
        if finish {
            repo.finish_run(&run(t), version, t + 900_000 + 3_000, "HOLD")
                .await
                .unwrap();
        }
    }
    let h = job_health(&repo, &c, Some(MAIN), NOW).await.unwrap();
    assert_eq!(
        (h[0].last_run, h[0].ok, h[0].age_ms, h[0].stale),
        (Some(NOW - 30_000), true, Some(30_000), false)
    );
    assert_eq!(h[0].outcome.as_deref(), Some("ok: 2 line(s)"));
    let ev = &h[1];
    assert_eq!(
        (ev.last_run, ev.finished, ev.ok, ev.outcome.as_deref()),
        (Some(old + 1_803_000), false, false, Some("claimed"))
    );
    assert_eq!(ev.age_ms, Some(NOW - old - 1_803_000));
}

// ---------------------------------------------------------------------------------------------
// applies, through the engine on the paper exchange
// ---------------------------------------------------------------------------------------------

struct Setup {
    engine: Engine,
    ex: Arc<PaperExchange>,
    clock: Arc<SimClock>,
    signal: (i64, Side),
}

fn series() -> crate::data::CandleSeries {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/BTCUSDT-perp-15m.csv");
    crate::data::load_csv(&path).unwrap()
}

fn first_signal(candles: &[Candle]) -> (i64, Side) {
    let mut s = strategy::build("EMA_CROSS", &toml::Table::new(), "t").unwrap();
    for c in candles {
        s.update(c);
        if let Action::Open { side, .. } = s.decide(&strategy::Context::flat(0)).action {
            return (c.open_time, side);
        }
    }
    panic!("no signal in the sample");
}

/// One account trading EMA_CROSS on BTCUSDT 15m over a paper exchange replaying the sample
/// (ETHUSDT replays the same candles), at the first signal's candle.
fn setup() -> Setup {
    let s = series();
    let signal = first_signal(&s.candles);
    let clock = Arc::new(SimClock::new(signal.0));
    let mut market = RecordedMarket::new(Symbol::new(BTC), s.clone());
    market.add(Symbol::new(ETH), s);
    let market: Arc<dyn MarketData> = Arc::new(market);
    let ex = Arc::new(PaperExchange::new(
        market,
        clock.clone() as Arc<dyn Clock>,
        PaperConfig::default(),
    ));
    let c = cfg();
    let engine = Engine {
        accounts: vec![AccountRuntime {
            config: c.accounts[0].clone(),
            exchange: ex.clone(),
        }],
        config: Arc::new(c),
        repo: StateRepo::new(Arc::new(MemoryStore::new())),
        notifier: Arc::new(CollectingNotifier::default()),
        timing: EngineTiming::instant(),
        cache: Default::default(),
        sizing: Sizing::Risk,
    };
    Setup {
        engine,
        ex,
        clock,
        signal,
    }
}

fn eval_time(open_time: i64) -> i64 {
    open_time + Timeframe::M15.millis() + 3_000
}

impl Setup {
    fn at(&self, t: i64) -> i64 {
        self.clock.set(t);
        t
    }
    fn acct(&self) -> &AccountRuntime {
        &self.engine.accounts[0]
    }
    /// Enter at the signal (strategy position with its stop), then a hand-made BTC order in the
    /// same direction (a MANUAL share), an ETH short by hand and a hand-made take-profit on it,
    /// and a sync that tracks the MANUAL shares. Returns the time after.
    async fn trading_account(&self) -> i64 {
        let now = self.at(eval_time(self.signal.0));
        let r = self.engine.evaluate(Timeframe::M15, now).await;
        assert!(r.ok() && r.orders_placed == 2, "{r:?}");
        let side = self.signal.1.entry_order_side();
        self.hand_order(BTC, side, dec!(0.002), "hand-btc").await;
        self.hand_order(ETH, OrderSide::Sell, dec!(0.003), "hand-eth")
            .await;
        let tp = AlgoOrder {
            symbol: Symbol::new(ETH),
            side: OrderSide::Buy,
            kind: AlgoKind::TakeProfitMarket,
            trigger_price: Some(Price::new(dec!(1000))),
            qty: Some(Qty::new(dec!(0.003))),
            close_position: false,
            reduce_only: true,
            working_type: WorkingType::MarkPrice,
            client_algo_id: ClientId("hand-tp".into()),
        };
        self.ex.place_algo(&tp).await.unwrap();
        let now = self.at(now + 60_000);
        let r = self.engine.sync_job(now).await;
        assert!(r.ok(), "{r:?}");
        now
    }
    async fn hand_order(&self, symbol: &str, side: OrderSide, qty: Decimal, id: &str) {
        let o = MarketOrder {
            symbol: Symbol::new(symbol),
            side,
            qty: Qty::new(qty),
            reduce_only: false,
            client_id: ClientId(id.into()),
        };
        self.ex.place_market(&o).await.unwrap();
    }
    async fn plan(&self, now: i64) -> EmergencyPlan {
        plan_emergency(&gather(&self.engine.repo, self.acct(), now).await.unwrap())
    }
    /// Every order the exchange took since the signal, per client id.
    async fn orders_by_id(&self) -> std::collections::BTreeMap<String, usize> {
        let mut by_id = std::collections::BTreeMap::new();
        for s in [BTC, ETH] {
            for o in self
                .ex
                .all_orders(&Symbol::new(s), self.signal.0)
                .await
                .unwrap()
            {
                *by_id.entry(o.client_id).or_insert(0) += 1;
            }
        }
        by_id
    }
    async fn assert_stopped(&self, out: &EmergencyOutcome) {
        assert!(out.errors.is_empty(), "{out:?}");
        assert!(out.flat && out.paused && out.open_orders == 0, "{out:?}");
        assert!(self.ex.positions().await.unwrap().is_empty());
        assert!(self.ex.open_algo_orders(None).await.unwrap().is_empty());
        let main = AccountId::new(MAIN);
        let open: Vec<_> = self
            .engine
            .repo
            .positions(&main)
            .await
            .unwrap()
            .into_iter()
            .filter(|p| p.value.is_open())
            .collect();
        assert!(open.is_empty(), "{open:?}");
        assert_eq!(
            self.engine.repo.account_paused(&main).await.unwrap(),
            Some(true)
        );
    }
}

#[tokio::test]
async fn an_emergency_stop_leaves_the_account_flat_without_orders_and_paused() {
    let s = setup();
    let now = s.trading_account().await;
    let plan = s.plan(now).await;
    assert!(plan.pause && plan.sync_first.is_empty(), "{plan:?}");
    assert_eq!(
        plan.close.iter().map(|c| c.key.clone()).collect::<Vec<_>>(),
        [key("EMA_CROSS", BTC)]
    );
    let kinds: Vec<_> = plan
        .cancel
        .iter()
        .map(|c| (c.kind.as_str(), c.ours))
        .collect();
    assert!(
        kinds.contains(&("STOP_MARKET", true)) && kinds.contains(&("TAKE_PROFIT_MARKET", false)),
        "{kinds:?}"
    );
    let flat: Vec<_> = plan
        .flatten
        .iter()
        .map(|f| (f.symbol.as_str(), f.qty.get()))
        .collect();
    assert_eq!(flat, [(BTC, dec!(0.002)), (ETH, dec!(0.003))]);

    let out = apply_emergency(&s.engine, &plan, now).await.unwrap();
    s.assert_stopped(&out).await;
    // The strategy's trade is recorded with the stop's reason, once.
    let trades = s.engine.repo.trades(&AccountId::new(MAIN)).await.unwrap();
    let reasons: Vec<&str> = trades
        .iter()
        .filter(|t| t.strategy.0 == "EMA_CROSS")
        .map(|t| t.reason.as_str())
        .collect();
    assert_eq!(reasons, ["emergency_stop"], "{trades:?}");
    // Each order went out once; a second stop finds nothing to do.
    assert!(s.orders_by_id().await.values().all(|n| *n == 1));
    let again = s.plan(s.at(now + 120_000)).await;
    assert!(again.is_empty(), "{again:?}");
}

/// The operator's `/close` records its trade as `manual`, not as a strategy's signal.
#[tokio::test]
async fn an_operator_close_records_a_manual_trade() {
    let s = setup();
    let now = s.trading_account().await;
    let plan = plan_close(&s.engine, &Symbol::new(BTC), Some("EMA_CROSS"))
        .await
        .unwrap();
    assert_eq!(plan.close.len(), 1, "{plan:?}");
    let out = apply_close(&s.engine, &plan, now).await.unwrap();
    assert_eq!((out.still_open, out.errors.len()), (0, 0), "{out:?}");
    let trades = s.engine.repo.trades(&AccountId::new(MAIN)).await.unwrap();
    let reasons: Vec<&str> = trades.iter().map(|t| t.reason.as_str()).collect();
    assert_eq!(reasons, ["manual"], "{trades:?}");
}

#[tokio::test]
async fn a_rerun_after_a_crash_mid_stop_finishes_it_without_duplicate_orders() {
    let s = setup();
    let now = s.trading_account().await;
    let plan = s.plan(now).await;
    // The first run paused the account and sent the strategy position's close, then died before
    // recording it: the order is on the exchange, the store still holds the position.
    set_paused(&s.engine.repo, &AccountId::new(MAIN), true, now)
        .await
        .unwrap();
    let p = s
        .engine
        .repo
        .position(&key("EMA_CROSS", BTC))
        .await
        .unwrap()
        .unwrap()
        .value;
    let close_id = ClientId::derive(
        &p.key.account,
        &p.key.strategy,
        &p.key.symbol,
        Timeframe::M1.last_closed_open(now),
        Intent::Exit,
        0,
    );
    let close = MarketOrder {
        symbol: p.key.symbol.clone(),
        side: p.side.exit_order_side(),
        qty: p.qty,
        reduce_only: true,
        client_id: close_id.clone(),
    };
    s.ex.place_market(&close).await.unwrap();
    // ... and the flatten of BTC was sent too.
    let f = &plan.flatten[0];
    s.ex.place_market(&MarketOrder {
        symbol: f.symbol.clone(),
        side: f.side,
        qty: f.qty,
        reduce_only: true,
        client_id: f.client_id.clone(),
    })
    .await
    .unwrap();

    // The rerun, minutes later (other client ids would be derived): planned from what is there.
    let later = s.at(now + 180_000);
    let plan = s.plan(later).await;
    assert!(!plan.pause, "{plan:?}");
    assert!(
        plan.close.is_empty(),
        "the sent close must not be sent again: {plan:?}"
    );
    assert_eq!(
        plan.sync_first,
        [key("EMA_CROSS", BTC), key("MANUAL", BTC)],
        "{plan:?}"
    );
    let out = apply_emergency(&s.engine, &plan, later).await.unwrap();
    s.assert_stopped(&out).await;
    let by_id = s.orders_by_id().await;
    assert!(by_id.values().all(|n| *n == 1), "{by_id:?}");
    // Closing orders: the strategy's close, the two flattens (BTC then, ETH now), nothing else.
    let closes: Vec<_> = by_id
        .keys()
        .filter(|id| ClientId::intent_of(id) == Some(Intent::Exit))
        .collect();
    assert_eq!(closes.len(), 3, "{by_id:?}");
    assert!(by_id.contains_key(close_id.as_str()));
}

#[tokio::test]
async fn emergency_stop_of_all_accounts_plans_every_traded_account() {
    let s = setup();
    let now = s.trading_account().await;
    let plans = plan_emergency_for(&s.engine, None, now).await.unwrap();
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].account, AccountId::new(MAIN));
    let err = plan_emergency_for(&s.engine, Some("nope"), now)
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::UnknownAccount { .. }), "{err}");
}

#[tokio::test]
async fn a_paused_account_enters_nothing_and_keeps_its_stops() {
    // Paused before the signal: the signal candle enters nothing; resumed, the same candle does.
    let s = setup();
    let repo = &s.engine.repo;
    let now = s.at(eval_time(s.signal.0));
    let pause = plan_pause(
        &gather_state(repo, &s.engine.config, MAIN, now)
            .await
            .unwrap(),
        true,
    );
    assert!(apply_pause(repo, &pause, now).await.unwrap());
    let r = s.engine.evaluate(Timeframe::M15, now).await;
    assert_eq!(
        (r.orders_attempted, r.line_texts()),
        (0, vec!["main: paused; nothing evaluated".to_string()])
    );
    assert!(s.ex.positions().await.unwrap().is_empty());
    let resume = plan_pause(
        &gather_state(repo, &s.engine.config, MAIN, now)
            .await
            .unwrap(),
        false,
    );
    assert_eq!(resume.write, Some(false));
    assert!(!apply_pause(repo, &resume, now).await.unwrap());
    let r = s.engine.evaluate(Timeframe::M15, now).await;
    assert_eq!(r.orders_placed, 2, "{r:?}");

    // Paused with the position open: its stop stays through syncs and evaluations.
    let p = repo
        .position(&key("EMA_CROSS", BTC))
        .await
        .unwrap()
        .unwrap()
        .value;
    let stop = p.stop_client_id.clone().expect("stop placed");
    set_paused(repo, &AccountId::new(MAIN), true, now)
        .await
        .unwrap();
    let mut t = s.signal.0;
    for _ in 0..8 {
        t += Timeframe::M15.millis();
        let at = s.at(eval_time(t));
        assert!(s.engine.sync_positions(at).await.ok());
        let r = s.engine.evaluate(Timeframe::M15, at).await;
        assert_eq!(r.orders_attempted, 0, "{r:?}");
    }
    let open = s.ex.open_algo_orders(None).await.unwrap();
    assert!(open.iter().any(|a| a.client_algo_id == stop), "{open:?}");
    assert_eq!(
        repo.position(&p.key).await.unwrap().unwrap().value.status,
        PositionStatus::Active
    );
    assert_eq!(s.orders_by_id().await.len(), 1, "only the entry");
}

#[tokio::test]
async fn the_sync_command_runs_the_job_for_one_account_and_records_the_run() {
    let s = setup();
    let now = s.at(eval_time(s.signal.0));
    s.engine.evaluate(Timeframe::M15, now).await;
    s.hand_order(BTC, s.signal.1.entry_order_side(), dec!(0.002), "hand-btc")
        .await;
    let snap = gather(&s.engine.repo, s.acct(), now).await.unwrap();
    let plan = plan_sync(&snap);
    assert_eq!(plan.drift.len(), 1, "{plan:?}");
    assert_eq!(
        plan.drift[0].exchange - plan.drift[0].stored,
        s.signal.1.sign() * dec!(0.002)
    );
    let out = apply_sync(&s.engine, &plan, now).await;
    assert!(out.errors.is_empty(), "{out:?}");
    let after = plan_sync(&gather(&s.engine.repo, s.acct(), now).await.unwrap());
    assert!(
        after.drift.is_empty() && after.unprotected.is_empty(),
        "{after:?}"
    );
    let manual = s
        .engine
        .repo
        .position(&key("MANUAL", BTC))
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(manual.qty, Qty::new(dec!(0.002)));
    let h = job_health(&s.engine.repo, &s.engine.config, Some(MAIN), now + 1_000)
        .await
        .unwrap();
    assert_eq!(
        (h[0].last_run, h[0].ok, h[0].age_ms),
        (Some(now), true, Some(1_000))
    );
}

#[tokio::test]
async fn balance_reads_each_exchange_beside_the_stored_equity() {
    let s = setup();
    let now = s.at(eval_time(s.signal.0));
    s.engine.sync_positions(now).await;
    let rows = balance(&s.engine.repo, &s.engine.accounts).await.unwrap();
    let b = &rows[0];
    let snap = b.exchange.clone().unwrap();
    assert_eq!(
        (
            snap.wallet_balance.get(),
            snap.available_balance.get(),
            b.error.clone()
        ),
        (dec!(10000), dec!(10000), None)
    );
    assert_eq!(b.state_equity, Some(dec!(10000)));
}

#[tokio::test]
async fn only_the_job_and_replay_syncs_leave_equity_points_one_per_bucket() {
    let s = setup();
    let now = s.at(eval_time(s.signal.0));
    let main = AccountId::new(MAIN);
    let points = |from: i64| {
        let repo = s.engine.repo.clone();
        let main = main.clone();
        async move { repo.equity_points(&main, from, i64::MAX).await.unwrap() }
    };
    // What backtests run records no point.
    assert!(s.engine.sync_positions(now).await.ok());
    assert!(points(0).await.is_empty());
    // The job, then a replay's sync in the same 15 minutes: one point, the first reading.
    assert!(s.engine.sync_job(now).await.ok());
    assert!(s.engine.sync_with_history(now + 60_000).await.ok());
    let first = points(0).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!((first[0].at, first[0].equity), (now, dec!(10000)));
    assert_eq!(
        first[0].api_weight_1m, None,
        "the paper exchange meters nothing"
    );
    // The next bucket gets its own.
    let later = s.at(now + crate::state::EQUITY_BUCKET_MS);
    assert!(s.engine.sync_with_history(later).await.ok());
    assert_eq!(points(0).await.len(), 2);
    assert_eq!(points(later).await.len(), 1, "read from a time on");
}
