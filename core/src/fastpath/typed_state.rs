//! The typed in-process state of a backtest ([`StateRepo::typed`](crate::state::StateRepo::typed)):
//! the same items as the key/value stores (see [`crate::state`] for the layout), kept decoded in a
//! [`Table`] under the stores' conditional-write rules, plus [`WriteMarks`], counts of the writes
//! that the quiet-candle memo compares to know that nothing it read has changed.
//!
//! Nothing here is serialised, and keys are built in per-thread buffers ([`with_key`]): a backtest
//! reads and writes this state on every candle, so the typed path allocates only the copies its
//! callers keep.

use crate::domain::{AccountId, AccountState, Position, StrategyId, TradeRecord};
use crate::ports::{Expect, StoreError};
use crate::risk::StrategyStats;
use crate::shares::ShareBook;
use crate::state::{pk_parts, pos_sk_parts, JobRun, RunMarker, Versioned};
use crate::store::memory::{Table, Update};
use std::sync::atomic::{AtomicU64, Ordering};

/// The typed backend's items and how many writes each kind of item has had.
#[derive(Default)]
pub(crate) struct TypedState {
    table: Table<Item>,
    writes: [AtomicU64; 3],
}

/// How many writes the positions and the entry times of an in-process typed state have had, and
/// how many writes could have changed whether the account is paused
/// ([`StateRepo::write_marks`](crate::state::StateRepo::write_marks)): equal marks mean every read
/// of those items, and of `paused`, returns what it returned before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteMarks {
    pub positions: u64,
    pub entries: u64,
    /// Puts and deletes of the account state, and folds that create it or flip `paused`; not
    /// the per-candle equity folds that leave `paused` as it was.
    pub paused: u64,
}

/// One stored item of the typed backend.
#[derive(Clone)]
pub(crate) enum Item {
    Position(Position),
    Trade(TradeRecord),
    Account(AccountState),
    Run(RunMarker),
    Entry(i64),
    Stats(StrategyStats),
    Shares(ShareBook),
    Job(JobRun),
}

/// A state type the typed backend stores, as one variant of [`Item`].
pub(crate) trait TypedItem: Clone + 'static {
    fn wrap(self) -> Item;
    fn peek(item: &Item) -> Option<&Self>;
}

macro_rules! typed_item {
    ($t:ty, $variant:ident) => {
        impl TypedItem for $t {
            fn wrap(self) -> Item {
                Item::$variant(self)
            }
            fn peek(item: &Item) -> Option<&Self> {
                match item {
                    Item::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
typed_item!(Position, Position);
typed_item!(TradeRecord, Trade);
typed_item!(AccountState, Account);
typed_item!(RunMarker, Run);
typed_item!(i64, Entry);
typed_item!(StrategyStats, Stats);
typed_item!(ShareBook, Shares);
typed_item!(JobRun, Job);

fn wrong_type(pk: &str, sk: &str) -> StoreError {
    StoreError::Other(format!("corrupt item {pk}/{sk}: not the expected type"))
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
    pub(crate) fn marks(&self) -> WriteMarks {
        let [p, e, a] = &self.writes;
        WriteMarks {
            positions: p.load(Ordering::Relaxed),
            entries: e.load(Ordering::Relaxed),
            paused: a.load(Ordering::Relaxed),
        }
    }

    /// The item at `pk`/`sk`, copied once.
    pub(crate) fn get<T: TypedItem>(
        &self,
        pk: &str,
        sk: &str,
    ) -> Result<Option<Versioned<T>>, StoreError> {
        self.table
            .read(pk, sk, |version, item| {
                Ok(Versioned {
                    value: T::peek(item).ok_or_else(|| wrong_type(pk, sk))?.clone(),
                    version,
                })
            })
            .transpose()
    }

    /// The items under `prefix`, each copied once (no sort key or wrapper copied with it).
    pub(crate) fn query<T: TypedItem>(
        &self,
        pk: &str,
        prefix: &str,
    ) -> Result<Vec<Versioned<T>>, StoreError> {
        self.table
            .query_with(pk, prefix, |sk, version, item| {
                Ok(Versioned {
                    value: T::peek(item).ok_or_else(|| wrong_type(pk, sk))?.clone(),
                    version,
                })
            })
            .into_iter()
            .collect()
    }

    /// The items under `prefix` with their sort keys.
    pub(crate) fn query_keyed<T: TypedItem>(
        &self,
        pk: &str,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, StoreError> {
        self.table
            .query_with(pk, prefix, |sk, _, item| {
                Ok((
                    sk.to_string(),
                    T::peek(item).ok_or_else(|| wrong_type(pk, sk))?.clone(),
                ))
            })
            .into_iter()
            .collect()
    }

    /// Write `value` if `expect` holds.
    pub(crate) fn put<T: TypedItem>(
        &self,
        pk: &str,
        sk: &str,
        value: &T,
        expect: Expect,
    ) -> Result<u64, StoreError> {
        let v = self.table.put(pk, sk, value.clone().wrap(), expect)?;
        self.wrote(sk);
        Ok(v)
    }

    /// Delete if `expect` holds.
    pub(crate) fn delete(&self, pk: &str, sk: &str, expect: Expect) -> Result<(), StoreError> {
        self.table.delete(pk, sk, expect)?;
        self.wrote(sk);
        Ok(())
    }

    /// All positions of an account, the partition key in the thread's buffer: every evaluation
    /// lists positions.
    pub(crate) fn positions(
        &self,
        account: &AccountId,
    ) -> Result<Vec<Versioned<Position>>, StoreError> {
        with_pk(account, |pk| self.query(pk, "POS#"))
    }

    /// Save a position if `expect` holds, keys in the thread's buffers: the quiet candles of a
    /// backtest save here whenever the best price moves.
    pub(crate) fn save_position(&self, pos: &Position, expect: Expect) -> Result<u64, StoreError> {
        let k = &pos.key;
        with_pk(&k.account, |pk| {
            with_key(&pos_sk_parts(&k.strategy, &k.symbol), |sk| {
                self.put(pk, sk, pos, expect)
            })
        })
    }

    /// Fold `f` into the account's state in place (see
    /// [`StateRepo::update_account_state`](crate::state::StateRepo::update_account_state)). It
    /// runs under the table's lock: a read and a conditional write that nothing can come between.
    pub(crate) fn update_account_state<R>(
        &self,
        account: &AccountId,
        f: impl FnOnce(&mut AccountState, bool) -> (bool, R),
    ) -> Result<R, StoreError> {
        with_pk(account, |pk| {
            // Whether the write (if any) can change what `account_paused` reads.
            let mut flips = true;
            let (r, wrote) = self.table.update(pk, "STATE", |item| match item {
                None => {
                    let mut st = AccountState::default();
                    let (write, r) = f(&mut st, false);
                    let update = if write {
                        Update::Put(Item::Account(st))
                    } else {
                        Update::Keep
                    };
                    (update, Some(r))
                }
                Some(Item::Account(st)) => {
                    let was = st.paused;
                    let (write, r) = f(st, true);
                    flips = st.paused != was;
                    let update = if write { Update::Changed } else { Update::Keep };
                    (update, Some(r))
                }
                Some(_) => (Update::Keep, None),
            });
            if wrote.is_some() && flips {
                self.wrote("STATE");
            }
            r.ok_or_else(|| wrong_type(pk, "STATE"))
        })
    }

    /// Let `f` update, replace or create the strategy's stats item in place (see
    /// [`StateRepo::update_strategy_stats`](crate::state::StateRepo::update_strategy_stats)),
    /// under the table's lock, without copying the window of recent trades.
    pub(crate) fn update_strategy_stats<R>(
        &self,
        account: &AccountId,
        strategy: &StrategyId,
        f: impl FnOnce(Option<&mut StrategyStats>) -> (Update<StrategyStats>, R),
    ) -> Result<R, StoreError> {
        with_pk(account, |pk| {
            with_key(&["STATS#", &strategy.0], |sk| {
                let (r, _) = self.table.update(pk, sk, |item| {
                    let (update, r) = match item {
                        None => f(None),
                        Some(Item::Stats(st)) => f(Some(st)),
                        Some(_) => return (Update::Keep, Err(wrong_type(pk, sk))),
                    };
                    let update = match update {
                        Update::Keep => Update::Keep,
                        Update::Changed => Update::Changed,
                        Update::Put(st) => Update::Put(Item::Stats(st)),
                    };
                    (update, Ok(r))
                });
                r
            })
        })
    }

    /// Whether the account is paused (`None`: no state yet), read in place.
    pub(crate) fn account_paused(&self, account: &AccountId) -> Result<Option<bool>, StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Notional, Symbol};
    use crate::state::{pk, pos_sk, StateRepo};
    use rust_decimal::Decimal;

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
        let repo = StateRepo::typed();
        let a = AccountId::new("main");
        let mark = || repo.write_marks().expect("typed").paused;
        let fold = |f: fn(&mut AccountState)| {
            repo.fold_account_state(&a, |st, _| {
                f(st);
                (true, ())
            })
            .expect("typed")
            .expect("fold");
        };
        let m0 = mark();
        // Created by a fold: what `account_paused` reads changes from "no state".
        fold(|st| st.equity = Notional::new(Decimal::from(100)));
        let m1 = mark();
        assert_ne!(m1, m0);
        // Equity folds that leave `paused` alone do not move it.
        fold(|st| st.peak_equity = Notional::new(Decimal::from(120)));
        fold(|st| st.mdd_level = 2);
        assert_eq!(mark(), m1);
        assert_eq!(repo.account_paused(&a).await.unwrap(), Some(false));
        // A fold that pauses, then one that resumes: each moves it.
        fold(|st| st.paused = true);
        let m2 = mark();
        assert_ne!(m2, m1);
        assert_eq!(repo.account_paused(&a).await.unwrap(), Some(true));
        fold(|st| st.paused = false);
        let m3 = mark();
        assert_ne!(m3, m2);
        // A fold that writes nothing moves nothing, through either entry point.
        repo.fold_account_state(&a, |_, _| (false, ()));
        repo.update_account_state(&a, |_, _| (false, ()))
            .await
            .unwrap();
        assert_eq!(mark(), m3);
        // An update that pauses moves it.
        repo.update_account_state(&a, |st, _| {
            st.paused = true;
            (true, ())
        })
        .await
        .unwrap();
        let m4 = mark();
        assert_ne!(m4, m3);
        // Any put does (it may change anything).
        let st = repo.account_state(&a).await.unwrap().expect("stored");
        repo.save_account_state(&a, &st.value, Some(st.version))
            .await
            .unwrap();
        assert_ne!(mark(), m4);
    }
}
