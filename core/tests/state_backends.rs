//! The typed in-process state of backtests (`TypedState`) must behave exactly like the
//! JSON-over-store state the jobs use: the same operation sequence gives the same results
//! (versions, conflicts, "already recorded") and the same reads, on both. Random sequences of
//! every `StateRepo` write and read, with stale versions and replays mixed in; and the updates
//! (`update_account_state`, `update_strategy_stats`) that callers make the same way on both,
//! including the key/value path's retry when another writer comes between its read and its save.

use albra_core::domain::{
    AccountId, AccountState, Notional, Position, PositionKey, StrategyId, Symbol, Timeframe,
    TradeRecord,
};
use albra_core::fastpath::typed_state::TypedState;
use albra_core::ports::{Expect, Record, StateStore, StoreError};
use albra_core::risk::StrategyStats;
use albra_core::state::{RunKey, StateRepo, UpdateError};
use albra_core::store::memory::{MemoryStore, Update};
use proptest::prelude::*;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Fold a reading into an existing state: set equity, raise the peak; write nothing when
    /// there is no state yet or nothing changed.
    TouchState {
        equity: u32,
    },
    /// Fold a reading into the state, creating it when there is none.
    UpdateState {
        equity: u32,
    },
    SaveStats {
        strategy: u8,
        version: Option<u64>,
        n: u8,
    },
    /// Count a trade in a strategy's stats as the engine does: in place when the item exists
    /// and keeps 3 trades; a missing or differently sized item is left alone.
    CountStats {
        strategy: u8,
        n: u8,
        pnl: i32,
    },
    /// Count a trade through `update_strategy_stats`: in place when the item keeps 3 trades,
    /// else (missing or another size) replaced by a window of 3 built afresh.
    UpdateStats {
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
        (1u32..5).prop_map(|equity| Op::TouchState { equity }),
        (1u32..5).prop_map(|equity| Op::UpdateState { equity }),
        (0u8..2, v, 0u8..5).prop_map(|(strategy, version, n)| Op::SaveStats {
            strategy,
            version,
            n
        }),
        (0u8..2, 0u8..8, -50i32..50).prop_map(|(strategy, n, pnl)| Op::CountStats {
            strategy,
            n,
            pnl
        }),
        (0u8..2, 0u8..8, -50i32..50).prop_map(|(strategy, n, pnl)| Op::UpdateStats {
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
                equity: Notional::new(Decimal::from(*equity)),
                counted_trade_keys: vec![u64::from(*equity)].into(),
                ..AccountState::default()
            };
            out(repo.save_account_state(&acct(), &st, *version).await)
        }
        Op::TouchState { equity } => {
            let reading = Notional::new(Decimal::from(*equity));
            // Never creates: a missing state is left missing, and `f` still runs once.
            out(repo
                .update_account_state(&acct(), |st, existing| {
                    let before = st.clone();
                    st.equity = reading;
                    st.peak_equity = st.peak_equity.max(reading);
                    let write = existing && *st != before;
                    if !write {
                        *st = before;
                    }
                    (write, (existing, st.clone()))
                })
                .await)
        }
        Op::UpdateState { equity } => {
            let reading = Notional::new(Decimal::from(*equity));
            out(repo
                .update_account_state(&acct(), |st, existing| {
                    let before = st.clone();
                    st.equity = reading;
                    st.peak_equity = st.peak_equity.max(reading);
                    let write = !existing || *st != before;
                    if !write {
                        *st = before;
                    }
                    (write, (existing, st.clone()))
                })
                .await)
        }
        Op::UpdateStats {
            strategy: s,
            n,
            pnl,
        } => out(repo
            .update_strategy_stats(&acct(), &strategy(*s), |st| {
                let id = format!("t{n}");
                match st {
                    Some(st) if st.keep == 3 => {
                        let counted = st.apply(i64::from(*n), &id, Decimal::from(*pnl), 0, 3);
                        let update = if counted {
                            Update::Changed
                        } else {
                            Update::Keep
                        };
                        (update, format!("counted {counted}"))
                    }
                    other => {
                        let fresh = StrategyStats::from_trades(
                            [(i64::from(*n), id.as_str(), Decimal::from(*pnl))],
                            0,
                            3,
                        );
                        (
                            Update::Put(fresh),
                            format!("rebuilt over {}", other.is_some()),
                        )
                    }
                }
            })
            .await),
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
        Op::CountStats {
            strategy: s,
            n,
            pnl,
        } => out(repo
            .update_strategy_stats(&acct(), &strategy(*s), |st| match st {
                // Missing: `None`; another size: `Some(None)`; counted or not: `Some(Some(_))`.
                None => (Update::Keep, None),
                Some(st) if st.keep != 3 => (Update::Keep, Some(None)),
                Some(st) => {
                    let id = format!("t{n}");
                    let counted = st.apply(i64::from(*n), &id, Decimal::from(*pnl), 0, 3);
                    let update = if counted {
                        Update::Changed
                    } else {
                        Update::Keep
                    };
                    (update, Some(Some(counted)))
                }
            })
            .await),
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
            let typed = StateRepo::over(Arc::new(TypedState::default()));
            for (i, op) in ops.iter().enumerate() {
                let (a, b) = (apply(&kv, op).await, apply(&typed, op).await);
                prop_assert_eq!(&a, &b, "op {} {:?}", i, op);
                prop_assert_eq!(snapshot(&kv).await, snapshot(&typed).await, "after op {} {:?}", i, op);
            }
            Ok(())
        })?;
    }
}

/// A store through which another writer saves right after each of the first `interfere` reads
/// of an item: the reader's conditional save on the version it read then conflicts.
struct Interfering {
    inner: Arc<MemoryStore>,
    interfere: AtomicUsize,
}

#[async_trait::async_trait]
impl StateStore for Interfering {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Record>, StoreError> {
        let read = self.inner.get(pk, sk).await?;
        let left = self.interfere.load(Ordering::SeqCst);
        if left > 0 {
            self.interfere.store(left - 1, Ordering::SeqCst);
            // The other writer re-saves what is there (or creates it), moving the version on.
            let (body, expect) = match &read {
                Some(r) => (r.body.clone(), Expect::Version(r.version)),
                None if sk == "STATE" => (
                    serde_json::to_string(&AccountState::default()).unwrap(),
                    Expect::Absent,
                ),
                None => (
                    serde_json::to_string(&StrategyStats::from_trades([], 0, 3)).unwrap(),
                    Expect::Absent,
                ),
            };
            self.inner.put(pk, sk, &body, expect, None).await?;
        }
        Ok(read)
    }
    async fn put(
        &self,
        pk: &str,
        sk: &str,
        body: &str,
        expect: Expect,
        expires_at: Option<i64>,
    ) -> Result<u64, StoreError> {
        self.inner.put(pk, sk, body, expect, expires_at).await
    }
    async fn delete(&self, pk: &str, sk: &str, expect: Expect) -> Result<(), StoreError> {
        self.inner.delete(pk, sk, expect).await
    }
    async fn query(&self, pk: &str, sk_prefix: &str) -> Result<Vec<Record>, StoreError> {
        self.inner.query(pk, sk_prefix).await
    }
    fn describe(&self) -> String {
        "interfering memory".into()
    }
}

fn interfering(times: usize) -> (StateRepo, Arc<MemoryStore>) {
    let inner = Arc::new(MemoryStore::new());
    let store = Interfering {
        inner: inner.clone(),
        interfere: AtomicUsize::new(times),
    };
    (StateRepo::new(Arc::new(store)), inner)
}

fn equity(st: &AccountState) -> u32 {
    st.equity.get().to_u32().unwrap()
}

/// The fold the checks below make: set equity to `to` unless it is there already.
fn set_equity(to: u32) -> impl FnMut(&mut AccountState, bool) -> (bool, (bool, u32)) {
    move |st, existing| {
        let write = equity(st) != to || !existing;
        if write {
            st.equity = Notional::new(Decimal::from(to));
        }
        (write, (existing, equity(st)))
    }
}

#[tokio::test]
async fn account_updates_give_the_same_results_and_versions_on_both_backends() {
    let a = acct();
    for repo in [
        StateRepo::new(Arc::new(MemoryStore::new())),
        StateRepo::over(Arc::new(TypedState::default())),
    ] {
        let name = repo.describe();
        let version = || async { repo.account_state(&a).await.unwrap().map(|v| v.version) };
        // Absent: `f` gets a default state and `false`; writing nothing leaves it absent.
        let r = repo.update_account_state(&a, |st, existing| {
            assert_eq!(*st, AccountState::default());
            (false, existing)
        });
        assert!(!r.await.unwrap(), "{name}");
        assert_eq!(version().await, None, "{name}");
        // A write creates it at version 1.
        let r = repo.update_account_state(&a, set_equity(100)).await;
        assert_eq!(r.unwrap(), (false, 100), "{name}");
        assert_eq!(version().await, Some(1), "{name}");
        // A fold that writes nothing leaves the version.
        let r = repo.update_account_state(&a, set_equity(100)).await;
        assert_eq!(r.unwrap(), (true, 100), "{name}");
        assert_eq!(version().await, Some(1), "{name}");
        // A write bumps it, and what was written is read back.
        let r = repo.update_account_state(&a, set_equity(7)).await;
        assert_eq!(r.unwrap(), (true, 7), "{name}");
        let st = repo.account_state(&a).await.unwrap().unwrap();
        assert_eq!((st.version, equity(&st.value)), (2, 7), "{name}");
    }
}

#[tokio::test]
async fn stats_updates_give_the_same_results_and_versions_on_both_backends() {
    let a = acct();
    let s = strategy(0);
    for repo in [
        StateRepo::new(Arc::new(MemoryStore::new())),
        StateRepo::over(Arc::new(TypedState::default())),
    ] {
        let name = repo.describe();
        let version = || async {
            repo.strategy_stats(&a, &s)
                .await
                .unwrap()
                .map(|v| v.version)
        };
        let count = |n: i64, pnl: i64| {
            move |st: Option<&mut StrategyStats>| match st {
                Some(st) if st.keep == 3 => {
                    let counted = st.apply(n, &format!("t{n}"), Decimal::from(pnl), 0, 3);
                    let u = if counted {
                        Update::Changed
                    } else {
                        Update::Keep
                    };
                    (u, Some(counted))
                }
                _ => (Update::Keep, None),
            }
        };
        // Absent: `f` gets `None`; keeping writes nothing, and `Changed` has nothing to write.
        assert_eq!(
            repo.update_strategy_stats(&a, &s, count(1, 5))
                .await
                .unwrap(),
            None
        );
        let r = repo.update_strategy_stats(&a, &s, |st| (Update::Changed, st.is_none()));
        assert!(r.await.unwrap(), "{name}");
        assert_eq!(version().await, None, "{name}");
        // `Put` creates it at version 1.
        let r = repo.update_strategy_stats(&a, &s, |_| {
            (Update::Put(StrategyStats::from_trades([], 0, 3)), ())
        });
        r.await.unwrap();
        assert_eq!(version().await, Some(1), "{name}");
        // A count bumps the version; the same trade again is not counted and writes nothing.
        let r = repo.update_strategy_stats(&a, &s, count(1, 5)).await;
        assert_eq!(r.unwrap(), Some(true), "{name}");
        assert_eq!(version().await, Some(2), "{name}");
        let r = repo.update_strategy_stats(&a, &s, count(1, 5)).await;
        assert_eq!(r.unwrap(), Some(false), "{name}");
        assert_eq!(version().await, Some(2), "{name}");
        // `Put` over an existing item replaces it.
        let r = repo.update_strategy_stats(&a, &s, |_| {
            (Update::Put(StrategyStats::from_trades([], 0, 2)), ())
        });
        r.await.unwrap();
        let st = repo.strategy_stats(&a, &s).await.unwrap().unwrap();
        assert_eq!((st.version, st.value.keep), (3, 2), "{name}");
        assert_eq!(st.value, StrategyStats::from_trades([], 0, 2), "{name}");
    }
}

#[tokio::test]
async fn a_key_value_update_reads_again_when_another_writer_came_in_between() {
    // The account state: created by the other writer between the read and the save.
    let (repo, inner) = interfering(1);
    let mut calls = Vec::new();
    let r = repo
        .update_account_state(&acct(), |st, existing| {
            calls.push(existing);
            set_equity(9)(st, existing)
        })
        .await;
    // The first run saw no state; its create conflicted; the second saw the other's, at 1.
    assert_eq!(r.unwrap(), (true, 9));
    assert_eq!(calls, vec![false, true]);
    let other = StateRepo::new(inner);
    let st = other.account_state(&acct()).await.unwrap().unwrap();
    assert_eq!((st.version, equity(&st.value)), (2, 9));

    // The stats: updated by the other writer between each of two reads and their saves.
    let (repo, inner) = interfering(0);
    let s = strategy(1);
    let fresh = StrategyStats::from_trades([], 0, 3);
    repo.save_strategy_stats(&acct(), &s, &fresh, None)
        .await
        .unwrap();
    let repo = {
        let store = Interfering {
            inner: inner.clone(),
            interfere: AtomicUsize::new(2),
        };
        StateRepo::new(Arc::new(store))
    };
    let mut runs = 0;
    let r = repo
        .update_strategy_stats(&acct(), &s, |st| {
            runs += 1;
            let st = st.expect("there is an item");
            let counted = st.apply(3, "t3", Decimal::from(4), 0, 3);
            (Update::Changed, counted)
        })
        .await;
    assert_eq!((r.unwrap(), runs), (true, 3));
    // Created at 1, re-saved by the other writer twice, then this update's save.
    let st = StateRepo::new(inner)
        .strategy_stats(&acct(), &s)
        .await
        .unwrap();
    assert_eq!(st.map(|v| v.version), Some(4));
}

#[tokio::test]
async fn a_key_value_update_that_always_loses_is_contended_after_three_attempts() {
    let (repo, inner) = interfering(usize::MAX);
    let mut runs = 0;
    let r = repo
        .update_account_state(&acct(), |st, existing| {
            runs += 1;
            set_equity(5)(st, existing)
        })
        .await;
    assert!(matches!(r, Err(UpdateError::Contended { .. })), "{r:?}");
    assert_eq!(runs, albra_core::state::UPDATE_ATTEMPTS);
    // Only the other writer's saves landed (created, then re-saved twice).
    let st = StateRepo::new(inner)
        .account_state(&acct())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((st.version, equity(&st.value)), (3, 0));
    let (repo, _) = interfering(usize::MAX);
    let r = repo
        .update_strategy_stats(&acct(), &strategy(0), |_| {
            (Update::Put(StrategyStats::from_trades([], 0, 3)), ())
        })
        .await;
    assert!(matches!(r, Err(UpdateError::Contended { .. })), "{r:?}");
}
