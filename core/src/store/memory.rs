//! In-memory state for scratch runs (backtests, replay, walk-forward), gone when the process ends.
//!
//! [`Table`] owns the conditional-write rules (create-if-absent, version match, versions start at
//! 1 and grow by one per put) over any item type, in a map per partition with sort keys ordered
//! for prefix queries, behind a mutex. [`MemoryStore`] is a `Table` of JSON bodies behind the
//! [`StateStore`] port and passes the same contract suite as the durable stores; the typed state
//! of a backtest ([`TypedState`](crate::fastpath::typed_state::TypedState)) is a `Table` of decoded
//! items, so the same rules hold without serialising anything. Lookups borrow the caller's keys: a backtest reads state every candle.

use crate::ports::{Expect, Record, StateStore, StoreError};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// pk → (sk → (version, item)).
type Partitions<B> = HashMap<String, BTreeMap<String, (u64, B)>, Fnv>;

/// FNV-1a for maps keyed by our own short strings (the partition map here, the paper exchange's
/// per-symbol state): the default hasher's resistance to crafted keys buys nothing there, and a
/// backtest hashes such a key several times per candle.
#[derive(Clone, Copy, Default)]
pub(crate) struct Fnv;

pub(crate) struct FnvHasher(u64);

impl std::hash::BuildHasher for Fnv {
    type Hasher = FnvHasher;
    fn build_hasher(&self) -> FnvHasher {
        FnvHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for FnvHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// What the function given to [`Table::update`] did with the item.
pub enum Update<B> {
    /// Left it as it was: nothing is written, the version stays.
    Keep,
    /// Changed it in place: written, the version grows by one (with no item, nothing is written).
    Changed,
    /// Replace it, or create it: written.
    Put(B),
}

/// Versioned items by partition and sort key, with the stores' conditional-write rules.
pub struct Table<B> {
    items: Mutex<Partitions<B>>,
}

impl<B> Default for Table<B> {
    fn default() -> Self {
        Table {
            items: Mutex::new(HashMap::default()),
        }
    }
}

fn conflict(pk: &str, sk: &str, detail: &str) -> StoreError {
    StoreError::Conflict {
        pk: pk.to_string(),
        sk: sk.to_string(),
        detail: detail.to_string(),
    }
}

impl<B: Clone> Table<B> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Partitions<B>> {
        self.items.lock().expect("memory store lock")
    }

    /// The item and its version.
    pub fn get(&self, pk: &str, sk: &str) -> Option<(u64, B)> {
        self.lock().get(pk).and_then(|p| p.get(sk)).cloned()
    }

    /// `f` of the item and its version, read in place (nothing cloned).
    pub fn read<R>(&self, pk: &str, sk: &str, f: impl FnOnce(u64, &B) -> R) -> Option<R> {
        self.lock()
            .get(pk)
            .and_then(|p| p.get(sk))
            .map(|(v, b)| f(*v, b))
    }

    /// Write `item` if `expect` holds; returns the new version.
    pub fn put(&self, pk: &str, sk: &str, item: B, expect: Expect) -> Result<u64, StoreError> {
        let mut items = self.lock();
        let part = match items.get_mut(pk) {
            Some(p) => p,
            None => items.entry(pk.to_string()).or_default(),
        };
        match (expect, part.get_mut(sk)) {
            (Expect::Absent, None) => {
                part.insert(sk.to_string(), (1, item));
                Ok(1)
            }
            (Expect::Absent, Some(_)) => Err(conflict(pk, sk, "item already exists")),
            (Expect::Version(v), Some(slot)) if slot.0 == v => {
                *slot = (v + 1, item);
                Ok(v + 1)
            }
            (Expect::Version(v), Some((found, _))) => Err(conflict(
                pk,
                sk,
                &format!("expected version {v}, found {found}"),
            )),
            (Expect::Version(v), None) => Err(conflict(
                pk,
                sk,
                &format!("expected version {v}, item missing"),
            )),
        }
    }

    /// Let `f` change the item in place, replace it or create it, under the lock: a read and a
    /// conditional write with nothing in between, so it never conflicts. Returns `f`'s result and
    /// the new version when it wrote (versions as [`Table::put`]).
    pub fn update<R>(
        &self,
        pk: &str,
        sk: &str,
        f: impl FnOnce(Option<&mut B>) -> (Update<B>, R),
    ) -> (R, Option<u64>) {
        let mut items = self.lock();
        if let Some((version, item)) = items.get_mut(pk).and_then(|p| p.get_mut(sk)) {
            let (update, r) = f(Some(item));
            return match update {
                Update::Keep => (r, None),
                Update::Changed => {
                    *version += 1;
                    (r, Some(*version))
                }
                Update::Put(b) => {
                    *version += 1;
                    *item = b;
                    (r, Some(*version))
                }
            };
        }
        match f(None) {
            (Update::Put(b), r) => {
                items
                    .entry(pk.to_string())
                    .or_default()
                    .insert(sk.to_string(), (1, b));
                (r, Some(1))
            }
            (Update::Keep | Update::Changed, r) => (r, None),
        }
    }

    /// Delete if the version matches (`Expect::Absent` is rejected: a delete needs a version).
    pub fn delete(&self, pk: &str, sk: &str, expect: Expect) -> Result<(), StoreError> {
        let Expect::Version(v) = expect else {
            return Err(StoreError::Other(format!(
                "delete {pk}/{sk}: a delete needs the version read, not Expect::Absent"
            )));
        };
        let mut items = self.lock();
        let part = items.get_mut(pk);
        match part.as_ref().and_then(|p| p.get(sk)) {
            Some((found, _)) if *found == v => {
                if let Some(p) = part {
                    p.remove(sk);
                }
                Ok(())
            }
            Some((found, _)) => Err(conflict(
                pk,
                sk,
                &format!("expected version {v}, found {found}"),
            )),
            None => Err(conflict(
                pk,
                sk,
                &format!("expected version {v}, item missing"),
            )),
        }
    }

    /// `f` of each (sort key, version, item) of a partition whose sort key starts with
    /// `sk_prefix`, ordered by sort key, read in place: `f` copies only what the caller keeps.
    pub fn query_with<T>(
        &self,
        pk: &str,
        sk_prefix: &str,
        mut f: impl FnMut(&str, u64, &B) -> T,
    ) -> Vec<T> {
        let items = self.lock();
        let Some(part) = items.get(pk) else {
            return Vec::new();
        };
        part.range::<str, _>((
            std::ops::Bound::Included(sk_prefix),
            std::ops::Bound::Unbounded,
        ))
        .take_while(|(s, _)| s.starts_with(sk_prefix))
        .map(|(s, (v, b))| f(s, *v, b))
        .collect()
    }
}

/// A JSON body and its expiry (epoch seconds).
type Body = (String, Option<i64>);

#[derive(Default)]
pub struct MemoryStore {
    table: Table<Body>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

fn record(pk: &str, sk: String, version: u64, (body, expires_at): Body) -> Record {
    Record {
        pk: pk.to_string(),
        sk,
        version,
        body,
        expires_at,
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Record>, StoreError> {
        Ok(self
            .table
            .get(pk, sk)
            .map(|(v, b)| record(pk, sk.to_string(), v, b)))
    }

    async fn put(
        &self,
        pk: &str,
        sk: &str,
        body: &str,
        expect: Expect,
        expires_at: Option<i64>,
    ) -> Result<u64, StoreError> {
        self.table
            .put(pk, sk, (body.to_string(), expires_at), expect)
    }

    async fn delete(&self, pk: &str, sk: &str, expect: Expect) -> Result<(), StoreError> {
        self.table.delete(pk, sk, expect)
    }

    async fn query(&self, pk: &str, sk_prefix: &str) -> Result<Vec<Record>, StoreError> {
        Ok(self.table.query_with(pk, sk_prefix, |s, v, b| {
            record(pk, s.to_string(), v, b.clone())
        }))
    }

    fn describe(&self) -> String {
        "memory".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_writes_in_place_with_the_put_versions_and_leaves_the_item_on_keep() {
        let t: Table<u32> = Table::default();
        // Absent: `f` sees nothing; keeping (or "changing" nothing) writes nothing.
        let (seen, v) = t.update("p", "s", |b| (Update::Keep, b.copied()));
        assert_eq!((seen, v), (None, None));
        let ((), v) = t.update("p", "s", |_| (Update::Changed, ()));
        assert_eq!(v, None);
        assert!(t.get("p", "s").is_none());
        // Created at version 1, as a put with Expect::Absent.
        let ((), v) = t.update("p", "s", |_| (Update::Put(7), ()));
        assert_eq!(v, Some(1));
        assert_eq!(t.get("p", "s"), Some((1, 7)));
        // Each write adds one; `f` sees the current item and may change it in place.
        let (seen, v) = t.update("p", "s", |b| {
            let b = b.expect("the item");
            let seen = *b;
            *b += 1;
            (Update::Changed, Some(seen))
        });
        assert_eq!((seen, v), (Some(7), Some(2)));
        assert_eq!(t.get("p", "s"), Some((2, 8)));
        // Keeping it keeps the version, so a conditional put on the version read still holds.
        let ((), v) = t.update("p", "s", |_| (Update::Keep, ()));
        assert_eq!(v, None);
        assert_eq!(t.put("p", "s", 9, Expect::Version(2)).unwrap(), 3);
        assert!(t.put("p", "s", 1, Expect::Version(2)).is_err());
        // Other sort keys of the partition are untouched.
        t.put("p", "t", 5, Expect::Absent).unwrap();
        t.update("p", "s", |_| (Update::Put(10), ()));
        assert_eq!(t.get("p", "t"), Some((1, 5)));
        assert_eq!(t.get("p", "s"), Some((4, 10)));
    }
}
