//! The typed in-process state of a backtest: the research fast path's
//! [`StateBackend`], holding the same items as the key/value stores (see [`crate::state`] for the
//! layout) decoded in a [`Table`] under the stores' conditional-write rules, plus [`WriteMarks`],
//! counts of the writes that the quiet-candle memo compares to know that nothing it read has
//! changed. A backtest builds its [`StateRepo`](crate::state::StateRepo) over it
//! ([`StateRepo::over`](crate::state::StateRepo::over)) and keeps the `Arc` to read the marks.
//!
//! Nothing here is serialised, keys are built in per-thread buffers ([`with_key`]), and every
//! call is answered at once ([`Answer::now`]): a backtest reads and writes this state on every
//! candle, so the typed path allocates only the copies its callers keep.

use crate::domain::{AccountId, AccountState, Position, StrategyId};
use crate::ports::{Expect, StoreError};
use crate::state::{
    pk_parts, pos_sk_parts, AccountFold, Answer, Item, Kind, Reply, StateBackend, StatsFold,
    UpdateError, Versioned,
};
use crate::store::memory::{Table, Update};
use std::sync::atomic::{AtomicU64, Ordering};

/// The typed backend's items and how many writes each kind of item has had.
#[derive(Default)]
pub struct TypedState {
    table: Table<Item>,
    writes: [AtomicU64; 3],
}

/// How many writes the positions and the entry times of an in-process typed state have had, and
/// how many writes could have changed whether the account is paused ([`TypedState::marks`]):
/// equal marks mean every read of those items, and of `paused`, returns what it returned before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteMarks {
    pub positions: u64,
    pub entries: u64,
    /// Puts and deletes of the account state, and folds that create it or flip `paused`; not
    /// the per-candle equity folds that leave `paused` as it was.
    pub paused: u64,
}

fn wrong_type(pk: &str, sk: &str) -> StoreError {
    StoreError::Other(format!("corrupt item {pk}/{sk}: not the expected type"))
}

/// A copy of `item` when it is of `kind`.
fn copy_of(kind: Kind, pk: &str, sk: &str, item: &Item) -> Result<Item, StoreError> {
    if item.kind() == kind {
        Ok(item.clone())
    } else {
        Err(wrong_type(pk, sk))
    }
}

/// `f` of the key made of `parts`, built in a buffer kept per thread instead of a new String:
/// the typed backend looks keys up on every candle of a backtest. Buffers are taken from a
/// per-thread stack, so nested calls (a partition and a sort key) each have their own.
fn with_key<R>(parts: &[&str], f: impl FnOnce(&str) -> R) -> R {
    thread_local! {
        static KEYS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let mut k = KEYS
        .with(|keys| keys.borrow_mut().pop())
        .unwrap_or_default();
    k.clear();
    for p in parts {
        k.push_str(p);
    }
    let r = f(&k);
    KEYS.with(|keys| keys.borrow_mut().push(k));
    r
}

/// `f` of the account's partition key (see [`with_key`]).
fn with_pk<R>(account: &AccountId, f: impl FnOnce(&str) -> R) -> R {
    with_key(&pk_parts(account), f)
}

impl TypedState {
    /// The current write marks.
    pub fn marks(&self) -> WriteMarks {
        let [p, e, a] = &self.writes;
        WriteMarks {
            positions: p.load(Ordering::Relaxed),
            entries: e.load(Ordering::Relaxed),
            paused: a.load(Ordering::Relaxed),
        }
    }

    /// Fold `f` into the account's state in place, under the table's lock: a read and a
    /// conditional write that nothing can come between.
    fn fold_account(&self, account: &AccountId, f: &mut AccountFold<'_>) -> Result<(), StoreError> {
        with_pk(account, |pk| {
            // Whether the write (if any) can change what `account_paused` reads.
            let mut flips = true;
            let (r, wrote) = self.table.update(pk, "STATE", |item| match item {
                None => {
                    let mut st = AccountState::default();
                    let update = if f(&mut st, false) {
                        Update::Put(Item::Account(st))
                    } else {
                        Update::Keep
                    };
                    (update, Some(()))
                }
                Some(Item::Account(st)) => {
                    let was = st.paused;
                    let write = f(st, true);
                    flips = st.paused != was;
                    let update = if write { Update::Changed } else { Update::Keep };
                    (update, Some(()))
                }
                Some(_) => (Update::Keep, None),
            });
            if wrote.is_some() && flips {
                self.wrote("STATE");
            }
            r.ok_or_else(|| wrong_type(pk, "STATE"))
        })
    }

    /// Let `f` update, replace or create the strategy's stats item in place, under the table's
    /// lock, without copying the window of recent trades.
    fn fold_stats(
        &self,
        account: &AccountId,
        strategy: &StrategyId,
        f: &mut StatsFold<'_>,
    ) -> Result<(), StoreError> {
        with_pk(account, |pk| {
            with_key(&["STATS#", &strategy.0], |sk| {
                let (r, _) = self.table.update(pk, sk, |item| {
                    let update = match item {
                        None => f(None),
                        Some(Item::Stats(st)) => f(Some(st)),
                        Some(_) => return (Update::Keep, Err(wrong_type(pk, sk))),
                    };
                    let update = match update {
                        Update::Keep => Update::Keep,
                        Update::Changed => Update::Changed,
                        Update::Put(st) => Update::Put(Item::Stats(st)),
                    };
                    (update, Ok(()))
                });
                r
            })
        })
    }

    /// All positions of an account, each copied once, the partition key in the thread's buffer.
    fn read_positions(&self, account: &AccountId) -> Result<Vec<Versioned<Position>>, StoreError> {
        with_pk(account, |pk| {
            self.table
                .query_with(pk, "POS#", |sk, version, item| match item {
                    Item::Position(p) => Ok(Versioned {
                        value: p.clone(),
                        version,
                    }),
                    _ => Err(wrong_type(pk, sk)),
                })
                .into_iter()
                .collect()
        })
    }

    fn read_paused(&self, account: &AccountId) -> Result<Option<bool>, StoreError> {
        with_pk(account, |pk| {
            match self.table.read(pk, "STATE", |_, item| match item {
                Item::Account(st) => Some(st.paused),
                _ => None,
            }) {
                Some(Some(p)) => Ok(Some(p)),
                Some(None) => Err(wrong_type(pk, "STATE")),
                None => Ok(None),
            }
        })
    }

    /// Write `item` if `expect` holds.
    fn write(&self, pk: &str, sk: &str, item: Item, expect: Expect) -> Result<u64, StoreError> {
        let v = self.table.put(pk, sk, item, expect)?;
        self.wrote(sk);
        Ok(v)
    }

    /// Count a successful write or delete of the item at `sk`.
    fn wrote(&self, sk: &str) {
        let kind = if sk.starts_with("POS#") {
            0
        } else if sk.starts_with("ENTRY#") {
            1
        } else if sk == "STATE" {
            2
        } else {
            return;
        };
        self.writes[kind].fetch_add(1, Ordering::Relaxed);
    }
}

/// Every call is answered at once: the items live in this process.
impl StateBackend for TypedState {
    fn describe(&self) -> String {
        "memory (typed)".to_string()
    }

    fn get<'a>(
        &'a self,
        kind: Kind,
        pk: &'a str,
        sk: &'a str,
    ) -> Reply<'a, Option<Versioned<Item>>> {
        let read = self.table.read(pk, sk, |version, item| {
            Ok(Versioned {
                value: copy_of(kind, pk, sk, item)?,
                version,
            })
        });
        Answer::now(read.transpose())
    }

    /// `expires_at` is not kept: the state lives and dies with the run.
    fn put<'a>(
        &'a self,
        pk: &'a str,
        sk: &'a str,
        item: Item,
        expect: Expect,
        _expires_at: Option<i64>,
    ) -> Reply<'a, u64> {
        Answer::now(self.write(pk, sk, item, expect))
    }

    fn delete<'a>(&'a self, pk: &'a str, sk: &'a str, expect: Expect) -> Reply<'a, ()> {
        let deleted = self.table.delete(pk, sk, expect);
        if deleted.is_ok() {
            self.wrote(sk);
        }
        Answer::now(deleted)
    }

    fn query<'a>(
        &'a self,
        kind: Kind,
        pk: &'a str,
        prefix: &'a str,
    ) -> Reply<'a, Vec<Versioned<Item>>> {
        let items = self.table.query_with(pk, prefix, |sk, version, item| {
            Ok(Versioned {
                value: copy_of(kind, pk, sk, item)?,
                version,
            })
        });
        Answer::now(items.into_iter().collect())
    }

    fn query_keyed<'a>(
        &'a self,
        kind: Kind,
        pk: &'a str,
        prefix: &'a str,
    ) -> Reply<'a, Vec<(String, Item)>> {
        let items = self.table.query_with(pk, prefix, |sk, _, item| {
            Ok((sk.to_string(), copy_of(kind, pk, sk, item)?))
        });
        Answer::now(items.into_iter().collect())
    }

    fn positions<'a>(&'a self, account: &'a AccountId) -> Reply<'a, Vec<Versioned<Position>>> {
        Answer::now(self.read_positions(account))
    }

    /// Keys in the thread's buffers: the quiet candles of a backtest save here whenever the best
    /// price moves.
    fn save_position<'a>(&'a self, pos: &'a Position, expect: Expect) -> Reply<'a, u64> {
        let k = &pos.key;
        Answer::now(with_pk(&k.account, |pk| {
            with_key(&pos_sk_parts(&k.strategy, &k.symbol), |sk| {
                self.write(pk, sk, Item::Position(pos.clone()), expect)
            })
        }))
    }

    fn update_account_state<'a>(
        &'a self,
        account: &'a AccountId,
        f: &'a mut AccountFold<'a>,
    ) -> Answer<'a, Result<(), UpdateError>> {
        Answer::now(self.fold_account(account, f).map_err(UpdateError::from))
    }

    fn update_strategy_stats<'a>(
        &'a self,
        account: &'a AccountId,
        strategy: &'a StrategyId,
        f: &'a mut StatsFold<'a>,
    ) -> Answer<'a, Result<(), UpdateError>> {
        Answer::now(
            self.fold_stats(account, strategy, f)
                .map_err(UpdateError::from),
        )
    }

    fn account_paused<'a>(&'a self, account: &'a AccountId) -> Reply<'a, Option<bool>> {
        Answer::now(self.read_paused(account))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Notional, Symbol};
    use crate::state::{pk, pos_sk, StateRepo};
    use rust_decimal::Decimal;
    use std::sync::Arc;

    #[test]
    fn keys_built_in_the_thread_buffers_nest() {
        let (a, b) = (AccountId::new("main"), AccountId::new("sub1"));
        let (outer, inner, sk) = with_pk(&a, |ka| {
            let inner = with_pk(&b, |kb| kb.to_string());
            let sk = with_key(&["POS#", "TFPE", "#", "BTCUSDT"], |sk| {
                // Every buffer in use still holds its own key.
                assert_eq!(ka, "ACCT#main");
                sk.to_string()
            });
            assert_eq!(ka, "ACCT#main");
            (ka.to_string(), inner, sk)
        });
        assert_eq!((outer.as_str(), inner.as_str()), ("ACCT#main", "ACCT#sub1"));
        assert_eq!(
            sk,
            pos_sk(&StrategyId::new("TFPE"), &Symbol::new("BTCUSDT"))
        );
        // A shorter key after a longer one in the same buffer.
        assert_eq!(with_pk(&b, |k| k.to_string()), pk(&b));
        assert_eq!(with_key(&["A", "B"], |k| k.to_string()), "AB");
    }

    #[test]
    fn only_positions_entries_and_the_account_state_are_counted() {
        let t = TypedState::default();
        let zero = WriteMarks {
            positions: 0,
            entries: 0,
            paused: 0,
        };
        for sk in [
            "TRADE#1",
            "STATS#X",
            "RUN#1h#X#Y#0",
            "SHARES#X",
            "JOB#x",
            "STATES",
        ] {
            t.wrote(sk);
        }
        assert_eq!(t.marks(), zero);
        t.wrote("POS#X#Y");
        t.wrote("ENTRY#X");
        t.wrote("ENTRY#Y");
        t.wrote("STATE");
        assert_eq!(
            t.marks(),
            WriteMarks {
                positions: 1,
                entries: 2,
                paused: 1
            }
        );
    }

    #[tokio::test]
    async fn the_paused_mark_moves_on_every_write_that_can_change_paused_and_only_then() {
        let state = Arc::new(TypedState::default());
        let repo = StateRepo::over(state.clone());
        let a = AccountId::new("main");
        let mark = || state.marks().paused;
        let update = |f: fn(&mut AccountState)| {
            repo.update_account_state(&a, move |st, _| {
                f(st);
                (true, ())
            })
        };
        let m0 = mark();
        // Created by an update: what `account_paused` reads changes from "no state".
        update(|st| st.equity = Notional::new(Decimal::from(100)))
            .await
            .unwrap();
        let m1 = mark();
        assert_ne!(m1, m0);
        // Equity updates that leave `paused` alone do not move it.
        update(|st| st.peak_equity = Notional::new(Decimal::from(120)))
            .await
            .unwrap();
        update(|st| st.mdd_level = 2).await.unwrap();
        assert_eq!(mark(), m1);
        assert_eq!(repo.account_paused(&a).await.unwrap(), Some(false));
        // An update that pauses, then one that resumes: each moves it.
        update(|st| st.paused = true).await.unwrap();
        let m2 = mark();
        assert_ne!(m2, m1);
        assert_eq!(repo.account_paused(&a).await.unwrap(), Some(true));
        update(|st| st.paused = false).await.unwrap();
        let m3 = mark();
        assert_ne!(m3, m2);
        // An update that writes nothing moves nothing, even one that changed `paused` and put it
        // back.
        repo.update_account_state(&a, |_, _| (false, ()))
            .await
            .unwrap();
        repo.update_account_state(&a, |st, _| {
            st.paused = true;
            st.paused = false;
            (false, ())
        })
        .await
        .unwrap();
        assert_eq!(mark(), m3);
        // Any put does (it may change anything).
        let st = repo.account_state(&a).await.unwrap().expect("stored");
        repo.save_account_state(&a, &st.value, Some(st.version))
            .await
            .unwrap();
        assert_ne!(mark(), m3);
    }
}
