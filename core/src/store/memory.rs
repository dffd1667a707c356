//! In-memory state store for scratch runs (backtests, replay, walk-forward): the same
//! conditional-write semantics as the durable stores (it passes the same contract suite), kept in
//! a `BTreeMap` behind a mutex, gone when the process ends.

use crate::ports::{Expect, Record, StateStore, StoreError};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct MemoryStore {
    items: Mutex<BTreeMap<(String, String), Record>>,
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
        Ok(items.get(&(pk.to_string(), sk.to_string())).cloned())
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
        let key = (pk.to_string(), sk.to_string());
        let version = match (expect, items.get(&key)) {
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
        items.insert(
            key,
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
        let key = (pk.to_string(), sk.to_string());
        match items.get(&key) {
            Some(r) if r.version == v => {
                items.remove(&key);
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
        let start = (pk.to_string(), sk_prefix.to_string());
        Ok(items
            .range(start..)
            .take_while(|((p, s), _)| p == pk && s.starts_with(sk_prefix))
            .map(|(_, r)| r.clone())
            .collect())
    }

    fn describe(&self) -> String {
        "memory".to_string()
    }
}
