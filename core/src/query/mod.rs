//! The query/command layer every front end shares (the CLI today; Telegram and a dashboard
//! next): it owns what the operator can ask and what the operator can order, computed over the
//! ports only (the [`StateRepo`](crate::state::StateRepo), the [`Exchange`](crate::ports::Exchange)
//! of each account, the engine's jobs) with `now` passed in.
//!
//! - [`queries`]: typed, serialisable answers — status, balance, positions, performance,
//!   risk check and job health. A front end lays them out; it computes no business figure.
//! - [`history`]: closed trades under a filter (and as CSV), equity curves per account and
//!   combined, and the marks of a symbol's candle chart.
//! - [`commands`]: pause, resume, emergency stop, switch strategy and sync. Each is gathered
//!   (a [`commands::Snapshot`] of state and exchange), planned by a pure function (the plan is
//!   the dry run: what would be cancelled, closed or written) and applied through the ports
//!   with the jobs' safety rules (deterministic client ids, exactly-once submission,
//!   conditional writes).

pub mod commands;
pub mod history;
pub mod queries;

use crate::ports::{ExchangeError, StoreError};

/// Why a query or command could not be answered or carried out.
#[derive(thiserror::Error, Debug)]
pub enum QueryError {
    /// The account is not in the configuration; `known` lists those that are.
    #[error("no account `{account}` in config (accounts: {known})")]
    UnknownAccount { account: String, known: String },
    /// The strategy is not registered or not configured; `known` lists what is.
    #[error("unknown strategy `{name}` ({known})")]
    UnknownStrategy { name: String, known: String },
    /// The command's plan refuses to go ahead; the text says why and what would unblock it.
    #[error("refused: {0}")]
    Refused(String),
    /// The configuration text cannot take the change (unparseable, no such account entry, or
    /// invalid once changed).
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
}

/// The accounts of `cfg`, or the one named: an unknown name is an error listing the known ones.
pub(crate) fn select_accounts<'a>(
    cfg: &'a crate::config::Config,
    account: Option<&str>,
) -> Result<Vec<&'a crate::config::AccountConfig>, QueryError> {
    match account {
        None => Ok(cfg.accounts.iter().collect()),
        Some(a) => match cfg.accounts.iter().find(|x| x.id.0 == a) {
            Some(x) => Ok(vec![x]),
            None => Err(QueryError::UnknownAccount {
                account: a.to_string(),
                known: cfg
                    .accounts
                    .iter()
                    .map(|a| a.id.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        },
    }
}

#[cfg(test)]
mod tests;
