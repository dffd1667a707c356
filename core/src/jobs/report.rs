//! What a job returns: its report (typed lines, typed failures, counters), what came of each
//! evaluated candle ([`Outcome`]), each failure ([`JobFailure`]) and the error behind it
//! ([`EngineError`]). Every type here prints (`Display`) the text the jobs have always printed;
//! front ends that need the figures match on the variants instead of parsing that text.

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
    /// The sync's equity point (what reports read) could not be written; the sync itself stands.
    EquityNotRecorded {
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
            | JobFailure::EquityNotRecorded { error, .. }
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
            JobFailure::EquityNotRecorded { account, error } => {
                write!(f, "{account}: equity point not recorded: {error}")
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

/// What came of one evaluated candle of a strategy on a symbol.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Nothing sent: the decision held, or had nothing to act on (the text says which, with the
    /// strategy's conditions when it held).
    Held(String),
    /// Not acted on at this close, because something else comes first (another run's claim, the
    /// sync's reconciliation, a candle the exchange has not served yet, an order too small).
    Skipped(String),
    /// An order refused: by the risk rules, a hand-made position, the symbol's rules, or the
    /// exchange.
    Blocked(String),
    /// An entry filled; `stop_placed` says whether its protective stop is on the exchange.
    Entered {
        side: Side,
        qty: Qty,
        price: Price,
        stop: Option<Price>,
        stop_placed: bool,
        risk_notes: Vec<String>,
    },
    /// An entry filled past its stop level: closed again at market at once.
    EnteredPastStop {
        side: Side,
        qty: Qty,
        price: Price,
        level: Price,
    },
    /// The position closed at market for `reason`.
    Closed { reason: String },
    /// The stop had to move to `level`, which the price had already passed: closed at market.
    StopPassed { level: Price },
    /// Take-profit step `stage` closed `qty` at `price`.
    TookProfit { stage: u8, qty: Qty, price: Price },
    /// Pyramid step `stage` added `qty` at `price`.
    Pyramided { stage: u8, qty: Qty, price: Price },
    /// The stop moved (tightened) to `to`.
    StopMoved { to: Price, reason: String },
    /// A research run's HOLD, which leaves no record and no line.
    Unrecorded,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Held(why) | Outcome::Skipped(why) | Outcome::Blocked(why) => f.write_str(why),
            Outcome::Entered {
                side,
                qty,
                price,
                stop,
                stop_placed,
                risk_notes,
            } => {
                let stop_txt = plan::stop_text(*stop, *stop_placed);
                write!(f, "entered {side} {qty} @ {price} ({stop_txt})")?;
                if !risk_notes.is_empty() {
                    write!(f, " [risk: {}]", risk_notes.join("; "))?;
                }
                Ok(())
            }
            Outcome::EnteredPastStop {
                side,
                qty,
                price,
                level,
            } => write!(
                f,
                "entered {side} {qty} @ {price}, then {}",
                Outcome::StopPassed { level: *level }
            ),
            Outcome::Closed { reason } => write!(f, "closed: {reason}"),
            Outcome::StopPassed { level } => {
                write!(f, "stop level {level} already passed; closed at market")
            }
            Outcome::TookProfit { stage, qty, price } => {
                write!(f, "take-profit step {stage}: closed {qty} @ {price}")
            }
            Outcome::Pyramided { stage, qty, price } => {
                write!(f, "pyramid step {stage}: added {qty} @ {price}")
            }
            Outcome::StopMoved { to, reason } => write!(f, "stop moved to {to} ({reason})"),
            Outcome::Unrecorded => Ok(()),
        }
    }
}

/// One line of a job's report.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// What came of one candle (`candle`: the account, strategy, symbol, timeframe and open time).
    Candle { candle: RunKey, outcome: Outcome },
    /// Anything else the job did or found (a stop re-placed, a position adopted or closed by the
    /// exchange, an account paused), as it reads.
    Note(String),
}

impl Line {
    /// The candle's outcome, when the line is one.
    pub fn outcome(&self) -> Option<&Outcome> {
        match self {
            Line::Candle { outcome, .. } => Some(outcome),
            Line::Note(_) => None,
        }
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Line::Candle { candle: c, outcome } => write!(
                f,
                "{}/{}/{} {} candle {}: {outcome}",
                c.account,
                c.strategy,
                c.symbol,
                c.tf,
                iso(c.open_time)
            ),
            Line::Note(text) => f.write_str(text),
        }
    }
}

/// A line serialises as the text it prints (the jobs' JSON output keeps its shape).
impl serde::Serialize for Line {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl From<String> for Line {
    fn from(text: String) -> Self {
        Line::Note(text)
    }
}

/// What a job did: one line per item, and the failures (the job fails when there are any).
#[derive(Debug, Default, Clone)]
pub struct JobReport {
    pub lines: Vec<Line>,
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

    /// The lines as the job prints them.
    pub fn line_texts(&self) -> Vec<String> {
        self.lines.iter().map(ToString::to_string).collect()
    }

    /// Adds a note line.
    pub(super) fn note(&mut self, text: impl Into<String>) {
        self.lines.push(Line::Note(text.into()));
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
