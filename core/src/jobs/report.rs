//! What a job returns: its report (lines, typed failures, counters), each failure
//! ([`JobFailure`]) and the error behind it ([`EngineError`]).

use super::*;

/// Why a job failed.
#[derive(thiserror::Error, Debug)]
pub enum EngineError {
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A configured strategy's parameters do not build it.
    #[error(transparent)]
    Strategy(#[from] strategy::StrategyError),
    /// The exchange gave no usable price to size an order against.
    #[error("no reference price for {0}")]
    NoReferencePrice(Symbol),
    /// A stop that had to move could not be placed at its new level; the old stop stays.
    #[error("{key}: could not place the moved stop at {level} ({detail}); the old stop stays")]
    StopNotMoved {
        key: PositionKey,
        level: Price,
        detail: String,
    },
    /// Other writers kept changing the account state between this job's read and its write.
    #[error("{0}: account state kept changing under concurrent writers")]
    StateContended(AccountId),
    /// Another run holds the candle's claim (still evaluating) until its lease ends.
    #[error("claimed by another run until {} (its lease); a rerun after that takes it over if that run has died", iso(*.until))]
    ClaimedElsewhere { until: i64 },
    /// Another run took this candle over (this run outlived its claim's lease); nothing was sent.
    #[error(
        "another run took this candle over (this run outlived its claim's lease); nothing sent"
    )]
    TakenOver,
}

/// One failure of a job (the job fails, and exits non-zero, when it has any): what went wrong
/// and where. Its text (`Display`) is what the job prints and alarms carry.
#[derive(Debug, Clone)]
pub enum JobFailure {
    /// A step failed for `scope`: an account, a position, or a candle of a strategy on a symbol
    /// (`main/EMA_CROSS/BTCUSDT 1h candle 2025-07-04 12:00 UTC`).
    Step {
        scope: String,
        error: Arc<EngineError>,
    },
    /// A position is left without its protective stop on the exchange; the next sync places it
    /// first.
    Unprotected {
        key: PositionKey,
        stop: Option<Price>,
        why: String,
    },
    /// A follow-up of an entry failed (`what`: its exit orders, the symbol's stops reshaped);
    /// the entry stands.
    AfterEntry {
        key: PositionKey,
        what: String,
        error: Arc<EngineError>,
    },
    /// An account's sync failed.
    SyncFailed {
        account: AccountId,
        error: Arc<EngineError>,
    },
    /// The sync's run record (what job health reads) could not be written; the sync itself stands.
    RunNotRecorded {
        account: AccountId,
        error: Arc<EngineError>,
    },
    /// A job was asked for an account it does not run.
    UnknownAccount(AccountId),
    /// The account's open algo orders could not be listed; the sync looked each stop up instead.
    AlgoOrdersUnreadable {
        account: AccountId,
        error: Arc<EngineError>,
    },
}

impl JobFailure {
    /// A step of `scope` failed with `error`.
    pub fn step(scope: impl std::fmt::Display, error: impl Into<EngineError>) -> Self {
        JobFailure::Step {
            scope: scope.to_string(),
            error: Arc::new(error.into()),
        }
    }

    /// The error behind the failure, if one is.
    pub fn error(&self) -> Option<&EngineError> {
        match self {
            JobFailure::Step { error, .. }
            | JobFailure::AfterEntry { error, .. }
            | JobFailure::SyncFailed { error, .. }
            | JobFailure::RunNotRecorded { error, .. }
            | JobFailure::AlgoOrdersUnreadable { error, .. } => Some(error),
            JobFailure::Unprotected { .. } | JobFailure::UnknownAccount(_) => None,
        }
    }
}

impl std::fmt::Display for JobFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobFailure::Step { scope, error } => write!(f, "{scope}: {error}"),
            JobFailure::Unprotected { key, stop, why } => write!(
                f,
                "{key}: UNPROTECTED: protective stop {} not on the exchange ({why}); the next sync places it first",
                stop.map(|s| s.to_string()).unwrap_or_default()
            ),
            JobFailure::AfterEntry { key, what, error } => write!(f, "{key}: {what}: {error}"),
            JobFailure::SyncFailed { account, error } => {
                write!(f, "{account}: sync failed: {error}")
            }
            JobFailure::RunNotRecorded { account, error } => {
                write!(f, "{account}: sync run not recorded: {error}")
            }
            JobFailure::UnknownAccount(account) => {
                write!(f, "{account}: no such account in this engine")
            }
            JobFailure::AlgoOrdersUnreadable { account, error } => write!(
                f,
                "{account}: open algo orders unreadable ({error}); stops looked up one by one"
            ),
        }
    }
}

/// What a job did: one line per item, and the failures (the job fails when there are any).
#[derive(Debug, Default, Clone)]
pub struct JobReport {
    pub lines: Vec<String>,
    pub errors: Vec<JobFailure>,
    pub orders_placed: u32,
    pub orders_rejected: u32,
    /// Orders handed to the exchange (whatever came of them): a failure before any was sent
    /// gives the candle back for a retry.
    pub orders_attempted: u32,
    /// Symbols whose exchange position differed from the stored state when the sync started
    /// (before it healed anything): the sync-drift metric.
    pub sync_drift: u32,
    /// The candle claim held by the evaluation in progress (none outside one).
    pub claim: Option<HeldClaim>,
    /// The longest `Retry-After` among the failures: a rerun must not come sooner.
    pub retry_after: Option<Duration>,
}

impl JobReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// The failures as the job prints them.
    pub fn error_texts(&self) -> Vec<String> {
        self.errors.iter().map(ToString::to_string).collect()
    }

    /// Adds another part of the same job (one account's) after this one.
    pub(super) fn absorb(&mut self, other: JobReport) {
        self.lines.extend(other.lines);
        self.errors.extend(other.errors);
        self.orders_placed += other.orders_placed;
        self.orders_rejected += other.orders_rejected;
        self.orders_attempted += other.orders_attempted;
        self.sync_drift += other.sync_drift;
        self.retry_after = self.retry_after.max(other.retry_after);
    }
}
