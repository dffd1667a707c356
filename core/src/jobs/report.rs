//! What a job returns: its report (lines, failures, counters) and why it failed ([`EngineError`]).

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

/// What a job did: one line per item, and the failures (the job fails when there are any).
#[derive(Debug, Default, Clone)]
pub struct JobReport {
    pub lines: Vec<String>,
    pub errors: Vec<String>,
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
