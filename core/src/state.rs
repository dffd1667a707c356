//! Typed state on top of the key/value [`StateStore`]: positions, trades, run markers and account
//! state, in one single-table layout shared by every store:
//!
//! | pk             | sk                                         | item                      |
//! |----------------|--------------------------------------------|---------------------------|
//! | `ACCT#{acct}`  | `POS#{strategy}#{symbol}`                  | [`Position`]              |
//! | `ACCT#{acct}`  | `TRADE#{exit_time:013}#{trade id}`         | [`TradeRecord`]           |
//! | `ACCT#{acct}`  | `STATE`                                    | [`AccountState`]          |
//! | `ACCT#{acct}`  | `RUN#{tf}#{strategy}#{symbol}#{open_time}` | run marker (TTL 14 days)  |
//!
//! Every write is conditional (create-if-absent or version match), so two jobs never overwrite
//! each other; a conflict surfaces as [`StoreError::Conflict`] and the job stops for that item.

use crate::domain::{
    AccountId, AccountState, Position, PositionKey, StrategyId, Symbol, Timeframe, TradeRecord,
};
use crate::ports::{Expect, StateStore, StoreError};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::sync::Arc;

/// How long run markers are kept (DynamoDB TTL).
pub const RUN_MARKER_TTL_SECS: i64 = 14 * 24 * 3600;

/// Expiry (epoch seconds) of a run marker claimed at `now`. Counted from the later of the job's
/// time and the wall clock: TTL is housekeeping, and a replay or test running on historical time
/// must not write markers that a store's expiry sweep deletes at once (that would let the same
/// candle be evaluated twice).
fn marker_expiry(now_ms: i64) -> i64 {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    now_ms.max(wall) / 1000 + RUN_MARKER_TTL_SECS
}

/// A value with the version it was read at (for the conditional write that follows).
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: u64,
}

/// What a run marker records: who claimed the candle and what came of it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunMarker {
    pub claimed_at: i64,
    pub outcome: String,
}

/// Identifies one evaluation: (account, strategy, symbol, timeframe, candle open time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunKey {
    pub account: AccountId,
    pub strategy: StrategyId,
    pub symbol: Symbol,
    pub tf: Timeframe,
    pub open_time: i64,
}

impl RunKey {
    fn sk(&self) -> String {
        format!(
            "RUN#{}#{}#{}#{}",
            self.tf, self.strategy.0, self.symbol.0, self.open_time
        )
    }
}

#[derive(Clone)]
pub struct StateRepo {
    store: Arc<dyn StateStore>,
}

fn pk(account: &AccountId) -> String {
    format!("ACCT#{}", account.0)
}

fn pos_sk(strategy: &StrategyId, symbol: &Symbol) -> String {
    format!("POS#{}#{}", strategy.0, symbol.0)
}

/// Decoded values by (type, item) hash, each with the body it was decoded from.
type DecodedCache = std::collections::HashMap<u64, (String, Box<dyn std::any::Any>)>;

thread_local! {
    /// Last decoded value per (type, item), with the body it came from. Jobs that read the same
    /// unchanged item again and again (a backtest reads positions and account state every
    /// candle) reuse it; the body is compared in full, so a hit is exactly what decoding would
    /// give, whatever the store.
    static DECODED: std::cell::RefCell<DecodedCache> =
        std::cell::RefCell::new(DecodedCache::new());
}

fn cache_key<T: 'static>(pk: &str, sk: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (std::any::TypeId::of::<T>(), pk, sk).hash(&mut h);
    h.finish()
}

/// Record `value` as what `body` decodes to (after a write of exactly that body).
fn remember<T: Clone + 'static>(pk: &str, sk: &str, body: String, value: &T) {
    let key = cache_key::<T>(pk, sk);
    DECODED.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= 4096 {
            c.clear();
        }
        c.insert(key, (body, Box::new(value.clone())));
    });
}

fn decode<T: DeserializeOwned + Clone + 'static>(
    pk: &str,
    sk: &str,
    body: &str,
) -> Result<T, StoreError> {
    let key = cache_key::<T>(pk, sk);
    let hit = DECODED.with(|c| {
        c.borrow()
            .get(&key)
            .filter(|(b, _)| b == body)
            .and_then(|(_, v)| v.downcast_ref::<T>().cloned())
    });
    if let Some(v) = hit {
        return Ok(v);
    }
    let v: T = serde_json::from_str(body)
        .map_err(|e| StoreError::Other(format!("corrupt item {pk}/{sk}: {e}")))?;
    remember(pk, sk, body.to_string(), &v);
    Ok(v)
}

fn encode<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("state types serialize")
}

impl StateRepo {
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        StateRepo { store }
    }

    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// Claim the evaluation of one candle for (account, strategy, symbol, timeframe). `Ok(None)` when
    /// somebody already claimed it: the caller must do nothing for that candle.
    pub async fn claim_run(&self, run: &RunKey, now: i64) -> Result<Option<u64>, StoreError> {
        let body = encode(&RunMarker {
            claimed_at: now,
            outcome: "claimed".into(),
        });
        match self
            .store
            .put(
                &pk(&run.account),
                &run.sk(),
                &body,
                Expect::Absent,
                Some(marker_expiry(now)),
            )
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_conflict() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Give a claimed candle back (nothing was sent), so a retry of the job can evaluate it.
    pub async fn release_run(&self, run: &RunKey, version: u64) -> Result<(), StoreError> {
        self.store
            .delete(&pk(&run.account), &run.sk(), Expect::Version(version))
            .await
    }

    /// Record how a claimed candle ended (for audits); keeps the marker.
    pub async fn finish_run(
        &self,
        run: &RunKey,
        version: u64,
        claimed_at: i64,
        outcome: &str,
    ) -> Result<(), StoreError> {
        let body = encode(&RunMarker {
            claimed_at,
            outcome: outcome.to_string(),
        });
        self.store
            .put(
                &pk(&run.account),
                &run.sk(),
                &body,
                Expect::Version(version),
                Some(marker_expiry(claimed_at)),
            )
            .await
            .map(|_| ())
    }

    /// The outcome recorded for a claimed candle, if any.
    pub async fn run_marker(&self, run: &RunKey) -> Result<Option<RunMarker>, StoreError> {
        let (p, s) = (pk(&run.account), run.sk());
        match self.store.get(&p, &s).await? {
            Some(r) => Ok(Some(decode(&p, &s, &r.body)?)),
            None => Ok(None),
        }
    }

    pub async fn position(
        &self,
        key: &PositionKey,
    ) -> Result<Option<Versioned<Position>>, StoreError> {
        let (p, s) = (pk(&key.account), pos_sk(&key.strategy, &key.symbol));
        match self.store.get(&p, &s).await? {
            Some(r) => Ok(Some(Versioned {
                value: decode(&p, &s, &r.body)?,
                version: r.version,
            })),
            None => Ok(None),
        }
    }

    /// All positions of an account (any status), ordered by strategy then symbol.
    pub async fn positions(
        &self,
        account: &AccountId,
    ) -> Result<Vec<Versioned<Position>>, StoreError> {
        let p = pk(account);
        let rows = self.store.query(&p, "POS#").await?;
        rows.into_iter()
            .map(|r| {
                Ok(Versioned {
                    value: decode(&p, &r.sk, &r.body)?,
                    version: r.version,
                })
            })
            .collect()
    }

    /// Create (`version = None`) or update (`Some(v)`, must match) a position; returns the new version.
    pub async fn save_position(
        &self,
        pos: &Position,
        version: Option<u64>,
    ) -> Result<u64, StoreError> {
        let expect = match version {
            None => Expect::Absent,
            Some(v) => Expect::Version(v),
        };
        self.store
            .put(
                &pk(&pos.key.account),
                &pos_sk(&pos.key.strategy, &pos.key.symbol),
                &encode(pos),
                expect,
                None,
            )
            .await
    }

    pub async fn delete_position(&self, key: &PositionKey, version: u64) -> Result<(), StoreError> {
        self.store
            .delete(
                &pk(&key.account),
                &pos_sk(&key.strategy, &key.symbol),
                Expect::Version(version),
            )
            .await
    }

    /// Record a closed trade once: `Ok(false)` when a trade with this id is already recorded.
    pub async fn record_trade(&self, t: &TradeRecord) -> Result<bool, StoreError> {
        let sk = format!("TRADE#{:013}#{}", t.exit_time, t.id);
        match self
            .store
            .put(&pk(&t.account), &sk, &encode(t), Expect::Absent, None)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Closed trades of an account, oldest first.
    pub async fn trades(&self, account: &AccountId) -> Result<Vec<TradeRecord>, StoreError> {
        let p = pk(account);
        self.store
            .query(&p, "TRADE#")
            .await?
            .into_iter()
            .map(|r| decode(&p, &r.sk, &r.body))
            .collect()
    }

    /// When this strategy last opened a position on this account (for signal intervals): one
    /// small item, so no job ever reads the whole trade history for it.
    pub async fn last_entry(
        &self,
        account: &AccountId,
        strategy: &StrategyId,
    ) -> Result<Option<i64>, StoreError> {
        let (p, s) = (pk(account), format!("ENTRY#{}", strategy.0));
        match self.store.get(&p, &s).await? {
            Some(r) => Ok(Some(decode::<i64>(&p, &s, &r.body)?)),
            None => Ok(None),
        }
    }

    /// Record an entry time (only ever moves forward; a concurrent writer with a later time wins).
    pub async fn record_entry(
        &self,
        account: &AccountId,
        strategy: &StrategyId,
        time: i64,
    ) -> Result<(), StoreError> {
        let (p, s) = (pk(account), format!("ENTRY#{}", strategy.0));
        let expect = match self.store.get(&p, &s).await? {
            Some(r) if decode::<i64>(&p, &s, &r.body)? >= time => return Ok(()),
            Some(r) => Expect::Version(r.version),
            None => Expect::Absent,
        };
        match self.store.put(&p, &s, &encode(&time), expect, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn account_state(
        &self,
        account: &AccountId,
    ) -> Result<Option<Versioned<AccountState>>, StoreError> {
        let p = pk(account);
        match self.store.get(&p, "STATE").await? {
            Some(r) => Ok(Some(Versioned {
                value: decode(&p, "STATE", &r.body)?,
                version: r.version,
            })),
            None => Ok(None),
        }
    }

    pub async fn save_account_state(
        &self,
        account: &AccountId,
        st: &AccountState,
        version: Option<u64>,
    ) -> Result<u64, StoreError> {
        let expect = match version {
            None => Expect::Absent,
            Some(v) => Expect::Version(v),
        };
        let (p, body) = (pk(account), encode(st));
        let v = self.store.put(&p, "STATE", &body, expect, None).await?;
        // Written every run: the next read of this body need not decode it again.
        remember(&p, "STATE", body, st);
        Ok(v)
    }
}
