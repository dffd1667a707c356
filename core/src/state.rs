//! Typed state on top of the key/value [`StateStore`]: positions, trades, run markers and account
//! state, in one single-table layout shared by every store:
//!
//! | pk             | sk                                         | item                      |
//! |----------------|--------------------------------------------|---------------------------|
//! | `ACCT#{acct}`  | `POS#{strategy}#{symbol}`                  | [`Position`]              |
//! | `ACCT#{acct}`  | `TRADE#{exit_time:013}#{trade id}`         | [`TradeRecord`]           |
//! | `ACCT#{acct}`  | `STATE`                                    | [`AccountState`]          |
//! | `ACCT#{acct}`  | `STATS#{strategy}`                         | [`StrategyStats`]         |
//! | `ACCT#{acct}`  | `ENTRY#{strategy}`                         | last entry time (ms)      |
//! | `ACCT#{acct}`  | `RUN#{tf}#{strategy}#{symbol}#{open_time}` | run marker (TTL 14 days)  |
//! | `ACCT#{acct}`  | `SHARES#{symbol}`                          | [`ShareBook`]             |
//! | `ACCT#{acct}`  | `JOB#{job}`                                | [`JobRun`] (last run)     |
//!
//! Every write is conditional (create-if-absent or version match), so two jobs never overwrite
//! each other; a conflict surfaces as [`StoreError::Conflict`] and the job stops for that item.

use crate::domain::{
    AccountId, AccountState, Position, PositionKey, StrategyId, Symbol, Timeframe, TradeRecord,
};
use crate::fastpath::typed_state::{TypedItem, TypedState};
use crate::ports::{Expect, StateStore, StoreError};
use crate::risk::StrategyStats;
use crate::shares::ShareBook;
use crate::store::memory::Update;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::sync::Arc;

pub use crate::fastpath::typed_state::WriteMarks;

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

/// How far the evaluation of a claimed candle got: the claim is an idempotency record that is
/// in progress with an expiry (its lease), then completed.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunStage {
    /// Claimed; no order sent. A run that died here is taken over once the lease has passed:
    /// anything it wrote (a PENDING record) was written before any order.
    Evaluating,
    /// Orders are being sent (the marker moves here, fenced by its version, before the first
    /// one) until `lease_until`; the run sends nothing after it. A rerun after the lease may take
    /// it back only when the candle's entry order is not on the exchange (looked up, never
    /// assumed); anything else is resolved by the sync.
    Acting,
    /// Finished; `outcome` says how. Markers written before stages existed read as done.
    #[default]
    Done,
}

/// What a run marker records: who claimed the candle, how far it got and what came of it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunMarker {
    pub claimed_at: i64,
    pub outcome: String,
    #[serde(default)]
    pub stage: RunStage,
    /// While `Evaluating` or `Acting`: the job time (ms) after which another run may take the
    /// claim over (0 on markers written before leases: never).
    #[serde(default)]
    pub lease_until: i64,
}

/// The last run of a job for an account (`position-sync`): when it ran and how it ended, so job
/// health can be answered from the store (evaluations leave their run markers instead).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JobRun {
    /// Job time of the run (ms).
    pub at: i64,
    pub ok: bool,
    /// The first error, or a short summary of a run without errors.
    pub outcome: String,
}

/// The answer to [`StateRepo::claim_run`].
#[derive(Clone, Debug, PartialEq)]
pub enum Claim {
    /// This run holds the candle; `version` fences its next write of the marker.
    /// `took_over` is the claim of an earlier run whose lease had passed before it sent anything.
    Held {
        version: u64,
        took_over: Option<RunMarker>,
    },
    /// Another run holds the candle or has finished it: do nothing for it.
    Taken(RunMarker),
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

    /// The key of a run marker's sort key (`None` for one that is not a run marker).
    fn parse(account: &AccountId, sk: &str) -> Option<RunKey> {
        let mut parts = sk.strip_prefix("RUN#")?.split('#');
        let (tf, strategy, symbol, open) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        Some(RunKey {
            account: account.clone(),
            strategy: StrategyId::new(strategy),
            symbol: Symbol::new(symbol),
            tf: tf.parse().ok()?,
            open_time: open.parse().ok()?,
        })
    }
}

/// Where a [`StateRepo`] keeps its items.
#[derive(Clone)]
enum Backend {
    /// JSON bodies in a key/value store (DynamoDB, SQLite, memory): what the jobs use.
    Kv(Arc<dyn StateStore>),
    /// Decoded items in process, under the same conditional-write rules: a backtest's state,
    /// which lives and dies with the run and is read and written every candle. All of its logic
    /// is in the research fast path ([`crate::fastpath::typed_state`]); the arms here only call it.
    Typed(Arc<TypedState>),
}

/// A state type the repo stores: JSON for the key/value stores, an item of the typed one.
pub(crate) trait Stored: Serialize + DeserializeOwned + TypedItem {}
impl<T: Serialize + DeserializeOwned + TypedItem> Stored for T {}

/// Why [`StateRepo::update_account_state`] or [`StateRepo::update_strategy_stats`] failed.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Every attempt's conditional write lost to another writer ([`UPDATE_ATTEMPTS`] in a row).
    #[error("state item {pk}/{sk} contended: {UPDATE_ATTEMPTS} conditional writes in a row lost to other writers")]
    Contended { pk: String, sk: String },
}

/// How many times an update of a key/value store reads, applies and saves before giving up.
pub const UPDATE_ATTEMPTS: usize = 3;

/// The condition of a write: create when nothing was read, else the version read.
fn expect_version(version: Option<u64>) -> Expect {
    match version {
        None => Expect::Absent,
        Some(v) => Expect::Version(v),
    }
}

#[derive(Clone)]
pub struct StateRepo {
    backend: Backend,
}

/// Keys are built on every read: plain concatenation, not the formatting machinery.
fn concat(parts: &[&str]) -> String {
    let mut s = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        s.push_str(p);
    }
    s
}

/// The parts of an account's partition key.
pub(crate) fn pk_parts(account: &AccountId) -> [&str; 2] {
    ["ACCT#", &account.0]
}

pub(crate) fn pk(account: &AccountId) -> String {
    concat(&pk_parts(account))
}

/// The parts of a position's sort key.
pub(crate) fn pos_sk_parts<'a>(strategy: &'a StrategyId, symbol: &'a Symbol) -> [&'a str; 4] {
    ["POS#", &strategy.0, "#", &symbol.0]
}

pub(crate) fn pos_sk(strategy: &StrategyId, symbol: &Symbol) -> String {
    concat(&pos_sk_parts(strategy, symbol))
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
        StateRepo {
            backend: Backend::Kv(store),
        }
    }

    /// State kept decoded in this process (backtests): nothing is serialised, and every write is
    /// conditional exactly as in the stores ([`Table`]).
    pub fn typed() -> Self {
        StateRepo {
            backend: Backend::Typed(Arc::new(TypedState::default())),
        }
    }

    /// The write marks of the typed backend; `None` for a key/value store, which other processes
    /// may write at any time.
    pub fn write_marks(&self) -> Option<WriteMarks> {
        match &self.backend {
            Backend::Kv(_) => None,
            Backend::Typed(t) => Some(t.marks()),
        }
    }

    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Kv(s) => s.describe(),
            Backend::Typed(_) => "memory (typed)".to_string(),
        }
    }

    async fn get<T: Stored>(&self, pk: &str, sk: &str) -> Result<Option<Versioned<T>>, StoreError> {
        match &self.backend {
            Backend::Kv(store) => match store.get(pk, sk).await? {
                Some(r) => Ok(Some(Versioned {
                    value: decode(pk, sk, &r.body)?,
                    version: r.version,
                })),
                None => Ok(None),
            },
            Backend::Typed(t) => t.get(pk, sk),
        }
    }

    async fn put<T: Stored>(
        &self,
        pk: &str,
        sk: &str,
        value: &T,
        expect: Expect,
        expires_at: Option<i64>,
    ) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Kv(store) => {
                let body = encode(value);
                let v = store.put(pk, sk, &body, expect, expires_at).await?;
                // The next read of this body need not decode it again.
                remember(pk, sk, body, value);
                Ok(v)
            }
            Backend::Typed(t) => t.put(pk, sk, value, expect),
        }
    }

    async fn delete(&self, pk: &str, sk: &str, expect: Expect) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Kv(store) => store.delete(pk, sk, expect).await,
            Backend::Typed(t) => t.delete(pk, sk, expect),
        }
    }

    async fn query<T: Stored>(
        &self,
        pk: &str,
        prefix: &str,
    ) -> Result<Vec<Versioned<T>>, StoreError> {
        match &self.backend {
            Backend::Kv(store) => store
                .query(pk, prefix)
                .await?
                .into_iter()
                .map(|r| {
                    Ok(Versioned {
                        value: decode(pk, &r.sk, &r.body)?,
                        version: r.version,
                    })
                })
                .collect(),
            Backend::Typed(t) => t.query(pk, prefix),
        }
    }

    /// The items under `prefix` with their sort keys.
    async fn query_keyed<T: Stored>(
        &self,
        pk: &str,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, StoreError> {
        match &self.backend {
            Backend::Kv(store) => store
                .query(pk, prefix)
                .await?
                .into_iter()
                .map(|r| Ok((r.sk.clone(), decode(pk, &r.sk, &r.body)?)))
                .collect(),
            Backend::Typed(t) => t.query_keyed(pk, prefix),
        }
    }

    /// Every run marker of an account (the evaluator's audit trail, kept 14 days), by sort key.
    pub async fn run_markers(
        &self,
        account: &AccountId,
    ) -> Result<Vec<(RunKey, RunMarker)>, StoreError> {
        Ok(self
            .query_keyed::<RunMarker>(&pk(account), "RUN#")
            .await?
            .into_iter()
            .filter_map(|(sk, m)| Some((RunKey::parse(account, &sk)?, m)))
            .collect())
    }

    /// The last recorded run of `job` for the account.
    pub async fn job_run(
        &self,
        account: &AccountId,
        job: &str,
    ) -> Result<Option<JobRun>, StoreError> {
        Ok(self
            .get::<JobRun>(&pk(account), &concat(&["JOB#", job]))
            .await?
            .map(|v| v.value))
    }

    /// Record a run of `job` unless a later one is recorded already (conditional on the version
    /// read; a concurrent writer wins). A run without errors after a recorded run without errors
    /// less than `refresh_ms` before it is not written: the record is a heartbeat with that
    /// granularity, which spares the minute-by-minute sync (and a replay's every simulated
    /// minute) a write per run. Failures, and the first success after one, are always written.
    pub async fn record_job_run(
        &self,
        account: &AccountId,
        job: &str,
        run: &JobRun,
        refresh_ms: i64,
    ) -> Result<(), StoreError> {
        let (p, s) = (pk(account), concat(&["JOB#", job]));
        let expect = match self.get::<JobRun>(&p, &s).await? {
            Some(v) if v.value.at > run.at => return Ok(()),
            Some(v) if v.value.ok && run.ok && run.at - v.value.at < refresh_ms => return Ok(()),
            Some(v) => Expect::Version(v.version),
            None => Expect::Absent,
        };
        match self.put(&p, &s, run, expect, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Claim the evaluation of one candle for (account, strategy, symbol, timeframe) until
    /// `now + lease_ms` (job time). A claim still `Evaluating` whose lease has passed is taken
    /// over (the run that held it died before sending anything); any other existing claim is
    /// [`Claim::Taken`] and the caller must do nothing for that candle.
    pub async fn claim_run(
        &self,
        run: &RunKey,
        now: i64,
        lease_ms: i64,
    ) -> Result<Claim, StoreError> {
        let marker = RunMarker {
            claimed_at: now,
            outcome: "claimed".into(),
            stage: RunStage::Evaluating,
            lease_until: now.saturating_add(lease_ms),
        };
        let (p, s) = (pk(&run.account), run.sk());
        let expiry = Some(marker_expiry(now));
        // Twice at most: a claim released between the first put and the read is claimed afresh.
        let mut held = None;
        for _ in 0..2 {
            match self.put(&p, &s, &marker, Expect::Absent, expiry).await {
                Ok(version) => {
                    return Ok(Claim::Held {
                        version,
                        took_over: None,
                    })
                }
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e),
            }
            held = self.get::<RunMarker>(&p, &s).await?;
            if held.is_some() {
                break;
            }
        }
        let Some(held) = held else {
            return Ok(Claim::Taken(RunMarker {
                outcome: "claimed and released by other runs while this one tried".into(),
                ..marker
            }));
        };
        if held.value.stage != RunStage::Evaluating || held.value.lease_until > now {
            return Ok(Claim::Taken(held.value));
        }
        match self
            .put(&p, &s, &marker, Expect::Version(held.version), expiry)
            .await
        {
            Ok(version) => Ok(Claim::Held {
                version,
                took_over: Some(held.value),
            }),
            // Another rerun took it over first.
            Err(e) if e.is_conflict() => Ok(Claim::Taken(held.value)),
            Err(e) => Err(e),
        }
    }

    /// Move a held claim to [`RunStage::Acting`] before its first order. Fails with a conflict
    /// when another run took the claim over (this one outlived its lease): then nothing may be
    /// sent. Returns the marker's new version.
    pub async fn mark_acting(
        &self,
        run: &RunKey,
        version: u64,
        claimed_at: i64,
        lease_until: i64,
    ) -> Result<u64, StoreError> {
        let marker = RunMarker {
            claimed_at,
            outcome: "acting".into(),
            stage: RunStage::Acting,
            lease_until,
        };
        self.write_marker(run, version, &marker).await
    }

    /// Take back an `Acting` claim whose lease has passed, as a fresh `Evaluating` claim until
    /// `now + lease_ms`. The caller must first have found that the run's order never reached the
    /// exchange. `None` when the claim is not (or no longer) such a claim.
    pub async fn take_over_acting(
        &self,
        run: &RunKey,
        now: i64,
        lease_ms: i64,
    ) -> Result<Option<(u64, RunMarker)>, StoreError> {
        let Some(held) = self.get::<RunMarker>(&pk(&run.account), &run.sk()).await? else {
            return Ok(None);
        };
        let m = &held.value;
        if m.stage != RunStage::Acting || m.lease_until == 0 || m.lease_until >= now {
            return Ok(None);
        }
        let marker = RunMarker {
            claimed_at: now,
            outcome: "claimed".into(),
            stage: RunStage::Evaluating,
            lease_until: now.saturating_add(lease_ms),
        };
        match self.write_marker(run, held.version, &marker).await {
            Ok(version) => Ok(Some((version, held.value))),
            Err(e) if e.is_conflict() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Give a claimed candle back (nothing was sent), so a retry of the job can evaluate it.
    pub async fn release_run(&self, run: &RunKey, version: u64) -> Result<(), StoreError> {
        self.delete(&pk(&run.account), &run.sk(), Expect::Version(version))
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
        let marker = RunMarker {
            claimed_at,
            outcome: outcome.to_string(),
            stage: RunStage::Done,
            lease_until: 0,
        };
        self.write_marker(run, version, &marker).await.map(|_| ())
    }

    /// Write a held claim's marker (conditional on `version`).
    async fn write_marker(
        &self,
        run: &RunKey,
        version: u64,
        marker: &RunMarker,
    ) -> Result<u64, StoreError> {
        self.put(
            &pk(&run.account),
            &run.sk(),
            marker,
            Expect::Version(version),
            Some(marker_expiry(marker.claimed_at)),
        )
        .await
    }

    /// The outcome recorded for a claimed candle, if any.
    pub async fn run_marker(&self, run: &RunKey) -> Result<Option<RunMarker>, StoreError> {
        Ok(self
            .get(&pk(&run.account), &run.sk())
            .await?
            .map(|v| v.value))
    }

    pub async fn position(
        &self,
        key: &PositionKey,
    ) -> Result<Option<Versioned<Position>>, StoreError> {
        self.get(&pk(&key.account), &pos_sk(&key.strategy, &key.symbol))
            .await
    }

    /// All positions of an account (any status), ordered by strategy then symbol.
    pub async fn positions(
        &self,
        account: &AccountId,
    ) -> Result<Vec<Versioned<Position>>, StoreError> {
        match &self.backend {
            Backend::Kv(_) => self.query(&pk(account), "POS#").await,
            Backend::Typed(t) => t.positions(account),
        }
    }

    /// Create (`version = None`) or update (`Some(v)`, must match) a position; returns the new version.
    pub async fn save_position(
        &self,
        pos: &Position,
        version: Option<u64>,
    ) -> Result<u64, StoreError> {
        let expect = expect_version(version);
        let k = &pos.key;
        if let Backend::Typed(t) = &self.backend {
            return t.save_position(pos, expect);
        }
        self.put(
            &pk(&k.account),
            &pos_sk(&k.strategy, &k.symbol),
            pos,
            expect,
            None,
        )
        .await
    }

    pub async fn delete_position(&self, key: &PositionKey, version: u64) -> Result<(), StoreError> {
        self.delete(
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
            .put(&pk(&t.account), &sk, t, Expect::Absent, None)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Closed trades of an account, oldest first.
    pub async fn trades(&self, account: &AccountId) -> Result<Vec<TradeRecord>, StoreError> {
        Ok(self
            .query(&pk(account), "TRADE#")
            .await?
            .into_iter()
            .map(|v| v.value)
            .collect())
    }

    /// When this strategy last opened a position on this account (for signal intervals): one
    /// small item, so no job ever reads the whole trade history for it.
    pub async fn last_entry(
        &self,
        account: &AccountId,
        strategy: &StrategyId,
    ) -> Result<Option<i64>, StoreError> {
        let s = concat(&["ENTRY#", &strategy.0]);
        Ok(self.get::<i64>(&pk(account), &s).await?.map(|v| v.value))
    }

    /// Record an entry time (only ever moves forward; a concurrent writer with a later time wins).
    pub async fn record_entry(
        &self,
        account: &AccountId,
        strategy: &StrategyId,
        time: i64,
    ) -> Result<(), StoreError> {
        let (p, s) = (pk(account), format!("ENTRY#{}", strategy.0));
        let expect = match self.get::<i64>(&p, &s).await? {
            Some(v) if v.value >= time => return Ok(()),
            Some(v) => Expect::Version(v.version),
            None => Expect::Absent,
        };
        match self.put(&p, &s, &time, expect, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The newest closed trades of a strategy on an account (sizing reads this, not the trades).
    pub async fn strategy_stats(
        &self,
        account: &AccountId,
        strategy: &StrategyId,
    ) -> Result<Option<Versioned<StrategyStats>>, StoreError> {
        self.get(&pk(account), &format!("STATS#{}", strategy.0))
            .await
    }

    pub async fn save_strategy_stats(
        &self,
        account: &AccountId,
        strategy: &StrategyId,
        st: &StrategyStats,
        version: Option<u64>,
    ) -> Result<u64, StoreError> {
        let expect = expect_version(version);
        self.put(
            &pk(account),
            &format!("STATS#{}", strategy.0),
            st,
            expect,
            None,
        )
        .await
    }

    /// Let `f` update the strategy's stats item, on either backend: `f` gets the item (`None`
    /// when there is none) and says what to write — [`Update::Keep`] (nothing; it must have left
    /// the item as it was), [`Update::Changed`] (the item as `f` changed it; nothing with no
    /// item) or [`Update::Put`] (this item, replacing or creating it) — and a result.
    ///
    /// The typed backend runs `f` on the item in place under its lock, without copying the
    /// window of recent trades. A key/value store reads the item, runs `f` on the decoded copy
    /// and saves conditionally on the version read (create-if-absent when there was none); when
    /// another writer came in between, it does all of that again on what that writer left, up
    /// to [`UPDATE_ATTEMPTS`] times, then gives [`UpdateError::Contended`]. `f` may therefore
    /// run more than once, each time on a fresh read; the result of the last run is returned.
    pub async fn update_strategy_stats<R>(
        &self,
        account: &AccountId,
        strategy: &StrategyId,
        mut f: impl FnMut(Option<&mut StrategyStats>) -> (Update<StrategyStats>, R),
    ) -> Result<R, UpdateError> {
        if let Backend::Typed(t) = &self.backend {
            return Ok(t.update_strategy_stats(account, strategy, f)?);
        }
        let (p, s) = (pk(account), concat(&["STATS#", &strategy.0]));
        for _ in 0..UPDATE_ATTEMPTS {
            let current = self.get::<StrategyStats>(&p, &s).await?;
            let version = current.as_ref().map(|v| v.version);
            let (write, r) = match current {
                Some(v) => {
                    let mut st = v.value;
                    match f(Some(&mut st)) {
                        (Update::Keep, r) => return Ok(r),
                        (Update::Changed, r) => (st, r),
                        (Update::Put(st), r) => (st, r),
                    }
                }
                None => match f(None) {
                    (Update::Put(st), r) => (st, r),
                    (Update::Keep | Update::Changed, r) => return Ok(r),
                },
            };
            match self
                .put(&p, &s, &write, expect_version(version), None)
                .await
            {
                Ok(_) => return Ok(r),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(UpdateError::Contended { pk: p, sk: s })
    }

    /// Let `f` update the strategy's stats item in place, for the typed backend (`None`: a
    /// key/value store). `f` returns whether it changed the item and a result; `Some(Ok(None))`
    /// when there is no item.
    // To be removed once the engine calls update_*: use `update_strategy_stats`.
    #[doc(hidden)]
    pub fn fold_strategy_stats<R>(
        &self,
        account: &AccountId,
        strategy: &StrategyId,
        f: impl FnOnce(&mut StrategyStats) -> (bool, R),
    ) -> Option<Result<Option<R>, StoreError>> {
        let Backend::Typed(t) = &self.backend else {
            return None;
        };
        Some(t.update_strategy_stats(account, strategy, |st| match st {
            None => (Update::Keep, None),
            Some(st) => match f(st) {
                (true, r) => (Update::Changed, Some(r)),
                (false, r) => (Update::Keep, Some(r)),
            },
        }))
    }

    /// Who held which share of `symbol` when the last sync found the shares adding up to the net.
    pub async fn share_book(
        &self,
        account: &AccountId,
        symbol: &Symbol,
    ) -> Result<Option<Versioned<ShareBook>>, StoreError> {
        self.get(&pk(account), &format!("SHARES#{}", symbol.0))
            .await
    }

    pub async fn save_share_book(
        &self,
        account: &AccountId,
        symbol: &Symbol,
        book: &ShareBook,
        version: Option<u64>,
    ) -> Result<u64, StoreError> {
        let expect = expect_version(version);
        self.put(
            &pk(account),
            &format!("SHARES#{}", symbol.0),
            book,
            expect,
            None,
        )
        .await
    }

    pub async fn account_state(
        &self,
        account: &AccountId,
    ) -> Result<Option<Versioned<AccountState>>, StoreError> {
        self.get(&pk(account), "STATE").await
    }

    /// Fold `f` into the account's state, on either backend. `f` gets the state (a default one
    /// and `false` when there is none yet) and returns whether to write it, having left it as it
    /// was if not, and a result.
    ///
    /// The typed backend folds in place under its lock: a read and a conditional write that
    /// nothing can come between, without copying the state. A key/value store reads the state,
    /// runs `f` on the decoded copy and, when `f` says write, saves it conditionally on the
    /// version read (create-if-absent when there was none); when another writer came in
    /// between, it does all of that again on what that writer left, up to [`UPDATE_ATTEMPTS`]
    /// times, then gives [`UpdateError::Contended`]. `f` may therefore run more than once, each
    /// time on a fresh read; the result of the last run is returned.
    pub async fn update_account_state<R>(
        &self,
        account: &AccountId,
        mut f: impl FnMut(&mut AccountState, bool) -> (bool, R),
    ) -> Result<R, UpdateError> {
        if let Backend::Typed(t) = &self.backend {
            return Ok(t.update_account_state(account, f)?);
        }
        let p = pk(account);
        for _ in 0..UPDATE_ATTEMPTS {
            let current = self.get::<AccountState>(&p, "STATE").await?;
            let (mut st, version) = match current {
                Some(v) => (v.value, Some(v.version)),
                None => (AccountState::default(), None),
            };
            let (write, r) = f(&mut st, version.is_some());
            if !write {
                return Ok(r);
            }
            match self
                .put(&p, "STATE", &st, expect_version(version), None)
                .await
            {
                Ok(_) => return Ok(r),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(UpdateError::Contended {
            pk: p,
            sk: "STATE".to_string(),
        })
    }

    /// Fold `f` into the account's state in place, for the typed backend (`None`: a key/value
    /// store, where the caller reads and saves conditionally instead).
    // To be removed once the engine calls update_*: use `update_account_state`.
    #[doc(hidden)]
    pub fn fold_account_state<R>(
        &self,
        account: &AccountId,
        f: impl FnOnce(&mut AccountState, bool) -> (bool, R),
    ) -> Option<Result<R, StoreError>> {
        let Backend::Typed(t) = &self.backend else {
            return None;
        };
        Some(t.update_account_state(account, f))
    }

    /// Whether the account is paused (`None`: no state yet): what an evaluation reads of the
    /// account state, read in place by the typed backend.
    pub async fn account_paused(&self, account: &AccountId) -> Result<Option<bool>, StoreError> {
        match &self.backend {
            Backend::Typed(t) => t.account_paused(account),
            Backend::Kv(_) => Ok(self.account_state(account).await?.map(|v| v.value.paused)),
        }
    }

    pub async fn save_account_state(
        &self,
        account: &AccountId,
        st: &AccountState,
        version: Option<u64>,
    ) -> Result<u64, StoreError> {
        let expect = expect_version(version);
        self.put(&pk(account), "STATE", st, expect, None).await
    }
}
