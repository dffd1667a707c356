//! The typed in-process state of backtests (`StateRepo::typed`) must behave exactly like the
//! JSON-over-store state the jobs use: the same operation sequence gives the same results
//! (versions, conflicts, "already recorded") and the same reads, on both. Random sequences of
//! every `StateRepo` write and read, with stale versions and replays mixed in.

use albra_core::domain::{
    AccountId, AccountState, Notional, Position, PositionKey, StrategyId, Symbol, Timeframe,
    TradeRecord,
};
use albra_core::risk::StrategyStats;
use albra_core::state::{RunKey, StateRepo};
use albra_core::store::memory::MemoryStore;
use proptest::prelude::*;
use rust_decimal::Decimal;
use std::sync::Arc;

#[derive(Clone, Debug)]
enum Op {
    SavePosition {
        who: u8,
        version: Option<u64>,
        qty: u32,
    },
    DeletePosition {
        who: u8,
        version: u64,
    },
    RecordTrade {
        n: u8,
        pnl: i32,
    },
    RecordEntry {
        strategy: u8,
        time: i64,
    },
    SaveState {
        version: Option<u64>,
        equity: u32,
    },
    /// Fold a reading into the state: set equity, raise the peak, leave it when unchanged.
    FoldState {
        equity: u32,
    },
    SaveStats {
        strategy: u8,
        version: Option<u64>,
        n: u8,
    },
    /// Count a trade in a strategy's stats as the engine does: in place when the item exists
    /// and keeps 3 trades; a missing or differently sized item is left alone.
    FoldStats {
        strategy: u8,
        n: u8,
        pnl: i32,
    },
    Claim {
        open: u8,
        now: i64,
    },
    Finish {
        open: u8,
        version: u64,
    },
    Release {
        open: u8,
        version: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let v = prop_oneof![Just(None), (1u64..4).prop_map(Some)];
    prop_oneof![
        (0u8..3, v.clone(), 1u32..100).prop_map(|(who, version, qty)| Op::SavePosition {
            who,
            version,
            qty
        }),
        (0u8..3, 1u64..4).prop_map(|(who, version)| Op::DeletePosition { who, version }),
        (0u8..6, -50i32..50).prop_map(|(n, pnl)| Op::RecordTrade { n, pnl }),
        (0u8..2, 0i64..10).prop_map(|(strategy, time)| Op::RecordEntry { strategy, time }),
        (v.clone(), 1u32..20_000).prop_map(|(version, equity)| Op::SaveState { version, equity }),
        (1u32..5).prop_map(|equity| Op::FoldState { equity }),
        (0u8..2, v, 0u8..5).prop_map(|(strategy, version, n)| Op::SaveStats {
            strategy,
            version,
            n
        }),
        (0u8..2, 0u8..8, -50i32..50).prop_map(|(strategy, n, pnl)| Op::FoldStats {
            strategy,
            n,
            pnl
        }),
        (0u8..3, 0i64..200).prop_map(|(open, now)| Op::Claim { open, now }),
        (0u8..3, 1u64..3).prop_map(|(open, version)| Op::Finish { open, version }),
        (0u8..3, 1u64..3).prop_map(|(open, version)| Op::Release { open, version }),
    ]
}

fn acct() -> AccountId {
    AccountId::new("main")
}

fn strategy(i: u8) -> StrategyId {
    StrategyId::new(["EMA_CROSS", "TFPE", "ZLMACD_ICHIMOKU"][i as usize % 3])
}

fn key(who: u8) -> PositionKey {
    PositionKey {
        account: acct(),
        strategy: strategy(who),
        symbol: Symbol::new(if who == 2 { "ETHUSDT" } else { "BTCUSDT" }),
    }
}

fn position(who: u8, qty: u32) -> Position {
    let k = key(who);
    serde_json::from_value(serde_json::json!({
        "key": k, "side": "LONG", "qty": Decimal::new(qty as i64, 3), "entry_price": "100",
        "leverage": 5, "status": "ACTIVE", "is_manual": false, "entry_client_id": "albEN-x",
        "signal_open_time": 0, "opened_at": 1, "stop_loss": null, "take_profit": null,
        "stop_client_id": null, "best_price": null, "updated_at": 2
    }))
    .expect("a position from its required fields")
}

fn trade(n: u8, pnl: i32) -> TradeRecord {
    serde_json::from_value(serde_json::json!({
        "id": format!("t{n}"), "account": acct(), "strategy": strategy(n % 2),
        "symbol": "BTCUSDT", "side": "LONG", "qty": "0.01", "entry_price": "100",
        "exit_price": "101", "entry_time": 1, "exit_time": 1000 + i64::from(n),
        "pnl": Decimal::from(pnl), "fees": "0.1", "reason": "test"
    }))
    .expect("a trade from its required fields")
}

fn run_key(open: u8) -> RunKey {
    RunKey {
        account: acct(),
        strategy: strategy(0),
        symbol: Symbol::new("BTCUSDT"),
        tf: Timeframe::H1,
        open_time: i64::from(open) * 3_600_000,
    }
}

/// Apply one op; the outcome as text (value or error kind) so both backends compare equal.
async fn apply(repo: &StateRepo, op: &Op) -> String {
    fn out<T: std::fmt::Debug, E: std::fmt::Display>(r: Result<T, E>) -> String {
        match r {
            Ok(v) => format!("ok {v:?}"),
            // Conflicts name the item and the versions; the wording is the stores' own.
            Err(e) => format!("err {e}"),
        }
    }
    match op {
        Op::SavePosition { who, version, qty } => {
            out(repo.save_position(&position(*who, *qty), *version).await)
        }
        Op::DeletePosition { who, version } => {
            out(repo.delete_position(&key(*who), *version).await)
        }
        Op::RecordTrade { n, pnl } => out(repo.record_trade(&trade(*n, *pnl)).await),
        Op::RecordEntry { strategy: s, time } => {
            out(repo.record_entry(&acct(), &strategy(*s), *time).await)
        }
        Op::SaveState { version, equity } => {
            let st = AccountState {
                equity: Notional(Decimal::from(*equity)),
                counted_trade_keys: vec![u64::from(*equity)].into(),
                ..AccountState::default()
            };
            out(repo.save_account_state(&acct(), &st, *version).await)
        }
        Op::FoldState { equity } => {
            let reading = Notional(Decimal::from(*equity));
            // The fold a job makes: write when there is no state yet or it changed; otherwise
            // leave it exactly as it was.
            let fold = |st: &mut AccountState, existing: bool| {
                let before = st.clone();
                st.equity = reading;
                st.peak_equity = st.peak_equity.max(reading);
                let write = !existing || *st != before;
                if !write {
                    *st = before;
                }
                (write, st.clone())
            };
            // The typed backend folds in place; a key/value store reads and saves on the
            // version read, which is what the in-place fold must amount to.
            match repo.fold_account_state(&acct(), fold) {
                Some(r) => out(r),
                None => {
                    let cur = repo.account_state(&acct()).await.unwrap();
                    let mut st = cur.as_ref().map(|v| v.value.clone()).unwrap_or_default();
                    let (write, st) = fold(&mut st, cur.is_some());
                    if write {
                        repo.save_account_state(&acct(), &st, cur.map(|v| v.version))
                            .await
                            .unwrap();
                    }
                    format!("ok {st:?}")
                }
            }
        }
        Op::SaveStats {
            strategy: s,
            version,
            n,
        } => {
            let st = StrategyStats::from_trades(
                (0..*n).map(|i| (i64::from(i), "x", Decimal::from(i))),
                0,
                // Now and then a window of another size, which a count leaves alone.
                if *n == 4 { 2 } else { 3 },
            );
            out(repo
                .save_strategy_stats(&acct(), &strategy(*s), &st, *version)
                .await)
        }
        Op::FoldStats {
            strategy: s,
            n,
            pnl,
        } => {
            let fold = |st: &mut StrategyStats| {
                if st.keep != 3 {
                    return (false, None);
                }
                let id = format!("t{n}");
                let counted = st.apply(i64::from(*n), &id, Decimal::from(*pnl), 0, 3);
                (counted, Some(counted))
            };
            // The typed backend updates in place; a key/value store reads and saves on the
            // version read, which is what the in-place update must amount to.
            match repo.fold_strategy_stats(&acct(), &strategy(*s), fold) {
                Some(r) => out(r),
                None => {
                    let cur = repo.strategy_stats(&acct(), &strategy(*s)).await.unwrap();
                    let r = match cur {
                        None => None,
                        Some(v) => {
                            let mut st = v.value;
                            let (write, r) = fold(&mut st);
                            if write {
                                repo.save_strategy_stats(
                                    &acct(),
                                    &strategy(*s),
                                    &st,
                                    Some(v.version),
                                )
                                .await
                                .unwrap();
                            }
                            Some(r)
                        }
                    };
                    format!("ok {r:?}")
                }
            }
        }
        // A 100 ms lease: later claims in a sequence take over some and find others held.
        Op::Claim { open, now } => out(repo.claim_run(&run_key(*open), *now, 100).await),
        Op::Finish { open, version } => {
            out(repo.finish_run(&run_key(*open), *version, 7, "done").await)
        }
        Op::Release { open, version } => out(repo.release_run(&run_key(*open), *version).await),
    }
}

/// Everything readable, as text.
async fn snapshot(repo: &StateRepo) -> String {
    let mut s = String::new();
    s += &format!("{:?}\n", repo.positions(&acct()).await.unwrap());
    s += &format!("{:?}\n", repo.trades(&acct()).await.unwrap());
    s += &format!("{:?}\n", repo.account_state(&acct()).await.unwrap());
    for i in 0..3 {
        s += &format!("{:?}\n", repo.position(&key(i)).await.unwrap());
        s += &format!(
            "{:?}\n",
            repo.last_entry(&acct(), &strategy(i)).await.unwrap()
        );
        s += &format!(
            "{:?}\n",
            repo.strategy_stats(&acct(), &strategy(i)).await.unwrap()
        );
        s += &format!("{:?}\n", repo.run_marker(&run_key(i)).await.unwrap());
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn typed_state_behaves_like_the_store(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let kv = StateRepo::new(Arc::new(MemoryStore::new()));
            let typed = StateRepo::typed();
            for (i, op) in ops.iter().enumerate() {
                let (a, b) = (apply(&kv, op).await, apply(&typed, op).await);
                prop_assert_eq!(&a, &b, "op {} {:?}", i, op);
                prop_assert_eq!(snapshot(&kv).await, snapshot(&typed).await, "after op {} {:?}", i, op);
            }
            Ok(())
        })?;
    }
}
