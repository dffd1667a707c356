//! Typed state: positions, trades, run markers and account state, in one single-table layout
//! shared by every store:
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
//! | `ACCT#{acct}`  | `EQUITY#{bucket start:013}`                | [`EquityPoint`] (TTL 400 days) |
//!
//! Every write is conditional (create-if-absent or version match), so two jobs never overwrite
//! each other; a conflict surfaces as [`StoreError::Conflict`] and the job stops for that item.
//!
//! [`StateRepo`] is the typed API every job uses; it stores through one port, [`StateBackend`]
//! (`backend.rs`), over type-erased [`Item`]s (`item.rs`). The jobs' backend is [`KvItems`]
//! (`kv.rs`: JSON bodies in a [`StateStore`], with the updates' read-apply-save retry); a backtest
//! builds its repo [`over`](StateRepo::over) the research fast path's
//! [`TypedState`](crate::fastpath::typed_state::TypedState). `StateRepo` never asks which one it
//! has: every method builds keys, wraps or unwraps items and calls the port.

use crate::domain::{
    AccountId, AccountState, Position, PositionKey, StrategyId, Symbol, Timeframe, TradeRecord,
};
use crate::ports::{Expect, StateStore, StoreError};
use crate::risk::StrategyStats;
use crate::shares::ShareBook;
use crate::store::memory::Update;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

mod backend;
mod item;
mod kv;
mod operator;

pub use backend::{AccountFold, Answer, Reply, StateBackend, StatsFold};
pub use item::{Item, Kind, Stored};
pub use kv::KvItems;
pub use operator::{AuditRecord, Deferral, DeferredNotice, PendingConfirm, SeenUpdate};

/// How long run markers are kept (DynamoDB TTL).
pub const RUN_MARKER_TTL_SECS: i64 = 14 * 24 * 3600;

/// How long equity points are kept (DynamoDB TTL): a year of reports and a month to spare.
pub const EQUITY_TTL_SECS: i64 = 400 * 24 * 3600;

/// An account keeps at most one equity point per bucket of this length (ms), the first reading
/// in it: 96 a day, enough for daily returns and a drawdown curve, few enough for a report to
/// read a week of them at once.
pub const EQUITY_BUCKET_MS: i64 = 15 * 60_000;

/// The start (ms) of the [`EQUITY_BUCKET_MS`] bucket holding `at`.
pub fn equity_bucket(at: i64) -> i64 {
    at - at.rem_euclid(EQUITY_BUCKET_MS)
}

/// Expiry (epoch seconds) of a run marker claimed at `now`.
fn marker_expiry(now_ms: i64) -> i64 {
    expiry(now_ms, RUN_MARKER_TTL_SECS)
}

/// Expiry (epoch seconds) `ttl_secs` after `now`. Counted from the later of the job's time and
/// the wall clock: TTL is housekeeping, and a replay or test running on historical time must not
/// write items that a store's expiry sweep deletes at once (for run markers, that would let the
/// same candle be evaluated twice).
fn expiry(now_ms: i64, ttl_secs: i64) -> i64 {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    now_ms.max(wall) / 1000 + ttl_secs
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

/// One reading of an account's equity by a live sync (`EQUITY#{bucket start}`), the history that
/// reports compute returns, Sharpe and drawdown from. Backtests record none.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EquityPoint {
    /// Job time of the reading (ms).
    pub at: i64,
    /// Wallet balance plus unrealised PnL (USDT).
    pub equity: rust_decimal::Decimal,
    /// The exchange's `X-MBX-USED-WEIGHT-1M` after the sync's reads: the weight the IP used in
    /// that minute, this sync's requests included (every job of the host shares it). `None`
    /// where the exchange reports none (the paper exchange) or no answer carried it yet.
    #[serde(default)]
    pub api_weight_1m: Option<u32>,
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
pub(crate) fn expect_version(version: Option<u64>) -> Expect {
    match version {
        None => Expect::Absent,
        Some(v) => Expect::Version(v),
    }
}

/// The typed state every job reads and writes, over any [`StateBackend`].
#[derive(Clone)]
pub struct StateRepo {
    backend: Arc<dyn StateBackend>,
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

/// The sort key of the equity point of the bucket starting at `start` (ms).
fn equity_sk(start: i64) -> String {
    format!("EQUITY#{start:013}")
}

/// The sort key of a strategy's stats item.
pub(crate) fn stats_sk(strategy: &StrategyId) -> String {
    concat(&["STATS#", &strategy.0])
}

/// A backend answered an update with `Ok` without running it (a broken backend).
fn update_not_run() -> UpdateError {
    UpdateError::Store(StoreError::Other(
        "the state backend answered an update without running it".into(),
    ))
}

/// The `T` an item read at `pk`/`sk` holds.
fn take<T: Stored>(pk: &str, sk: &str, item: Item) -> Result<T, StoreError> {
    T::take(item)
        .ok_or_else(|| StoreError::Other(format!("corrupt item {pk}/{sk}: not a {:?}", T::KIND)))
}

impl StateRepo {
    /// The jobs' state: JSON bodies in `store` ([`KvItems`]).
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        Self::over(Arc::new(KvItems::new(store)))
    }

    /// State kept by any backend.
    pub fn over(backend: Arc<dyn StateBackend>) -> Self {
        StateRepo { backend }
    }

    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    async fn get<T: Stored>(&self, pk: &str, sk: &str) -> Result<Option<Versioned<T>>, StoreError> {
        match self.backend.get(T::KIND, pk, sk).await? {
            Some(v) => Ok(Some(Versioned {
                value: take(pk, sk, v.value)?,
                version: v.version,
            })),
            None => Ok(None),
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
        self.backend
            .put(pk, sk, value.clone().wrap(), expect, expires_at)
            .await
    }

    /// Write `value` only where nothing is stored yet: `true` when this call created it, `false`
    /// when it was there already (a rerun, another process, a redelivery): how every record
    /// that must exist once is written.
    async fn create<T: Stored>(
        &self,
        pk: &str,
        sk: &str,
        value: &T,
        expires_at: Option<i64>,
    ) -> Result<bool, StoreError> {
        match self.put(pk, sk, value, Expect::Absent, expires_at).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn delete(&self, pk: &str, sk: &str, expect: Expect) -> Result<(), StoreError> {
        self.backend.delete(pk, sk, expect).await
    }

    async fn query<T: Stored>(
        &self,
        pk: &str,
        prefix: &str,
    ) -> Result<Vec<Versioned<T>>, StoreError> {
        let items = self.backend.query(T::KIND, pk, prefix).await?;
        items
            .into_iter()
            .map(|v| {
                Ok(Versioned {
                    // The port gives no sort key with a versioned item: name the prefix.
                    value: take(pk, &concat(&[prefix, "*"]), v.value)?,
                    version: v.version,
                })
            })
            .collect()
    }

    /// The items under `prefix` with their sort keys.
    async fn query_keyed<T: Stored>(
        &self,
        pk: &str,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let items = self.backend.query_keyed(T::KIND, pk, prefix).await?;
        items
            .into_iter()
            .map(|(sk, item)| {
                let value = take(pk, &sk, item)?;
                Ok((sk, value))
            })
            .collect()
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

    /// Record `point` as the account's equity point of its [`EQUITY_BUCKET_MS`] bucket, unless
    /// the bucket has one (create-if-absent on the bucket's key, so reruns and concurrent syncs
    /// write it once). `Ok(false)`: the bucket already had its point.
    pub async fn record_equity_point(
        &self,
        account: &AccountId,
        point: &EquityPoint,
    ) -> Result<bool, StoreError> {
        let sk = equity_sk(equity_bucket(point.at));
        let expires = Some(expiry(point.at, EQUITY_TTL_SECS));
        self.create(&pk(account), &sk, point, expires).await
    }

    /// The account's equity points taken in `[from, to)` (ms), oldest first. The store is asked
    /// for the keys sharing the two bounds' longest common prefix, not the whole history.
    pub async fn equity_points(
        &self,
        account: &AccountId,
        from: i64,
        to: i64,
    ) -> Result<Vec<EquityPoint>, StoreError> {
        let (a, b) = (equity_sk(from.max(0)), equity_sk(to.max(0)));
        let common = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
        let mut points: Vec<EquityPoint> = self
            .query(&pk(account), &a[..common])
            .await?
            .into_iter()
            .map(|v| v.value)
            .filter(|p: &EquityPoint| p.at >= from && p.at < to)
            .collect();
        points.sort_by_key(|p| p.at);
        Ok(points)
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
        self.backend.positions(account).await
    }

    /// Create (`version = None`) or update (`Some(v)`, must match) a position; returns the new version.
    pub async fn save_position(
        &self,
        pos: &Position,
        version: Option<u64>,
    ) -> Result<u64, StoreError> {
        self.backend
            .save_position(pos, expect_version(version))
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
        self.create(&pk(&t.account), &sk, t, None).await
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
        self.get(&pk(account), &stats_sk(strategy)).await
    }

    pub async fn save_strategy_stats(
        &self,
        account: &AccountId,
        strategy: &StrategyId,
        st: &StrategyStats,
        version: Option<u64>,
    ) -> Result<u64, StoreError> {
        let expect = expect_version(version);
        self.put(&pk(account), &stats_sk(strategy), st, expect, None)
            .await
    }

    /// Let `f` update the strategy's stats item, on any backend: `f` gets the item (`None`
    /// when there is none) and says what to write — [`Update::Keep`] (nothing; it must have left
    /// the item as it was), [`Update::Changed`] (the item as `f` changed it; nothing with no
    /// item) or [`Update::Put`] (this item, replacing or creating it) — and a result.
    ///
    /// A backend in the process (the research fast path's) runs `f` on the item in place under
    /// its lock, without copying the window of recent trades. A key/value store reads the item, runs `f` on the decoded copy
    /// and saves conditionally on the version read (create-if-absent when there was none); when
    /// another writer came in between, it does all of that again on what that writer left, up
    /// to [`UPDATE_ATTEMPTS`] times, then gives [`UpdateError::Contended`]. `f` may therefore
    /// run more than once, each time on a fresh read; the result of the last run is returned.
    pub async fn update_strategy_stats<R: Send>(
        &self,
        account: &AccountId,
        strategy: &StrategyId,
        mut f: impl FnMut(Option<&mut StrategyStats>) -> (Update<StrategyStats>, R) + Send,
    ) -> Result<R, UpdateError> {
        let mut out = None;
        let mut fold = |st: Option<&mut StrategyStats>| {
            let (update, r) = f(st);
            out = Some(r);
            update
        };
        self.backend
            .update_strategy_stats(account, strategy, &mut fold)
            .await?;
        out.ok_or_else(update_not_run)
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

    /// Fold `f` into the account's state, on any backend. `f` gets the state (a default one
    /// and `false` when there is none yet) and returns whether to write it, having left it as it
    /// was if not, and a result.
    ///
    /// A backend in the process (the research fast path's) folds in place under its lock: a read
    /// and a conditional write that nothing can come between, without copying the state. A key/value store reads the state,
    /// runs `f` on the decoded copy and, when `f` says write, saves it conditionally on the
    /// version read (create-if-absent when there was none); when another writer came in
    /// between, it does all of that again on what that writer left, up to [`UPDATE_ATTEMPTS`]
    /// times, then gives [`UpdateError::Contended`]. `f` may therefore run more than once, each
    /// time on a fresh read; the result of the last run is returned.
    pub async fn update_account_state<R: Send>(
        &self,
        account: &AccountId,
        mut f: impl FnMut(&mut AccountState, bool) -> (bool, R) + Send,
    ) -> Result<R, UpdateError> {
        let mut out = None;
        let mut fold = |st: &mut AccountState, existing: bool| {
            let (write, r) = f(st, existing);
            out = Some(r);
            write
        };
        self.backend
            .update_account_state(account, &mut fold)
            .await?;
        out.ok_or_else(update_not_run)
    }

    /// Whether the account is paused (`None`: no state yet): what an evaluation reads of the
    /// account state (a backend in the process reads it in place).
    pub async fn account_paused(&self, account: &AccountId) -> Result<Option<bool>, StoreError> {
        self.backend.account_paused(account).await
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
