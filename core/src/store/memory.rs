//! In-memory state store for scratch runs (backtests, replay, walk-forward): the same
//! conditional-write semantics as the durable stores (it passes the same contract suite), kept in
//! a map per partition (sort keys ordered for prefix queries) behind a mutex, gone when the
//! process ends. Lookups borrow the caller's keys: a backtest reads state a few times per candle.

use crate::ports::{Expect, Record, StateStore, StoreError};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

#[derive(Default)]
pub struct MemoryStore {
    /// pk → (sk → record).
    items: Mutex<HashMap<String, BTreeMap<String, Record>>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

fn conflict(pk: &str, sk: &str, detail: &str) -> StoreError {
    StoreError::Conflict {
        pk: pk.to_string(),
        sk: sk.to_string(),
        detail: detail.to_string(),
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Record>, StoreError> {
        let items = self.items.lock().expect("memory store lock");
        Ok(items.get(pk).and_then(|p| p.get(sk)).cloned())
    }

    async fn put(
        &self,
        pk: &str,
        sk: &str,
        body: &str,
        expect: Expect,
        expires_at: Option<i64>,
    ) -> Result<u64, StoreError> {
        let mut items = self.items.lock().expect("memory store lock");
        let part = match items.get_mut(pk) {
            Some(p) => p,
            None => items.entry(pk.to_string()).or_default(),
        };
        let version = match (expect, part.get(sk)) {
            (Expect::Absent, None) => 1,
            (Expect::Absent, Some(_)) => return Err(conflict(pk, sk, "item already exists")),
            (Expect::Version(v), Some(r)) if r.version == v => v + 1,
            (Expect::Version(v), Some(r)) => {
                return Err(conflict(
                    pk,
                    sk,
                    &format!("expected version {v}, found {}", r.version),
                ))
            }
            (Expect::Version(v), None) => {
                return Err(conflict(
                    pk,
                    sk,
                    &format!("expected version {v}, item missing"),
                ))
            }
        };
        part.insert(
            sk.to_string(),
            Record {
                pk: pk.to_string(),
                sk: sk.to_string(),
                version,
                body: body.to_string(),
                expires_at,
            },
        );
        Ok(version)
    }

    async fn delete(&self, pk: &str, sk: &str, expect: Expect) -> Result<(), StoreError> {
        let Expect::Version(v) = expect else {
            return Err(StoreError::Other(format!(
                "delete {pk}/{sk}: a delete needs the version read, not Expect::Absent"
            )));
        };
        let mut items = self.items.lock().expect("memory store lock");
        let part = items.get_mut(pk);
        match part.as_ref().and_then(|p| p.get(sk)) {
            Some(r) if r.version == v => {
                if let Some(p) = part {
                    p.remove(sk);
                }
                Ok(())
            }
            Some(r) => Err(conflict(
                pk,
                sk,
                &format!("expected version {v}, found {}", r.version),
            )),
            None => Err(conflict(
                pk,
                sk,
                &format!("expected version {v}, item missing"),
            )),
        }
    }

    async fn query(&self, pk: &str, sk_prefix: &str) -> Result<Vec<Record>, StoreError> {
        let items = self.items.lock().expect("memory store lock");
        let Some(part) = items.get(pk) else {
            return Ok(Vec::new());
        };
        Ok(part
            .range::<str, _>((
                std::ops::Bound::Included(sk_prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(s, _)| s.starts_with(sk_prefix))
            .map(|(_, r)| r.clone())
            .collect())
    }

    fn describe(&self) -> String {
        "memory".to_string()
    }
}
