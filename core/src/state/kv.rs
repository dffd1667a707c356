//! [`KvItems`]: the [`StateBackend`] of the jobs, items as JSON bodies in a key/value
//! [`StateStore`] (DynamoDB, SQLite, memory). It owns the JSON codec and the updates' retry:
//! another process may write any item between a read and the save that follows, so an update
//! reads, applies and saves conditionally on the version read, and reads again when it lost.
//!
//! It keeps the last item decoded from (or written as) each body ([`Decoded`]): a job reads the
//! same unchanged items again and again (every evaluation and every sync reads the positions and
//! the account state), and decoding their JSON each time made `albra replay` a fifth slower.

use super::backend::{AccountFold, Answer, Reply, StateBackend, StatsFold};
use super::item::{Item, Kind, Stored};
use super::{expect_version, pk, pos_sk, UpdateError, Versioned, UPDATE_ATTEMPTS};
use crate::domain::{AccountId, AccountState, Position, StrategyId, TradeRecord};
use crate::ports::{Expect, StateStore, StoreError};
use crate::risk::StrategyStats;
use crate::shares::ShareBook;
use crate::state::{
    AuditRecord, DeferredNotice, EquityPoint, JobRun, PendingConfirm, RunMarker, SeenUpdate,
};
use crate::store::memory::Update;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

/// Items as JSON bodies in a key/value store.
pub struct KvItems {
    store: Arc<dyn StateStore>,
    decoded: Decoded,
}

/// How many items [`Decoded`] holds before it starts afresh.
const DECODED_ITEMS: usize = 4096;

/// The last item decoded from or written as each stored item's body, by a hash of (kind, pk,
/// sk). A hit needs the same kind and the whole body equal, and decoding is a function of the
/// two: a hit is exactly what decoding would give, whatever else shares the hash.
#[derive(Default)]
struct Decoded {
    items: Mutex<HashMap<u64, (String, Item)>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Decoded {
    fn key(&self, kind: Kind, pk: &str, sk: &str) -> u64 {
        self.hasher.hash_one((kind, pk, sk))
    }

    fn get(&self, kind: Kind, pk: &str, sk: &str, body: &str) -> Option<Item> {
        let key = self.key(kind, pk, sk);
        let items = self.items.lock().expect("decoded items");
        let (b, item) = items.get(&key)?;
        (b == body && item.kind() == kind).then(|| item.clone())
    }

    fn remember(&self, pk: &str, sk: &str, body: String, item: Item) {
        let key = self.key(item.kind(), pk, sk);
        let mut items = self.items.lock().expect("decoded items");
        if items.len() >= DECODED_ITEMS {
            items.clear();
        }
        items.insert(key, (body, item));
    }
}

fn corrupt(pk: &str, sk: &str, e: serde_json::Error) -> StoreError {
    StoreError::Other(format!("corrupt item {pk}/{sk}: {e}"))
}

fn encode<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("state types serialize")
}

fn encode_item(item: &Item) -> String {
    match item {
        Item::Position(v) => encode(v),
        Item::Trade(v) => encode(v),
        Item::Account(v) => encode(v),
        Item::Run(v) => encode(v),
        Item::Entry(v) => encode(v),
        Item::Stats(v) => encode(v),
        Item::Shares(v) => encode(v),
        Item::Job(v) => encode(v),
        Item::Equity(v) => encode(v),
        Item::Seen(v) => encode(v),
        Item::Confirm(v) => encode(v),
        Item::Audit(v) => encode(v),
        Item::Deferred(v) => encode(v),
    }
}

fn decode_as<T: Stored + DeserializeOwned>(body: &str) -> serde_json::Result<Item> {
    serde_json::from_str::<T>(body).map(Stored::wrap)
}

/// The item of `kind` that `body` holds, decoded.
fn decode_fresh(kind: Kind, pk: &str, sk: &str, body: &str) -> Result<Item, StoreError> {
    match kind {
        Kind::Position => decode_as::<Position>(body),
        Kind::Trade => decode_as::<TradeRecord>(body),
        Kind::Account => decode_as::<AccountState>(body),
        Kind::Run => decode_as::<RunMarker>(body),
        Kind::Entry => decode_as::<i64>(body),
        Kind::Stats => decode_as::<StrategyStats>(body),
        Kind::Shares => decode_as::<ShareBook>(body),
        Kind::Job => decode_as::<JobRun>(body),
        Kind::Equity => decode_as::<EquityPoint>(body),
        Kind::Seen => decode_as::<SeenUpdate>(body),
        Kind::Confirm => decode_as::<PendingConfirm>(body),
        Kind::Audit => decode_as::<AuditRecord>(body),
        Kind::Deferred => decode_as::<DeferredNotice>(body),
    }
    .map_err(|e| corrupt(pk, sk, e))
}

impl KvItems {
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        KvItems {
            store,
            decoded: Decoded::default(),
        }
    }

    /// The item of `kind` that `body` holds: the one decoded last if the body is unchanged.
    fn decode(&self, kind: Kind, pk: &str, sk: &str, body: &str) -> Result<Item, StoreError> {
        if let Some(item) = self.decoded.get(kind, pk, sk, body) {
            return Ok(item);
        }
        let item = decode_fresh(kind, pk, sk, body)?;
        self.decoded
            .remember(pk, sk, body.to_string(), item.clone());
        Ok(item)
    }

    /// Write `body` (the encoding of `item`) if `expect` holds; the next read of it need not
    /// decode it.
    async fn write(
        &self,
        pk: &str,
        sk: &str,
        body: String,
        item: Item,
        expect: Expect,
        expires_at: Option<i64>,
    ) -> Result<u64, StoreError> {
        let v = self.store.put(pk, sk, &body, expect, expires_at).await?;
        self.decoded.remember(pk, sk, body, item);
        Ok(v)
    }

    async fn read(
        &self,
        kind: Kind,
        pk: &str,
        sk: &str,
    ) -> Result<Option<Versioned<Item>>, StoreError> {
        match self.store.get(pk, sk).await? {
            Some(r) => Ok(Some(Versioned {
                value: self.decode(kind, pk, sk, &r.body)?,
                version: r.version,
            })),
            None => Ok(None),
        }
    }

    /// The item at `pk`/`sk` as a `T`.
    async fn read_as<T: Stored>(
        &self,
        pk: &str,
        sk: &str,
    ) -> Result<Option<Versioned<T>>, StoreError> {
        let Some(v) = self.read(T::KIND, pk, sk).await? else {
            return Ok(None);
        };
        let value = T::take(v.value).ok_or_else(|| {
            StoreError::Other(format!("corrupt item {pk}/{sk}: not a {:?}", T::KIND))
        })?;
        Ok(Some(Versioned {
            value,
            version: v.version,
        }))
    }

    async fn scan(
        &self,
        kind: Kind,
        pk: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Versioned<Item>)>, StoreError> {
        self.store
            .query(pk, prefix)
            .await?
            .into_iter()
            .map(|r| {
                let value = self.decode(kind, pk, &r.sk, &r.body)?;
                Ok((
                    r.sk,
                    Versioned {
                        value,
                        version: r.version,
                    },
                ))
            })
            .collect()
    }

    /// Save `value` conditionally on the version `f` was given, after `f` said to. `Ok(false)`:
    /// another writer came in between.
    async fn save_read(
        &self,
        pk: &str,
        sk: &str,
        item: Item,
        version: Option<u64>,
    ) -> Result<bool, StoreError> {
        let body = encode_item(&item);
        match self
            .write(pk, sk, body, item, expect_version(version), None)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One attempt of [`StateBackend::update_account_state`]: `Ok(true)` when done.
    async fn try_account(&self, pk: &str, f: &mut AccountFold<'_>) -> Result<bool, StoreError> {
        let current = self.read_as::<AccountState>(pk, "STATE").await?;
        let (mut st, version) = match current {
            Some(v) => (v.value, Some(v.version)),
            None => (AccountState::default(), None),
        };
        if !f(&mut st, version.is_some()) {
            return Ok(true);
        }
        self.save_read(pk, "STATE", Item::Account(st), version)
            .await
    }

    /// One attempt of [`StateBackend::update_strategy_stats`]: `Ok(true)` when done.
    async fn try_stats(
        &self,
        pk: &str,
        sk: &str,
        f: &mut StatsFold<'_>,
    ) -> Result<bool, StoreError> {
        let current = self.read_as::<StrategyStats>(pk, sk).await?;
        let version = current.as_ref().map(|v| v.version);
        let write = match current {
            Some(v) => {
                let mut st = v.value;
                match f(Some(&mut st)) {
                    Update::Keep => return Ok(true),
                    Update::Changed => st,
                    Update::Put(st) => st,
                }
            }
            None => match f(None) {
                Update::Put(st) => st,
                Update::Keep | Update::Changed => return Ok(true),
            },
        };
        self.save_read(pk, sk, Item::Stats(write), version).await
    }
}

impl StateBackend for KvItems {
    fn describe(&self) -> String {
        self.store.describe()
    }

    fn get<'a>(
        &'a self,
        kind: Kind,
        pk: &'a str,
        sk: &'a str,
    ) -> Reply<'a, Option<Versioned<Item>>> {
        Answer::later(self.read(kind, pk, sk))
    }

    fn put<'a>(
        &'a self,
        pk: &'a str,
        sk: &'a str,
        item: Item,
        expect: Expect,
        expires_at: Option<i64>,
    ) -> Reply<'a, u64> {
        Answer::later(async move {
            let body = encode_item(&item);
            self.write(pk, sk, body, item, expect, expires_at).await
        })
    }

    fn delete<'a>(&'a self, pk: &'a str, sk: &'a str, expect: Expect) -> Reply<'a, ()> {
        Answer::later(self.store.delete(pk, sk, expect))
    }

    fn query<'a>(
        &'a self,
        kind: Kind,
        pk: &'a str,
        prefix: &'a str,
    ) -> Reply<'a, Vec<Versioned<Item>>> {
        Answer::later(async move {
            let items = self.scan(kind, pk, prefix).await?;
            Ok(items.into_iter().map(|(_, v)| v).collect())
        })
    }

    fn query_keyed<'a>(
        &'a self,
        kind: Kind,
        pk: &'a str,
        prefix: &'a str,
    ) -> Reply<'a, Vec<(String, Item)>> {
        Answer::later(async move {
            let items = self.scan(kind, pk, prefix).await?;
            Ok(items.into_iter().map(|(sk, v)| (sk, v.value)).collect())
        })
    }

    fn positions<'a>(&'a self, account: &'a AccountId) -> Reply<'a, Vec<Versioned<Position>>> {
        Answer::later(async move {
            let p = pk(account);
            let items = self.scan(Kind::Position, &p, "POS#").await?;
            items
                .into_iter()
                .map(|(sk, v)| match v.value {
                    Item::Position(value) => Ok(Versioned {
                        value,
                        version: v.version,
                    }),
                    _ => Err(StoreError::Other(format!(
                        "corrupt item {p}/{sk}: not a Position"
                    ))),
                })
                .collect()
        })
    }

    fn save_position<'a>(&'a self, pos: &'a Position, expect: Expect) -> Reply<'a, u64> {
        Answer::later(async move {
            let k = &pos.key;
            let (p, s) = (pk(&k.account), pos_sk(&k.strategy, &k.symbol));
            let item = Item::Position(pos.clone());
            self.write(&p, &s, encode(pos), item, expect, None).await
        })
    }

    /// Reads the state, runs `f` on the decoded copy and, when `f` says write, saves it
    /// conditionally on the version read; when another writer came in between, all of that
    /// again on what that writer left, up to [`UPDATE_ATTEMPTS`] times.
    fn update_account_state<'a>(
        &'a self,
        account: &'a AccountId,
        f: &'a mut AccountFold<'a>,
    ) -> Answer<'a, Result<(), UpdateError>> {
        Answer::later(async move {
            let p = pk(account);
            for _ in 0..UPDATE_ATTEMPTS {
                if self.try_account(&p, f).await? {
                    return Ok(());
                }
            }
            Err(UpdateError::Contended {
                pk: p,
                sk: "STATE".to_string(),
            })
        })
    }

    /// As [`KvItems::update_account_state`], for the stats item.
    fn update_strategy_stats<'a>(
        &'a self,
        account: &'a AccountId,
        strategy: &'a StrategyId,
        f: &'a mut StatsFold<'a>,
    ) -> Answer<'a, Result<(), UpdateError>> {
        Answer::later(async move {
            let (p, s) = (pk(account), super::stats_sk(strategy));
            for _ in 0..UPDATE_ATTEMPTS {
                if self.try_stats(&p, &s, f).await? {
                    return Ok(());
                }
            }
            Err(UpdateError::Contended { pk: p, sk: s })
        })
    }

    fn account_paused<'a>(&'a self, account: &'a AccountId) -> Reply<'a, Option<bool>> {
        Answer::later(async move {
            let st = self.read_as::<AccountState>(&pk(account), "STATE").await?;
            Ok(st.map(|v| v.value.paused))
        })
    }
}
