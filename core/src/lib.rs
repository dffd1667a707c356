//! Albra core: everything that decides (strategies, risk, sizing, the jobs written over the port
//! traits), the paper exchange and in-memory state, and the research tools (backtest, walk-forward,
//! replay). It depends on no network, AWS, SQLite or wall-clock crate: what talks to the outside
//! world (Binance REST, the SQLite and DynamoDB stores, env/SSM secrets, Telegram, EMF, app
//! wiring, Lambda glue) is in `albra-adapters`, behind the traits of [`ports`].
//!
//! Dependency direction is one way: `domain` ← `ports` ← decision code (`strategy`, `risk`,
//! `engine`) ← research (`backtest`, `walkforward`, `replay`). Decision code gets `now` and the
//! ports as arguments.

pub mod backtest;
pub mod bot;
pub mod config;
pub mod data;
pub mod domain;
pub mod fastpath;
mod hugepages;
pub mod indicators;
pub mod jobs;
pub mod logging;
pub mod notify;
pub mod orders;
pub mod paper;
pub mod ports;
pub mod progress;
pub mod query;
pub mod replay;
pub mod report;
pub mod risk;
pub mod shares;
pub mod signals;
pub mod state;
pub mod status_report;
pub mod store;
pub mod strategy;
pub mod timerange;
pub mod walkforward;

/// Deterministic pseudo-random numbers for unit tests that sweep many inputs (xorshift64).
#[cfg(test)]
pub(crate) fn test_rng(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}
